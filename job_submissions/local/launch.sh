#!/usr/bin/env bash
# Usage: job_submissions/local/launch.sh [--np N] [--hostfile FILE | --elastic MIN:MAX --discovery SCRIPT
#                                        [--cooldown A:B]] MODULE [FLAGS...]
#
# Runs a project entry point on N ranks (default 2) with horovodrun: on this
# machine, or on the hosts of FILE (one "host slots=K" a line, as for mpirun
# --hostfile; the project folder, its .venv and the folder you run this from
# must be at the same path on every host). MODULE is an entry point such as
# chexnet.train, segmentation.train or segmentation.evaluate; FLAGS and presets
# are the ones the Slurm jobs take. Relative paths in FLAGS (--data-dir,
# --runs-dir, --preset, images...) are taken from the folder you run this from.
#   job_submissions/local/launch.sh --np 4 chexnet.train --preset presets/chexnet_paper.json --data-dir data/chestxray14/tfrecords
#   job_submissions/local/launch.sh --np 8 --hostfile hosts.txt segmentation.train --epochs 100
# Elastic training (Gloo): start N workers, go on with as few as MIN, take up to
# MAX. SCRIPT prints the hosts available now, one "host:slots" a line; a failed
# worker's host is left out for a random A to B seconds (default 10:60), then
# taken in again if SCRIPT still lists it. The trainer gets --elastic, and needs
# --run-name and a --runs-dir every host sees (training/elastic.py):
#   job_submissions/local/launch.sh --np 4 --elastic 2:8 --discovery ./hosts.sh chexnet.train --run-name cx ...
# Several networks per host (a data network and a management one): MEDIMG_IFACE=NAME
# sends every collective over interface NAME (horovodrun --network-interface, Open
# MPI's btl/oob TCP, Gloo, NCCL); each host is first checked to have it (ssh, 5 s
# timeout) and a host without it, or one ssh cannot reach, is named in one line:
#   MEDIMG_IFACE=ib0 job_submissions/local/launch.sh --np 8 --hostfile hosts.txt chexnet.train ...
# The same without this script:
#   horovodrun -np 8 -hostfile hosts.txt python -m segmentation.train --epochs 100
#   mpirun -np 8 --hostfile hosts.txt --bind-to none python -m segmentation.train --epochs 100
#   horovodrun -np 4 --min-np 2 --max-np 8 --host-discovery-script ./hosts.sh \
#       --blacklist-cooldown-range 10 60 python -m chexnet.train --elastic --run-name cx ...
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${MEDIMG_VENV:-$ROOT/.venv}
NP=2
HOSTFILE=""
ELASTIC=""
DISCOVERY=""
COOLDOWN=10:60
die() { echo "launch.sh: error: $*" >&2; exit 2; }
# shellcheck source=../network.sh
source "$ROOT/job_submissions/network.sh"
while [ $# -gt 0 ]; do
  case "$1" in
    --np) NP=${2:?--np needs a number}; shift 2 ;;
    --hostfile) HOSTFILE=${2:?--hostfile needs a file}; shift 2 ;;
    --elastic) ELASTIC=${2:?--elastic needs MIN:MAX}; shift 2 ;;
    --discovery) DISCOVERY=${2:?--discovery needs a script}; shift 2 ;;
    --cooldown) COOLDOWN=${2:?--cooldown needs A:B}; shift 2 ;;
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
if [ -n "$ELASTIC$DISCOVERY" ]; then
  [[ "$ELASTIC" =~ ^([1-9][0-9]*):([1-9][0-9]*)$ ]] && [ "${BASH_REMATCH[1]}" -le "$NP" ] && [ "$NP" -le "${BASH_REMATCH[2]}" ] \
    || die "--elastic takes MIN:MAX with MIN <= --np ($NP) <= MAX, got '$ELASTIC'"
  [ -n "$DISCOVERY" ] || die "--elastic needs --discovery SCRIPT, which prints the available hosts as host:slots lines"
  [ -x "$DISCOVERY" ] || die "--discovery $DISCOVERY is not an executable file (chmod +x it)"
  [ -z "$HOSTFILE" ] || die "--hostfile and --elastic do not go together: an elastic job's hosts come from --discovery"
  [[ "$COOLDOWN" =~ ^([0-9]+):([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -le "${BASH_REMATCH[2]}" ] \
    || die "--cooldown takes A:B seconds with A <= B, got '$COOLDOWN'"
fi
[ -f "$ROOT/${MODULE//.//}.py" ] || die "no entry point $MODULE in $ROOT (e.g. chexnet.train, segmentation.evaluate)"
[ -x "$VENV/bin/horovodrun" ] || die "$VENV/bin/horovodrun not found: run 'make setup' first (or set MEDIMG_VENV)"
VENV=$(cd "$VENV" && pwd)  # every rank, on every host, finds it whatever its folder
IFACE=${MEDIMG_IFACE:-}
job_hosts() {  # the hosts of the job: the hostfile's, the discovery script's now, or this one
  if [ -n "$HOSTFILE" ]; then awk '!/^[[:space:]]*(#|$)/ {print $1}' "$HOSTFILE"
  elif [ -n "$DISCOVERY" ]; then "$DISCOVERY" | cut -d: -f1
  else echo localhost
  fi
}
check_iface() {  # check_iface HOST: HOST has interface $IFACE, or one line saying why not
  local rc=0 hint="'ip -br addr' there lists its interfaces"
  case "$1" in
    localhost|127.0.0.1|"$(hostname)"|"$(hostname -s)")
      [ -e "/sys/class/net/$IFACE" ] || rc=1
      hint="it has: $(ls /sys/class/net | paste -sd ' ' -)" ;;
    *) timeout 15 ssh -o BatchMode=yes -o ConnectTimeout=5 "$1" test -e "/sys/class/net/$IFACE" </dev/null || rc=$? ;;
  esac
  case $rc in
    0) ;;
    1) net_iface_missing "$1" "$hint" ;;
    *) die "MEDIMG_IFACE=$IFACE: cannot reach host $1 by ssh to check it (exit $rc): horovodrun needs passwordless ssh to every host" ;;
  esac
}
net_keepalive
IFACE_ARGS=()
if [ -n "$IFACE" ]; then
  # horovodrun sets its own controller's interface; net_use_iface covers Open MPI's, Gloo's and NCCL's sockets.
  net_use_iface "$IFACE"
  for host in $(job_hosts | sort -u); do check_iface "$host"; done
  IFACE_ARGS=(--network-interface "$IFACE")
fi
# No cd: relative paths stay the user's; PYTHONPATH finds the project, -P (Python 3.11 and later) keeps the
# user's folder off sys.path.
SAFE_PATH=$("$VENV/bin/python" -c 'import sys; print("-P" if sys.version_info >= (3, 11) else "")')
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
HOSTS=()
[ -z "$HOSTFILE" ] || HOSTS=(-hostfile "$HOSTFILE")
if [ -n "$ELASTIC" ]; then
  HOSTS=(--min-np "${ELASTIC%%:*}" --max-np "${ELASTIC##*:}" --host-discovery-script "$(readlink -f "$DISCOVERY")"
         --blacklist-cooldown-range "${COOLDOWN%%:*}" "${COOLDOWN##*:}")
  set -- "$@" --elastic
fi
exec "$VENV/bin/horovodrun" -np "$NP" ${HOSTS[@]+"${HOSTS[@]}"} ${IFACE_ARGS[@]+"${IFACE_ARGS[@]}"} \
  "$VENV/bin/python" ${SAFE_PATH:+"$SAFE_PATH"} -m "$MODULE" "$@"
