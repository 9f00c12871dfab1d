#!/usr/bin/env bash
# Usage: scripts/demo.sh [--np N] [--runs-dir DIR]     (called by `make demo`)
#
# The main job on the embedded synthetic default. Today: the runtime smoke
# training on N ranks (default 2), ending with a throughput line; the data
# stages and CheXNet join it as they land.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
NP=2
RUNS_DIR=$ROOT/runs
while [ $# -gt 0 ]; do
  case "$1" in
    --np) NP=$2; shift 2 ;;
    --runs-dir) RUNS_DIR=$2; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$NP" =~ ^[1-9][0-9]*$ ]] || { echo "demo.sh: --np must be a positive integer, got '$NP'" >&2; exit 2; }
[ -x "$VENV/bin/horovodrun" ] || { echo "demo.sh: $VENV/bin/horovodrun missing: run 'make setup' first" >&2; exit 2; }
cd "$ROOT"
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}

t0=$SECONDS
echo "== demo: runtime smoke training on $NP rank(s) =="
"$VENV/bin/horovodrun" -np "$NP" "$VENV/bin/python" -m smoke.train --runs-dir "$RUNS_DIR" --epochs 3
echo "== demo finished in $((SECONDS - t0)) s =="
