#!/usr/bin/env bash
# Usage: job_submissions/local/launch.sh [--np N] [--hostfile FILE] MODULE [FLAGS...]
#
# Runs a project entry point on N ranks (default 2) with horovodrun: on this
# machine, or on the hosts of FILE (one "host slots=K" a line, as for mpirun
# --hostfile; the project folder and its .venv must be at the same path on
# every host). MODULE is an entry point such as chexnet.train,
# segmentation.train or segmentation.evaluate; FLAGS and presets are the ones
# the Slurm jobs take.
#   job_submissions/local/launch.sh --np 4 chexnet.train --preset presets/chexnet_paper.json --data-dir data/chestxray14/tfrecords
#   job_submissions/local/launch.sh --np 8 --hostfile hosts.txt segmentation.train --epochs 100
# The same without this script:
#   horovodrun -np 8 -hostfile hosts.txt python -m segmentation.train --epochs 100
#   mpirun -np 8 --hostfile hosts.txt --bind-to none python -m segmentation.train --epochs 100
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${MEDIMG_VENV:-$ROOT/.venv}
NP=2
HOSTFILE=""
die() { echo "launch.sh: error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --np) NP=${2:?--np needs a number}; shift 2 ;;
    --hostfile) HOSTFILE=${2:?--hostfile needs a file}; shift 2 ;;
    -h|--help) sed -n '2,${/^#/!q;s/^# \{0,1\}//;p;}' "$0"; exit 0 ;;  # the leading comment block
    -*) die "unknown option '$1' before the module (see --help)" ;;
    *) break ;;
  esac
done
MODULE=${1:-}
[ -n "$MODULE" ] || die "name the entry point to run, e.g. chexnet.train (see --help)"
shift
[[ "$NP" =~ ^[1-9][0-9]*$ ]] || die "--np must be a positive integer, got '$NP'"
[ -z "$HOSTFILE" ] || [ -f "$HOSTFILE" ] || die "--hostfile $HOSTFILE not found"
[ -f "$ROOT/${MODULE//.//}.py" ] || die "no entry point $MODULE in $ROOT (e.g. chexnet.train, segmentation.evaluate)"
[ -x "$VENV/bin/horovodrun" ] || die "$VENV/bin/horovodrun not found: run 'make setup' first (or set MEDIMG_VENV)"
cd "$ROOT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
HOSTS=()
[ -z "$HOSTFILE" ] || HOSTS=(-hostfile "$HOSTFILE")
exec "$VENV/bin/horovodrun" -np "$NP" ${HOSTS[@]+"${HOSTS[@]}"} "$VENV/bin/python" -m "$MODULE" "$@"
