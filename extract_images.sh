#!/usr/bin/env bash
# Usage: ./extract_images.sh [--dataset chestxray14|kvasir-seg|all] [--out DIR] [--jobs N] [--allow-partial]
#
# ChestX-ray14: extracts DIR/chestxray14/images_*.tar.gz in parallel (N jobs,
# default: all cores) into DIR/chestxray14/images_all/images/.
# Kvasir-SEG: extracts DIR/kvasir-seg/kvasir-seg.zip into DIR/kvasir-seg/Kvasir-SEG/.
# Refuses members with an absolute path, '..' or a link type; writes each file
# under a temporary name; a second run does no work. A truncated or corrupt
# archive is named, the others are still extracted, and the exit status is
# non-zero. A download with archives missing (or left as .part) is refused,
# naming them, before anything is extracted; --allow-partial extracts the
# archives present (a deliberate subset: write_tfrecords.sh needs it too).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
DATASET=chestxray14
OUT=data
JOBS=$(nproc 2>/dev/null || echo 2)
PARTIAL=()
usage() { sed -n '2,${/^#/!q;s/^# \{0,1\}//;p;}' "$0"; }  # the leading comment block
die() { echo "extract_images.sh: error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dataset) DATASET=${2:?--dataset needs a value}; shift 2 ;;
    --out) OUT=${2:?--out needs a value}; shift 2 ;;
    --jobs) JOBS=${2:?--jobs needs a value}; shift 2 ;;
    --allow-partial) PARTIAL=(--allow-partial); shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$DATASET" in chestxray14|kvasir-seg|all) ;; *) die "--dataset must be chestxray14, kvasir-seg or all, got '$DATASET'" ;; esac
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive integer, got '$JOBS'"
[ -x "$PY" ] || die "$PY not found: run 'make setup' first (or set PYTHON)"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

extract() {  # extract DATASET_FOLDER DEST PATTERN
  [ -d "$OUT/$1" ] || die "$OUT/$1 not found: run ./download_dataset.sh --dataset ${1} --out $OUT first"
  "$PY" -m dataprep.extract --archives-dir "$OUT/$1" --dest "$2" --pattern "$3" --jobs "$JOBS" \
    --expect "$1" ${PARTIAL[@]+"${PARTIAL[@]}"}
}

for ds in $( [ "$DATASET" = all ] && echo "chestxray14 kvasir-seg" || echo "$DATASET"); do
  case "$ds" in
    chestxray14) extract chestxray14 "$OUT/chestxray14/images_all" '*.tar.gz' ;;
    kvasir-seg) extract kvasir-seg "$OUT/kvasir-seg" kvasir-seg.zip ;;
  esac
done
