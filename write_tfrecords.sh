#!/usr/bin/env bash
# Usage: ./write_tfrecords.sh [--dataset chestxray14|kvasir-seg|csv|masks] [--out DIR] [--name NAME] [OPTIONS...]
#        mpirun -np N ./write_tfrecords.sh ...      (ranks write their own shards)
#
# Writes TFRecord shards and manifest.json into DIR/<dataset>/tfrecords/ (DIR/NAME/tfrecords/ with --name).
# Own X-rays: --dataset csv --csv labels.csv --images FOLDER --patient-column COL
# --label-column COL or --label-columns A,B,... (docs/data.md, "Your own data").
# Own masks: --dataset masks --images DIR --masks DIR [--mask-suffix _mask]
# [--foreground VALUES] [--split-csv FILE | --split-lists DIR] (docs/data.md).
# ChestX-ray14: validation split from train_val by patient; images resized by
# area. Kvasir-SEG: the official 880/120 split (or --split random --seed K for
# a seeded 80/10/10); images resized by area, masks binarised and resized by
# nearest neighbour. Every image is written or listed as rejected with its
# reason; a rerun rewrites only the shards whose inputs changed. Refused before
# any work: an output folder holding another data set's records (or records
# no writer recorded), and ChestX-ray14 archives not extracted (an unfinished
# download) unless --allow-partial asks for that subset. Ctrl-C stops with one
# line saying how many shards are complete (exit 130): rerun to continue.
# Other OPTIONS go to the writer: run with --dataset D --help-writer to list them
# (e.g. --image-size 256 --encoding raw --images-per-shard N --processes P).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
DATASET=chestxray14
OUT=data
NAME=
ARGS=()
usage() { sed -n '2,${/^#/!q;s/^# \{0,1\}//;p;}' "$0"; }  # the leading comment block
die() { echo "write_tfrecords.sh: error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dataset) DATASET=${2:?--dataset needs a value}; shift 2 ;;
    --out) OUT=${2:?--out needs a value}; shift 2 ;;
    --name) NAME=${2:?--name needs a value}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --help-writer) ARGS+=(--help); shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
case "$DATASET" in
  chestxray14) MODULE=dataprep.chestxray14.tfrecords ;;
  kvasir-seg) MODULE=dataprep.kvasir_seg.tfrecords ;;
  csv) MODULE=dataprep.csv_set.tfrecords ;;
  masks) MODULE=dataprep.mask_set.tfrecords ;;
  *) die "--dataset must be chestxray14, kvasir-seg, csv or masks, got '$DATASET'" ;;
esac
case "$NAME" in
  "") NAME=$DATASET ;;
  */*|.|..|-*) die "--name must be a plain folder name, got '$NAME'" ;;
esac
[ -x "$PY" ] || die "$PY not found: run 'make setup' first (or set PYTHON)"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
exec "$PY" -m "$MODULE" --data-dir "$OUT/$NAME" ${ARGS[@]+"${ARGS[@]}"}
