#!/usr/bin/env bash
# Usage: ./write_tfrecords.sh [--dataset chestxray14] [--out DIR] [writer options]
#        mpirun -np 4 ./write_tfrecords.sh --out /shared/data     (each rank writes its shards)
#
# Reads DIR/chestxray14/{Data_Entry_2017.csv,train_val_list.txt,test_list.txt,images_all/}
# and writes DIR/chestxray14/tfrecords/{train,val,test}-NNNNN-of-NNNNN.tfrecord and
# manifest.json. Writer options (see --help of the writer for all):
#   --image-size 256  --encoding png|jpeg|raw  --val-fraction 0.1  --seed 0
#   --shard-mb 150  --images-per-shard N  --processes N  --out-dir DIR
# Resumable: complete shards are skipped on a rerun.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
DATASET=chestxray14
OUT=data
ARGS=()
usage() { sed -n '2,${/^#/!q;s/^# \{0,1\}//;p;}' "$0"; }  # the leading comment block
die() { echo "write_tfrecords.sh: error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dataset) DATASET=${2:?--dataset needs a value}; shift 2 ;;
    --out) OUT=${2:?--out needs a value}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
[ "$DATASET" = chestxray14 ] || die "--dataset $DATASET: only chestxray14 is written by this stage so far"
[ -x "$PY" ] || die "$PY not found: run 'make setup' first (or set PYTHON)"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
exec "$PY" -m dataprep.chestxray14.tfrecords --data-dir "$OUT/chestxray14" ${ARGS[@]+"${ARGS[@]}"}
