#!/usr/bin/env bash
# Usage: scripts/setup.sh            (called by `make setup`; safe to re-run)
#
# Builds the project's environment in .venv, idempotently:
#   1. Open MPI and a C++ tool chain: installed with apt when missing and root,
#      otherwise a message saying what to load or install.
#   2. .venv with requirements.txt (TensorFlow first, horovod excluded).
#   3. horovod 0.28.1 built from source with TensorFlow, MPI and Gloo; rebuilt
#      only when missing, built against another TensorFlow, or missing a part.
#   4. `horovodrun --check-build` must tick TensorFlow, MPI and Gloo.
#
# Environment:
#   PYTHON=python3.11        interpreter for the venv (3.9 - 3.12)
#   VENV=.venv               where the venv lives
#   TF_EXTRA=and-cuda        GPU machines: installs tensorflow[and-cuda]
#   HOROVOD_GPU_OPERATIONS=NCCL  passed through to the horovod build (GPU)
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}  # hide TF C++ start-up noise

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
REQ=$ROOT/requirements.txt
STAMP=$VENV/.requirements.sha256

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

pinned() {  # pinned NAME -> version pinned in requirements.txt
  sed -n "s/^$1==\([^ ;#]*\).*/\1/p" "$REQ" | head -n 1
}

ensure_system_packages() {
  local missing=()
  command -v mpicxx >/dev/null 2>&1 || missing+=(libopenmpi-dev)
  command -v mpirun >/dev/null 2>&1 || missing+=(openmpi-bin)
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
  command -v make >/dev/null 2>&1 || missing+=(make)
  # Without root a missing cmake is taken from PyPI into the venv instead.
  [ "$(id -u)" -eq 0 ] && { command -v cmake >/dev/null 2>&1 || missing+=(cmake); }
  [ ${#missing[@]} -eq 0 ] && { log "system packages present (mpicxx, mpirun, g++, make)"; return; }
  if [ "$(id -u)" -ne 0 ]; then
    die "missing ${missing[*]}: on a cluster run 'module load openmpi gcc' (names vary by site), on Debian/Ubuntu ask an admin for 'apt-get install libopenmpi-dev openmpi-bin build-essential cmake', then re-run make setup"
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install an MPI with mpicxx, a C++17 compiler and cmake, then re-run make setup"
  log "installing Debian packages: libopenmpi-dev openmpi-bin build-essential cmake"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    libopenmpi-dev openmpi-bin build-essential cmake ca-certificates >/dev/null
}

ensure_venv() {
  "$PYTHON" -c 'import sys; sys.exit(not ((3, 9) <= sys.version_info[:2] <= (3, 12)))' \
    || die "$PYTHON is $("$PYTHON" -V 2>&1); TensorFlow 2.18 needs Python 3.9-3.12: set PYTHON=python3.11"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  fi
}

ensure_requirements() {
  local want
  want=$( (cat "$REQ"; echo "TF_EXTRA=${TF_EXTRA:-}") | sha256sum | cut -d' ' -f1)
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    log "requirements unchanged since last install"
    return
  fi
  # The full `tensorflow` wheel on CPU machines too: tensorflow-cpu is 0.5 GB
  # smaller, but tf-keras declares a dependency on `tensorflow`, so pip would
  # pull the full wheel in beside it (or need --no-deps and a broken `pip check`).
  local tf="tensorflow==$(pinned tensorflow)"
  [ -n "${TF_EXTRA:-}" ] && tf="tensorflow[${TF_EXTRA}]==$(pinned tensorflow)"
  # TensorFlow goes in first: horovod's build links against the installed one.
  log "installing $tf and requirements.txt (horovod excluded)"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$tf" 2>&1 | grep -v '^WARNING: Location' || true
  grep -v '^horovod==' "$REQ" > "$VENV/.requirements-no-horovod.txt"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$VENV/.requirements-no-horovod.txt" 2>&1 \
    | grep -v '^WARNING: Location' || true
  "$VENV/bin/python" -c "import tensorflow, tf_keras, mpi4py, cv2, sklearn, pandas" 2>/dev/null \
    || die "requirements did not install: run '$VENV/bin/pip install -r $VENV/.requirements-no-horovod.txt' to see why"
  echo "$want" > "$STAMP"
}

horovod_problem() {  # prints why horovod needs a (re)build, nothing when it is good
  "$VENV/bin/python" "$ROOT/scripts/check_horovod.py" --want "$(pinned horovod)" \
    --gpu-operations "${HOROVOD_GPU_OPERATIONS:-}" || true
}

ensure_horovod() {
  local why; why=$(horovod_problem)
  if [ -z "$why" ]; then
    log "horovod $(pinned horovod) already built against the installed TensorFlow, with MPI and Gloo"
    return
  fi
  log "building horovod $(pinned horovod) from source ($why); about 2-3 minutes on 2 cores"
  command -v cmake >/dev/null 2>&1 || "$VENV/bin/pip" install -q cmake
  "$VENV/bin/pip" uninstall -q -y horovod >/dev/null 2>&1 || true
  # No build isolation: the build must see the pinned TensorFlow in this venv.
  # No cache: a cached wheel may have been built against another TensorFlow.
  PATH="$VENV/bin:$PATH" HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    "$VENV/bin/pip" install --no-cache-dir --no-build-isolation --disable-pip-version-check \
      "horovod==$(pinned horovod)" > "$VENV/horovod-build.log" 2>&1 \
    || die "horovod build failed; the full log is $VENV/horovod-build.log (tail: $(tail -n 3 "$VENV/horovod-build.log" | tr '\n' ' '))"
  why=$(horovod_problem)
  [ -z "$why" ] || die "horovod built but is unusable: $why (log: $VENV/horovod-build.log)"
  "$VENV/bin/horovodrun" --check-build
}

gpu_note() {  # a GPU machine set up without the GPU path gets told how
  if [ -z "${TF_EXTRA:-}" ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
    log "NOTE: this machine has NVIDIA GPUs but TF_EXTRA is unset: installing the CPU path; for the GPU path run"
    log "      TF_EXTRA=and-cuda HOROVOD_GPU_OPERATIONS=NCCL make setup"
  fi
}

main() {
  local t0=$SECONDS
  gpu_note
  ensure_system_packages
  ensure_venv
  ensure_requirements
  ensure_horovod  # fails unless horovodrun --check-build ticks TensorFlow, MPI and Gloo
  log "environment ready in $((SECONDS - t0)) s: activate with 'source $VENV/bin/activate'"
}

main "$@"
