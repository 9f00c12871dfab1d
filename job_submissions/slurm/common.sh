# Sourced by the job scripts in this folder; not a job itself.
#
# MEDIMG_ROOT     the project folder (default: the folder sbatch was run from)
# MEDIMG_MODULES  modules to load first, e.g. "openmpi/4.1 gcc/12" (default: none)
# MEDIMG_VENV     the virtual environment to activate (default: $MEDIMG_ROOT/.venv)
# LAUNCHER        mpirun (default) or srun
# MEDIMG_IFACE    the interface every collective uses, on nodes with several networks (a data
#                 network and a management one), e.g. ib0: each node of the allocation is checked
#                 to have it first (one srun step), and a node without it is named in one line
# MEDIMG_STOP_GRACE_S  training jobs: seconds a rank gets, after mpirun passes on a SIGTERM
#                 (scancel, preemption), to finish its step and write its checkpoint before
#                 mpirun kills it (default 10; keep it below Slurm's KillWait, 30 s by default).
#                 Open MPI waits twice this long whenever a rank exits non-zero (a stop
#                 exits 75), so a large value slows every stopped or failed job down.
#
# The job stays in the folder Slurm started it in (the submit folder, or sbatch --chdir):
# relative paths (RUNS_DIR, DATA_DIR, --preset, --data-dir, the --output log) are taken from there.
die() { echo "$(basename "${JOB_SCRIPT:-job}"): error: $*" >&2; exit 2; }

require_slurm_job() {  # a job script run with plain bash has no allocation to launch on
  [ -n "${SLURM_JOB_ID:-}" ] || die "not inside a Slurm job (no SLURM_JOB_ID): submit with sbatch, or use job_submissions/local/launch.sh"
}
require_slurm_job
ROOT=${MEDIMG_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
[ -f "$ROOT/training/loop.py" ] || die "$ROOT is not the project folder: submit from it, or set MEDIMG_ROOT"
ROOT=$(cd "$ROOT" && pwd)  # absolute: the job never changes folder, and PYTHONPATH must hold wherever a rank starts
# shellcheck source=../network.sh
source "$ROOT/job_submissions/network.sh"
net_keepalive

activate() {  # modules first (they may provide MPI and compilers), then the venv
  if [ -n "${MEDIMG_MODULES:-}" ]; then
    # shellcheck disable=SC2086  # a list of module names
    module load $MEDIMG_MODULES || die "module load $MEDIMG_MODULES failed"
  fi
  local venv=${MEDIMG_VENV:-$ROOT/.venv}
  [ -x "$venv/bin/python" ] || die "$venv/bin/python not found: run 'make setup' on the cluster, or set MEDIMG_VENV"
  # shellcheck disable=SC1091
  source "$venv/bin/activate"
  # The project without a cd: a venv that make setup did not make lacks its editable install.
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
  # Python 3.11+ leaves the job's folder off sys.path: a package there named like the project's cannot shadow it.
  export PYTHONSAFEPATH=1
}

check_iface_on_nodes() {  # every node of the allocation has $MEDIMG_IFACE, or one line naming those without it
  local missing rc=0
  # shellcheck disable=SC2016  # expanded on each node
  missing=$(timeout 60 srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 --overlap \
    bash -c '[ -e "/sys/class/net/$1" ] || echo "$SLURMD_NODENAME"' - "$MEDIMG_IFACE") || rc=$?
  [ "$rc" -eq 0 ] || die "MEDIMG_IFACE=$MEDIMG_IFACE: the check step on the job's nodes failed (srun exit $rc)"
  [ -z "$missing" ] || net_iface_missing "$(echo "$missing" | sort | paste -sd ' ' -)" "'ip -br addr' there lists its interfaces"
}

launcher() {  # launcher [GRACE_S]: sets LAUNCH, the command that starts one rank per Slurm task
  local np=${SLURM_NTASKS:?launch runs inside a Slurm allocation}
  if [ -n "${MEDIMG_IFACE:-}" ]; then
    net_use_iface "$MEDIMG_IFACE"
    check_iface_on_nodes
  fi
  case "${LAUNCHER:-mpirun}" in
    # Open MPI reads the allocation (hosts, tasks per node) and starts its daemons
    # through Slurm itself: works wherever Open MPI runs, without Slurm's PMIx plugin.
    # It kills its ranks GRACE_S (default 1) s after passing on a SIGTERM.
    mpirun) LAUNCH=(env "OMPI_MCA_odls_base_sigkill_timeout=${1:-1}" mpirun -np "$np" --bind-to none) ;;
    # srun starts the ranks directly; needs a Slurm built with PMIx matching the MPI.
    srun) LAUNCH=(srun --mpi=pmix) ;;
    *) die "LAUNCHER must be mpirun or srun, got '$LAUNCHER'" ;;
  esac
}

launch() {  # launch CMD...: CMD on every rank
  launcher
  "${LAUNCH[@]}" "$@"
}

threads_per_rank() {  # the cores Slurm gave each task (0: let the runtime decide)
  echo "${SLURM_CPUS_PER_TASK:-0}"
}

job_run_name() {  # one run folder per job; a requeued job keeps its id, and so its folder
  echo "${RUN_NAME:-${SLURM_JOB_NAME:-job}-${SLURM_JOB_ID:-local}}"
}

check_trainer() {
  case "${1:-}" in chexnet|segmentation) ;; *) die "first argument must be the trainer, chexnet or segmentation; got '${1:-}'" ;; esac
}

launch_stoppable() {  # launch_stoppable CMD...: launch, passing on a stop signal; sets STATUS and STOP_SIGNAL
  # Slurm signals the batch shell (--signal=B:USR1@..., scancel's SIGTERM); mpirun
  # and srun pass the signal on to every rank, which checkpoints and exits 75.
  STOP_SIGNAL=""
  launcher "${MEDIMG_STOP_GRACE_S:-10}"
  "${LAUNCH[@]}" "$@" &  # a simple command: $! is the launcher itself, not a subshell
  local pid=$!
  trap 'STOP_SIGNAL=USR1; kill -s USR1 "$pid" 2>/dev/null || true' USR1
  trap 'STOP_SIGNAL=TERM; kill -s TERM "$pid" 2>/dev/null || true' TERM
  while :; do  # a trapped signal interrupts wait (status > 128) while CMD goes on
    STATUS=0
    wait "$pid" || STATUS=$?
    if [ "$STATUS" -le 128 ] || ! kill -0 "$pid" 2>/dev/null; then break; fi
  done
  trap - USR1 TERM
}
