#!/usr/bin/env bash
# Usage: ./extract_images.sh [--dataset chestxray14] [--out DIR] [--jobs N]
#
# Extracts DIR/chestxray14/images_*.tar.gz in parallel (N jobs, default: all
# cores) into DIR/chestxray14/images_all/images/. Refuses members with an
# absolute path, '..' or a link type; checks each archive's count; a second
# run does no work. A truncated or corrupt archive is named, the others are
# still extracted, and the exit status is non-zero.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
DATASET=chestxray14
OUT=data
JOBS=$(nproc 2>/dev/null || echo 2)
usage() { sed -n '2,${/^#/!q;s/^# \{0,1\}//;p;}' "$0"; }  # the leading comment block
die() { echo "extract_images.sh: error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dataset) DATASET=${2:?--dataset needs a value}; shift 2 ;;
    --out) OUT=${2:?--out needs a value}; shift 2 ;;
    --jobs) JOBS=${2:?--jobs needs a value}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ "$DATASET" = chestxray14 ] || die "--dataset $DATASET: only chestxray14 is extracted by this stage so far"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive integer, got '$JOBS'"
[ -x "$PY" ] || die "$PY not found: run 'make setup' first (or set PYTHON)"
[ -d "$OUT/chestxray14" ] || die "$OUT/chestxray14 not found: run ./download_dataset.sh --out $OUT first"
PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} exec "$PY" -m dataprep.extract \
  --archives-dir "$OUT/chestxray14" --dest "$OUT/chestxray14/images_all" --jobs "$JOBS"
