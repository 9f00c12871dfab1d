#!/usr/bin/env bash
# Usage: scripts/gpu_check.sh [--gpus N] [--out DIR] [--steps K]   (make gpu-check)
# The GPU acceptance check of scripts/gpu_check.py, with the project's venv.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
[ -x "$VENV/bin/python" ] || { echo "gpu_check.sh: error: $VENV/bin/python not found: run TF_EXTRA=and-cuda HOROVOD_GPU_OPERATIONS=NCCL make setup first" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
exec "$VENV/bin/python" scripts/gpu_check.py "$@"
