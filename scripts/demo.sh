#!/usr/bin/env bash
# Usage: scripts/demo.sh [--np N] [--runs-dir DIR] [--data DIR]     (called by `make demo`)
#
# The main job on the embedded synthetic default: synthetic ChestX-ray14 ->
# extract -> TFRecords -> CheXNet on N ranks (default 2) -> evaluation on the
# test split. Ends with the throughput table and the per-pathology AUC table,
# both saved in the run folder. Re-running skips the finished data stages and
# trains a new run. Sizes are small enough for 2 CPU cores (see README).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
NP=2
RUNS_DIR=$ROOT/runs
DATA=$ROOT/data
IMAGES=${DEMO_IMAGES:-3000}
SIZE=${DEMO_IMAGE_SIZE:-64}
CROP=${DEMO_CROP:-56}
EPOCHS=${DEMO_EPOCHS:-6}
while [ $# -gt 0 ]; do
  case "$1" in
    --np) NP=$2; shift 2 ;;
    --runs-dir) RUNS_DIR=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
RUN=demo-$(date +%Y%m%d-%H%M%S)
CX=$DATA/demo  # the synthetic set lands in $CX/chestxray14/

t0=$SECONDS
echo "== demo 1/5: synthetic ChestX-ray14, $IMAGES images at ${SIZE}x${SIZE} =="
./download_dataset.sh --out "$CX" --synthetic "$IMAGES" --image-size "$SIZE"
echo "== demo 2/5: extract =="
./extract_images.sh --out "$CX"
echo "== demo 3/5: TFRecords =="
./write_tfrecords.sh --out "$CX" --image-size "$SIZE"
echo "== demo 4/5: CheXNet on $NP rank(s), $EPOCHS epochs, crop $CROP (run $RUNS_DIR/$RUN) =="
"$VENV/bin/horovodrun" -np "$NP" "$VENV/bin/python" -m chexnet.train \
  --data-dir "$CX/chestxray14/tfrecords" --runs-dir "$RUNS_DIR" --run-name "$RUN" \
  --epochs "$EPOCHS" --crop "$CROP" --per-rank-batch 16 --bn-momentum 0.9 --mixed-precision
echo "== demo 5/5: evaluation on the test split =="
"$VENV/bin/horovodrun" -np "$NP" "$VENV/bin/python" -m chexnet.evaluate --run "$RUNS_DIR/$RUN" --split test
echo "== demo finished in $((SECONDS - t0)) s: tables in $RUNS_DIR/$RUN/training.md and $RUNS_DIR/$RUN/eval-test/auc.md =="
