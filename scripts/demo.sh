#!/usr/bin/env bash
# Usage: scripts/demo.sh [--np N] [--runs-dir DIR] [--data DIR] [--workload all|chexnet|segmentation]
#                                                                   (called by `make demo`)
#
# The main job on the embedded synthetic defaults, both workloads by default:
#   CheXNet: synthetic ChestX-ray14 -> extract -> TFRecords -> DenseNet121 on N
#   ranks (default 2) -> evaluation on the test split; ends with the throughput
#   and per-pathology AUC tables.
#   Segmentation: synthetic Kvasir-SEG -> extract -> TFRecords (seeded 80/10/10
#   split, so the test images were never used to pick a checkpoint) ->
#   ResUNet++ on N ranks -> evaluation on the test split; ends with the
#   throughput and Dice/IoU tables and image panels.
# Both synthetic sets are drawn at the realistic difficulty (DEMO_DIFFICULTY=easy
# for the old, saturated one): label and boundary noise with a known ceiling,
# so each result is shown beside it and as a fraction of it (docs/data.md).
# Every table is saved in its run folder. Re-running writes the same synthetic
# sets again (same bytes), keeps the TFRecord shards that are still complete,
# and trains new runs. Sizes are small enough for 2 CPU cores (README).
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
SEG_PAIRS=${DEMO_SEG_PAIRS:-600}
SEG_SIZE=${DEMO_SEG_SIZE:-64}
SEG_EPOCHS=${DEMO_SEG_EPOCHS:-8}
DIFFICULTY=${DEMO_DIFFICULTY:-realistic}
WORKLOAD=all
while [ $# -gt 0 ]; do
  case "$1" in
    --np) NP=${2:?--np needs a number}; shift 2 ;;
    --runs-dir) RUNS_DIR=${2:?--runs-dir needs a folder}; shift 2 ;;
    --data) DATA=${2:?--data needs a folder}; shift 2 ;;
    --workload) WORKLOAD=${2:?--workload needs all, chexnet or segmentation}; shift 2 ;;
    -h|--help) sed -n '2,${/^#/!q;s/^# \{0,1\}//;p;}' "$0"; exit 0 ;;  # the leading comment block
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$WORKLOAD" in all|chexnet|segmentation) ;; *) echo "demo.sh: --workload must be all, chexnet or segmentation, got '$WORKLOAD'" >&2; exit 2 ;; esac
[[ "$NP" =~ ^[1-9][0-9]*$ ]] || { echo "demo.sh: --np must be a positive integer, got '$NP'" >&2; exit 2; }
[ -x "$VENV/bin/horovodrun" ] || { echo "demo.sh: $VENV/bin/horovodrun missing: run 'make setup' first" >&2; exit 2; }
export PYTHON=$VENV/bin/python
# No cd: --runs-dir and --data are taken from your folder; PYTHONPATH finds the project from any.
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
# horovodrun imports TensorFlow itself; its C++ start-up lines are noise here.
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
# ...and TF_CPP_MIN_LOG_LEVEL cannot hide the CUDA-stub lines it prints before
# logging starts: pass its stderr through the runtime's filter of exactly those.
quiet() {  # quiet CMD...: run CMD with its stderr filtered; wait for the filter to flush
  local rc=0
  "$@" 2> >("$PYTHON" -m runtime.stderr_filter >&2) || rc=$?
  wait "$!" 2>/dev/null || true  # $! is the filter: bash sets it for a process substitution
  return "$rc"
}
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
STAMP=$(date +%Y%m%d-%H%M%S)
CX=$DATA/demo  # the synthetic sets land in $CX/chestxray14/ and $CX/kvasir-seg/

# Ctrl-C or a `kill` of this script alone (a scheduler, a CI timeout) must stop
# everything it started: horovodrun, its setsid'd middleman, mpirun, the ranks.
# Bash runs no trap while a foreground child runs, so each step runs in the
# background and is waited for; the trap then ends the step's whole tree.
STEP_PID=""
step() {  # step CMD...: run CMD, interruptibly
  "$@" &
  STEP_PID=$!
  local rc=0
  wait "$STEP_PID" || rc=$?
  STEP_PID=""
  return "$rc"
}
freeze() {  # freeze PID: SIGSTOP PID, then its descendants, printing each pid
  kill -STOP "$1" 2>/dev/null || return 0  # a stopped process can neither fork nor exit
  echo "$1"
  local child
  for child in $(pgrep -P "$1"); do freeze "$child"; done
}
running() {  # running PID...: true while any of them runs (a zombie does not)
  ps -o stat= -p "$*" 2>/dev/null | grep -qv '^Z'
}
stop_step() {  # stop_step: SIGTERM the running step's whole tree, SIGKILL what is left after 5 s
  [ -n "$STEP_PID" ] || return 0
  local pids
  # Collected frozen: a parent that died meanwhile would orphan its children out of reach.
  pids=$(freeze "$STEP_PID")
  kill -TERM $pids 2>/dev/null || true
  kill -CONT $pids 2>/dev/null || true
  for _ in $(seq 50); do
    running $pids || return 0
    sleep 0.1
  done
  kill -KILL $pids 2>/dev/null || true
}
on_signal() {  # on_signal WHAT STATUS
  trap '' INT TERM  # a second Ctrl-C must not cut the clean-up short
  echo "demo.sh: $1: stopping the running step" >&2
  stop_step
  exit "$2"
}
trap 'on_signal interrupted 130' INT
trap 'on_signal terminated 143' TERM

chexnet_demo() {
  local run=demo-$STAMP
  echo "== CheXNet 1/5: synthetic ChestX-ray14, $IMAGES images at ${SIZE}x${SIZE}, $DIFFICULTY =="
  step "$ROOT/download_dataset.sh" --out "$CX" --synthetic "$IMAGES" --image-size "$SIZE" --difficulty "$DIFFICULTY"
  echo "== CheXNet 2/5: extract =="
  step "$ROOT/extract_images.sh" --out "$CX"
  echo "== CheXNet 3/5: TFRecords =="
  step "$ROOT/write_tfrecords.sh" --out "$CX" --image-size "$SIZE"
  echo "== CheXNet 4/5: DenseNet121 on $NP rank(s), $EPOCHS epochs, crop $CROP (run $RUNS_DIR/$run) =="
  step quiet "$VENV/bin/horovodrun" -np "$NP" "$VENV/bin/python" -m chexnet.train \
    --data-dir "$CX/chestxray14/tfrecords" --runs-dir "$RUNS_DIR" --run-name "$run" \
    --preset "$ROOT/presets/chexnet_demo.json" --epochs "$EPOCHS" --crop "$CROP"
  echo "== CheXNet 5/5: evaluation on the test split =="
  step quiet "$VENV/bin/horovodrun" -np "$NP" "$VENV/bin/python" -m chexnet.evaluate --run "$RUNS_DIR/$run" --split test
  DONE+=("$RUNS_DIR/$run/training.md" "$RUNS_DIR/$run/eval-test/auc.md")
  GRADED+=("$RUNS_DIR/$run")
}

segmentation_demo() {
  local run=demo-seg-$STAMP
  echo "== Segmentation 1/5: synthetic Kvasir-SEG, $SEG_PAIRS pairs, $DIFFICULTY =="
  step "$ROOT/download_dataset.sh" --dataset kvasir-seg --out "$CX" --synthetic "$SEG_PAIRS" --image-size 200 \
    --difficulty "$DIFFICULTY"
  echo "== Segmentation 2/5: extract =="
  step "$ROOT/extract_images.sh" --dataset kvasir-seg --out "$CX"
  echo "== Segmentation 3/5: TFRecords at ${SEG_SIZE}x${SEG_SIZE}, seeded 80/10/10 split =="
  step "$ROOT/write_tfrecords.sh" --dataset kvasir-seg --out "$CX" --image-size "$SEG_SIZE" --split random
  echo "== Segmentation 4/5: ResUNet++ on $NP rank(s), $SEG_EPOCHS epochs (run $RUNS_DIR/$run) =="
  step quiet "$VENV/bin/horovodrun" -np "$NP" "$VENV/bin/python" -m segmentation.train \
    --data-dir "$CX/kvasir-seg/tfrecords" --runs-dir "$RUNS_DIR" --run-name "$run" \
    --preset "$ROOT/presets/segmentation_demo.json" --epochs "$SEG_EPOCHS"
  echo "== Segmentation 5/5: evaluation on the test split =="
  step quiet "$VENV/bin/horovodrun" -np "$NP" "$VENV/bin/python" -m segmentation.evaluate --run "$RUNS_DIR/$run" --split test
  DONE+=("$RUNS_DIR/$run/training.md" "$RUNS_DIR/$run/eval-test/metrics.md")
  GRADED+=("$RUNS_DIR/$run")
}

t0=$SECONDS
DONE=()
GRADED=()
[ "$WORKLOAD" = segmentation ] || chexnet_demo
[ "$WORKLOAD" = chexnet ] || segmentation_demo
echo "== results against their ceilings (from each run's metrics.jsonl) =="
"$PYTHON" -c 'import sys; from training.report import ceiling_summary; print("\n".join(map(ceiling_summary, sys.argv[1:])))' "${GRADED[@]}"
echo "== demo finished in $((SECONDS - t0)) s: tables in ${DONE[*]} =="
