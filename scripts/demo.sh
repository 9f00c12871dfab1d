#!/usr/bin/env bash
# Usage: scripts/demo.sh [--np N] [--runs-dir DIR] [--data DIR]     (called by `make demo`)
#
# The main job on the embedded synthetic default: the ChestX-ray14 stages
# (synthetic download -> extract -> TFRecords) and training on N ranks
# (default 2) with a throughput line. Re-running skips finished stages.
# Today the trainer is the runtime smoke CNN; CheXNet replaces it when it lands.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
NP=2
RUNS_DIR=$ROOT/runs
DATA=$ROOT/data
while [ $# -gt 0 ]; do
  case "$1" in
    --np) NP=$2; shift 2 ;;
    --runs-dir) RUNS_DIR=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$NP" =~ ^[1-9][0-9]*$ ]] || { echo "demo.sh: --np must be a positive integer, got '$NP'" >&2; exit 2; }
[ -x "$VENV/bin/horovodrun" ] || { echo "demo.sh: $VENV/bin/horovodrun missing: run 'make setup' first" >&2; exit 2; }
cd "$ROOT"
export PYTHON=$VENV/bin/python
# horovodrun imports TensorFlow itself; its C++ start-up lines are noise here.
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}

t0=$SECONDS
echo "== demo 1/4: synthetic ChestX-ray14 (2000 images, 256x256) in $DATA/chestxray14 =="
./download_dataset.sh --out "$DATA" --synthetic 2000 --image-size 256
echo "== demo 2/4: extract =="
./extract_images.sh --out "$DATA"
echo "== demo 3/4: TFRecords =="
./write_tfrecords.sh --out "$DATA"
echo "== demo 4/4: runtime smoke training on $NP rank(s) =="
"$VENV/bin/horovodrun" -np "$NP" "$VENV/bin/python" -m smoke.train --runs-dir "$RUNS_DIR" --epochs 3
echo "== demo finished in $((SECONDS - t0)) s =="
