# Sourced by the job scripts in this folder; not a job itself.
#
# MEDIMG_ROOT     the project folder (default: the folder sbatch was run from)
# MEDIMG_MODULES  modules to load first, e.g. "openmpi/4.1 gcc/12" (default: none)
# MEDIMG_VENV     the virtual environment to activate (default: $MEDIMG_ROOT/.venv)
# LAUNCHER        mpirun (default) or srun
ROOT=${MEDIMG_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
die() { echo "$(basename "${JOB_SCRIPT:-job}"): error: $*" >&2; exit 2; }
[ -f "$ROOT/training/loop.py" ] || die "$ROOT is not the project folder: submit from it, or set MEDIMG_ROOT"
cd "$ROOT"

activate() {  # modules first (they may provide MPI and compilers), then the venv
  if [ -n "${MEDIMG_MODULES:-}" ]; then
    # shellcheck disable=SC2086  # a list of module names
    module load $MEDIMG_MODULES || die "module load $MEDIMG_MODULES failed"
  fi
  local venv=${MEDIMG_VENV:-$ROOT/.venv}
  [ -x "$venv/bin/python" ] || die "$venv/bin/python not found: run 'make setup' on the cluster, or set MEDIMG_VENV"
  # shellcheck disable=SC1091
  source "$venv/bin/activate"
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
}

launch() {  # launch CMD...: one rank per Slurm task of the allocation
  local np=${SLURM_NTASKS:?launch runs inside a Slurm allocation}
  case "${LAUNCHER:-mpirun}" in
    # Open MPI reads the allocation (hosts, tasks per node) and starts its daemons
    # through Slurm itself: works wherever Open MPI runs, without Slurm's PMIx plugin.
    mpirun) mpirun -np "$np" --bind-to none "$@" ;;
    # srun starts the ranks directly; needs a Slurm built with PMIx matching the MPI.
    srun) srun --mpi=pmix "$@" ;;
    *) die "LAUNCHER must be mpirun or srun, got '$LAUNCHER'" ;;
  esac
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
