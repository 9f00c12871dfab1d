#!/usr/bin/env bash
# Usage: scripts/setup.sh               (called by `make setup`; safe to re-run)
#        scripts/setup.sh --preflight   only the GPU checks below; installs nothing
#        scripts/setup.sh --which-cmake steps 1-2's system check and venv, then prints the cmake horovod would use
#
# Builds the project's environment in .venv, idempotently:
#   1. Open MPI and a C++ tool chain: installed with apt when missing and root,
#      otherwise a message saying what to load or install.
#   2. .venv with requirements.txt (TensorFlow first, horovod excluded).
#   3. horovod 0.28.1 built from source with TensorFlow, MPI and Gloo (and NCCL
#      on the GPU path) by a cmake older than 4 (the system's, else PyPI's
#      cmake<4 in the venv); rebuilt only when missing, built against another
#      TensorFlow, or missing a part.
#   4. `horovodrun --check-build` must tick TensorFlow, MPI and Gloo (and NCCL).
#   5. The project itself, editable (pyproject.toml), without dependencies: the
#      medimg-* commands and `python -m chexnet.train` work from any folder;
#      reinstalled only when pyproject.toml or the project folder changed.
#
# GPU path (docs/GPU.md): before anything is installed, a machine with NVIDIA
# GPUs must say which build it wants, and a GPU build must find nvcc, a static
# cudart, nccl.h and libnccl, and a GCC its nvcc accepts. TensorFlow's CUDA
# wheels (tensorflow[and-cuda]) carry no nvcc and no static cudart: they run
# TensorFlow, they cannot build horovod.
#
# Environment:
#   PYTHON=python3.11        interpreter for the venv (3.9 - 3.12)
#   VENV=.venv               where the venv lives
#   TF_EXTRA=and-cuda        GPU machines: installs tensorflow[and-cuda] (implies HOROVOD_GPU_OPERATIONS=NCCL)
#   HOROVOD_GPU_OPERATIONS=NCCL  horovod's GPU collectives (NCCL, or MPI with a CUDA-aware MPI)
#   HOROVOD_CPU_ONLY=1       build for CPU on a machine with NVIDIA GPUs
#   HOROVOD_CUDA_HOME        the CUDA toolkit (the folder with bin/nvcc); else nvcc on PATH, else /usr/local/cuda
#   HOROVOD_NCCL_HOME, HOROVOD_NCCL_INCLUDE, HOROVOD_NCCL_LIB   where NCCL is, when not in the system folders
#   HOROVOD_NCCL_LINK=SHARED link libnccl.so (a wheel's NCCL has no libnccl_static.a)
#   HOROVOD_BUILD_CUDA_CC_LIST=80,90   compute capabilities to build kernels for (default: all nvcc knows)
#   CXX=g++-13               the host compiler, when the default GCC is newer than nvcc accepts
#   HOROVOD_CMAKE            a cmake of your own for the horovod build (else chosen as in step 3)
# All of these reach horovod's build unchanged.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}  # hide TF C++ start-up noise

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
REQ=$ROOT/requirements.txt
STAMP=$VENV/.requirements.sha256
PROJECT_STAMP=$VENV/.project.sha256  # pyproject.toml and the folder of the last editable install
GPU_CHOICE=$VENV/.horovod-gpu-operations  # the last build's NCCL, MPI or cpu: a plain re-run keeps it
# horovod's setup.py needs 3.13; CMake 4 refuses Gloo's cmake_minimum_required(VERSION 2.8.12).
CMAKE_SPEC='cmake>=3.13,<4'
DEFAULT_CUDA_HOME=${SETUP_DEFAULT_CUDA_HOME:-/usr/local/cuda}  # horovod's own default; tests point it elsewhere

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
  # Without root a missing cmake is taken from PyPI into the venv instead (choose_cmake).
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
  # The full `tensorflow` wheel on CPU machines too: tensorflow-cpu is smaller (docs/setup.md),
  # but tf-keras declares a dependency on `tensorflow`, so pip would
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

cmake_version() {  # cmake_version BIN -> "3.25.1", empty when BIN does not run
  "$1" --version 2>/dev/null | sed -n 's/^cmake version \([0-9][0-9.]*\).*/\1/p' | head -n 1
}

cmake_fits() {  # cmake_fits BIN: true for a cmake from 3.13 up to, not including, 4
  local v major minor; v=$(cmake_version "$1")
  [ -n "$v" ] || return 1
  major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
  [ "$major" -eq 3 ] && [ "$minor" -ge 13 ]
}

choose_cmake() {  # prints the cmake the horovod build will use; installs cmake<4 into the venv when needed
  if [ -n "${HOROVOD_CMAKE:-}" ]; then
    [ -n "$(cmake_version "$HOROVOD_CMAKE")" ] || die "HOROVOD_CMAKE=$HOROVOD_CMAKE does not run: unset it, or point it at a cmake 3.13 - 3.31"
    echo "$HOROVOD_CMAKE"; return
  fi
  local system; system=$(command -v cmake 2>/dev/null || true)
  if [ -n "$system" ] && cmake_fits "$system"; then echo "$system"; return; fi
  if ! cmake_fits "$VENV/bin/cmake"; then
    # PyPI's newest cmake is 4.x, which cannot configure Gloo: hence the upper bound.
    log "installing '$CMAKE_SPEC' into $VENV (system cmake: ${system:-none}${system:+ $(cmake_version "$system")})" >&2
    "$VENV/bin/pip" install -q --disable-pip-version-check "$CMAKE_SPEC" 2>&1 | grep -v '^WARNING: Location' >&2 || true
    cmake_fits "$VENV/bin/cmake" || die "pip could not install '$CMAKE_SPEC' into $VENV: run '$VENV/bin/pip install \"$CMAKE_SPEC\"' to see why"
  fi
  echo "$VENV/bin/cmake"
}

has_nvidia_gpu() {  # nvidia-smi lists a GPU, or the driver made its first device node
  { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; } \
    || [ -e "${SETUP_NVIDIA_DEVICE:-/dev/nvidia0}" ]
}

resolve_gpu_choice() {  # settles HOROVOD_GPU_OPERATIONS: asked for, implied by TF_EXTRA, or the last build's
  local ops=${HOROVOD_GPU_OPERATIONS:-}
  if [ "${HOROVOD_CPU_ONLY:-}" = 1 ]; then
    [ -z "$ops" ] || die "HOROVOD_CPU_ONLY=1 and HOROVOD_GPU_OPERATIONS=$ops contradict each other: unset one"
    return
  fi
  if [ -z "$ops" ] && [ "${TF_EXTRA:-}" = and-cuda ]; then
    ops=NCCL; log "TF_EXTRA=and-cuda: building horovod with HOROVOD_GPU_OPERATIONS=NCCL"
  elif [ -z "$ops" ] && [ -z "${TF_EXTRA:-}" ] && [ -f "$GPU_CHOICE" ]; then
    case "$(cat "$GPU_CHOICE")" in
      NCCL|MPI) ops=$(cat "$GPU_CHOICE"); log "HOROVOD_GPU_OPERATIONS=$ops, as for the last build ($GPU_CHOICE)";;
      cpu) export HOROVOD_CPU_ONLY=1; return;;
    esac
  fi
  case "$ops" in
    ""|NCCL|MPI) ;;
    *) die "HOROVOD_GPU_OPERATIONS=$ops is not one horovod knows: set NCCL (or MPI, with a CUDA-aware MPI)";;
  esac
  if [ -n "$ops" ]; then export HOROVOD_GPU_OPERATIONS=$ops; fi
}

gpu_guard() {  # a machine with NVIDIA GPUs never gets a CPU-only horovod unless asked for
  [ -z "${HOROVOD_GPU_OPERATIONS:-}" ] || return 0
  has_nvidia_gpu || return 0
  [ "${HOROVOD_CPU_ONLY:-}" = 1 ] && { log "HOROVOD_CPU_ONLY=1: building horovod for CPU on a machine with NVIDIA GPUs"; return 0; }
  die "this machine has NVIDIA GPUs but no GPU build was asked for: run 'TF_EXTRA=and-cuda HOROVOD_GPU_OPERATIONS=NCCL make setup' (docs/GPU.md), or 'HOROVOD_CPU_ONLY=1 make setup' to build for CPU anyway"
}

max_gcc_for_cuda() {  # CUDA MAJOR.MINOR -> newest GCC major its nvcc accepts (docs/GPU.md); empty past the table
  local major=${1%%.*} minor=${1#*.}
  case "$major" in
    11) if [ "$minor" -eq 0 ]; then echo 9; elif [ "$minor" -le 3 ]; then echo 10; else echo 11; fi;;
    12) if [ "$minor" -le 3 ]; then echo 12; elif [ "$minor" -le 7 ]; then echo 13; else echo 14; fi;;
    13) if [ "$minor" -eq 0 ]; then echo 15; fi;;
  esac
}

NO_TOOLKIT_IN_TF="TensorFlow's CUDA wheels (tensorflow[and-cuda]) carry no nvcc and no static cudart and cannot build horovod"

find_nvcc() {  # prints the nvcc horovod's build will use: HOROVOD_CUDA_HOME's, PATH's, or DEFAULT_CUDA_HOME's
  if [ -n "${HOROVOD_CUDA_HOME:-}" ]; then
    [ -x "$HOROVOD_CUDA_HOME/bin/nvcc" ] || die "HOROVOD_CUDA_HOME=$HOROVOD_CUDA_HOME has no bin/nvcc: point it at a CUDA toolkit; $NO_TOOLKIT_IN_TF"
    echo "$HOROVOD_CUDA_HOME/bin/nvcc"
  elif command -v nvcc >/dev/null 2>&1; then
    command -v nvcc
  elif [ -x "$DEFAULT_CUDA_HOME/bin/nvcc" ]; then
    echo "$DEFAULT_CUDA_HOME/bin/nvcc"
  else
    die "no nvcc (PATH, HOROVOD_CUDA_HOME, $DEFAULT_CUDA_HOME): the GPU build needs a CUDA 12 toolkit: 'module load cuda' on a cluster, NVIDIA's cuda-toolkit-12-5 package, or set HOROVOD_CUDA_HOME; $NO_TOOLKIT_IN_TF"
  fi
}

check_cuda_toolkit() {  # check_cuda_toolkit NVCC -> prints the CUDA version; dies without a static cudart
  local nvcc=$1 home version
  home=$(cd "$(dirname "$nvcc")/.." && pwd)
  version=$("$nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p' | head -n 1)
  [ -n "$version" ] || die "'$nvcc --version' names no CUDA release: is $nvcc a CUDA compiler? Set HOROVOD_CUDA_HOME to a CUDA toolkit"
  [ "${version%%.*}" -ge 11 ] || die "$nvcc is CUDA $version; TensorFlow 2.18 needs CUDA 12: load or install a CUDA 12 toolkit"
  # horovod links the CUDA runtime statically (CMAKE_CUDA_RUNTIME_LIBRARY Static); Debian's
  # and Ubuntu's packaged toolkits keep it in the multiarch folder.
  first_file libcudart_static.a "$home/lib64" "$home/lib" "$home"/targets/*/lib "/usr/lib/$(multiarch)" >/dev/null \
    || die "$home has nvcc but no libcudart_static.a, which horovod links: install the full CUDA toolkit (cuda-cudart-dev) or set HOROVOD_CUDA_HOME to one; $NO_TOOLKIT_IN_TF"
  echo "$version"
}

check_host_compiler() {  # check_host_compiler CUDA_VERSION: the GCC horovod's build uses must be one nvcc accepts
  local cxx=${CXX:-c++} gcc max
  command -v "$cxx" >/dev/null 2>&1 || cxx=g++
  command -v "$cxx" >/dev/null 2>&1 || die "no C++ compiler ($cxx): install g++ or set CXX"
  if "$cxx" --version 2>/dev/null | grep -qi clang; then log "host compiler $cxx is clang: GCC range check skipped" >&2; return; fi
  gcc=$("$cxx" -dumpversion 2>/dev/null | cut -d. -f1)
  max=$(max_gcc_for_cuda "$1")
  if [ -z "$max" ]; then log "CUDA $1 is newer than the GCC table in setup.sh: GCC range check skipped" >&2; return; fi
  [ "$gcc" -le "$max" ] || die "nvcc $1 accepts GCC up to $max but $cxx is GCC $gcc: install g++-$max and run with CXX=g++-$max CC=gcc-$max, or use a CUDA toolkit that supports GCC $gcc"
  echo "GCC $gcc"
}

multiarch() {  # Debian's library folder name, x86_64-linux-gnu on PCs
  gcc -print-multiarch 2>/dev/null | grep . || uname -m | sed 's/$/-linux-gnu/'
}

first_file() {  # first_file NAME DIR... -> the first DIR holding NAME
  local name=$1 dir; shift
  for dir in "$@"; do [ -e "$dir/$name" ] && { echo "$dir"; return 0; }; done
  return 1
}

check_nccl() {  # check_nccl CUDA_HOME -> "nccl.h in DIR, LIB": what horovod's FindNCCL will find
  local home=$1 inc lib link dirs=() names=()
  if [ -n "${HOROVOD_NCCL_INCLUDE:-}" ]; then dirs=("$HOROVOD_NCCL_INCLUDE")
  elif [ -n "${HOROVOD_NCCL_HOME:-}" ]; then dirs=("$HOROVOD_NCCL_HOME/include")
  else dirs=("$home/include" /usr/include /usr/local/include "$DEFAULT_CUDA_HOME/include"); fi
  inc=$(first_file nccl.h "${dirs[@]}") \
    || die "no nccl.h in ${dirs[*]}: install NCCL (libnccl-dev from NVIDIA's repository, or 'module load nccl') or set HOROVOD_NCCL_HOME (or HOROVOD_NCCL_INCLUDE and HOROVOD_NCCL_LIB); the nvidia-nccl-cu12 wheel has it under site-packages/nvidia/nccl/include"
  if [ -n "${HOROVOD_NCCL_LIB:-}" ]; then dirs=("$HOROVOD_NCCL_LIB")
  elif [ -n "${HOROVOD_NCCL_HOME:-}" ]; then dirs=("$HOROVOD_NCCL_HOME/lib" "$HOROVOD_NCCL_HOME/lib64")
  else dirs=("$home/lib64" "$home/lib" "/usr/lib/$(multiarch)" /usr/lib64 /usr/lib /usr/local/lib); fi
  link=$(printf '%s' "${HOROVOD_NCCL_LINK:-}" | tr '[:upper:]' '[:lower:]')
  # Like horovod's FindNCCL: static unless told SHARED, falling back to shared unless told STATIC.
  case "$link" in shared) names=(libnccl.so);; static) names=(libnccl_static.a);; *) names=(libnccl_static.a libnccl.so);; esac
  local name
  for name in "${names[@]}"; do
    lib=$(first_file "$name" "${dirs[@]}") && { echo "nccl.h in $inc, $lib/$name"; return; }
  done
  lib=$(first_file libnccl.so.2 "${dirs[@]}") \
    && die "$lib has libnccl.so.2 only (as NCCL's wheel does): set HOROVOD_NCCL_LINK=SHARED and HOROVOD_NCCL_LIB to a folder of yours holding 'ln -s $lib/libnccl.so.2 libnccl.so'"
  die "no ${names[*]} in ${dirs[*]}: install NCCL (libnccl2 and libnccl-dev) or set HOROVOD_NCCL_HOME or HOROVOD_NCCL_LIB (HOROVOD_NCCL_LINK=SHARED for a libnccl.so)"
}

check_cc_list() {  # check_cc_list CUDA_VERSION: HOROVOD_BUILD_CUDA_CC_LIST as nvcc will take it
  local list=${HOROVOD_BUILD_CUDA_CC_LIST:-} cc
  [ -n "$list" ] || return 0
  [[ "$list" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "HOROVOD_BUILD_CUDA_CC_LIST=$list: give compute capabilities as digits, comma-separated, e.g. 80,90"
  if [ "${1%%.*}" -ge 13 ]; then
    for cc in ${list//,/ }; do
      [ "$cc" -ge 75 ] || die "CUDA $1 builds for compute capability 75 and up: drop $cc from HOROVOD_BUILD_CUDA_CC_LIST, or use a CUDA 12 toolkit"
    done
  fi
}

nccl_from_venv() {  # NCCL set to the venv's own nvidia-nccl-cu12 wheel, which tensorflow[and-cuda] installs
  case "${HOROVOD_NCCL_INCLUDE:-}${HOROVOD_NCCL_HOME:-}" in "$VENV"/*) return 0;; *) return 1;; esac
}

PREFLIGHT_DONE=
gpu_preflight() {  # [early] the GPU build's needs, each refused in one line before anything is built
  [ -n "${HOROVOD_GPU_OPERATIONS:-}" ] && [ -z "$PREFLIGHT_DONE" ] || return 0
  local nvcc home version compiler nccl= later=
  nvcc=$(find_nvcc)
  home=$(cd "$(dirname "$nvcc")/.." && pwd)
  version=$(check_cuda_toolkit "$nvcc")
  compiler=$(check_host_compiler "$version")
  check_cc_list "$version"
  # Before TensorFlow's wheels are installed, an NCCL taken from them cannot be checked yet.
  if [ "${1:-}" = early ] && nccl_from_venv; then later=1; nccl="NCCL from $VENV checked once TensorFlow is installed"
  elif [ "$HOROVOD_GPU_OPERATIONS" = NCCL ]; then nccl=$(check_nccl "$home"); fi
  if [ -n "${HOROVOD_CUDA_INCLUDE:-}${HOROVOD_CUDA_LIB:-}" ]; then
    log "NOTE: horovod $(pinned horovod) reads neither HOROVOD_CUDA_INCLUDE nor HOROVOD_CUDA_LIB: it finds CUDA from nvcc ($nvcc)"
  fi
  log "GPU preflight passed: CUDA $version ($nvcc)${compiler:+, $compiler}${nccl:+, $nccl}, kernels for ${HOROVOD_BUILD_CUDA_CC_LIST:-every compute capability nvcc knows}"
  [ -n "$later" ] || PREFLIGHT_DONE=1
}

horovod_problem() {  # prints why horovod needs a (re)build, nothing when it is good
  "$VENV/bin/python" "$ROOT/scripts/check_horovod.py" --want "$(pinned horovod)" \
    --gpu-operations "${HOROVOD_GPU_OPERATIONS:-}" || true
}

ensure_horovod() {
  local why cmake; why=$(horovod_problem)
  if [ -z "$why" ]; then
    log "horovod $(pinned horovod) already built against the installed TensorFlow, with MPI, Gloo${HOROVOD_GPU_OPERATIONS:+ and $HOROVOD_GPU_OPERATIONS}"
    return
  fi
  gpu_preflight
  cmake=$(choose_cmake)
  log "building horovod $(pinned horovod) from source ($why) with $cmake $(cmake_version "$cmake")${HOROVOD_GPU_OPERATIONS:+ and HOROVOD_GPU_OPERATIONS=$HOROVOD_GPU_OPERATIONS}; about 2-3 minutes on 2 cores for CPU"
  "$VENV/bin/pip" uninstall -q -y horovod >/dev/null 2>&1 || true
  # No build isolation: the build must see the pinned TensorFlow in this venv.
  # No cache: a cached wheel may have been built against another TensorFlow.
  # CMAKE_POLICY_VERSION_MINIMUM lets a cmake 4 of the user's (HOROVOD_CMAKE) configure Gloo; 3.x ignores it.
  PATH="$VENV/bin:$PATH" HOROVOD_CMAKE="$cmake" CMAKE_POLICY_VERSION_MINIMUM=${CMAKE_POLICY_VERSION_MINIMUM:-3.5} \
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    "$VENV/bin/pip" install --no-cache-dir --no-build-isolation --disable-pip-version-check \
      "horovod==$(pinned horovod)" > "$VENV/horovod-build.log" 2>&1 \
    || die "horovod build failed; the full log is $VENV/horovod-build.log (tail: $(tail -n 3 "$VENV/horovod-build.log" | tr '\n' ' '))"
  why=$(horovod_problem)
  [ -z "$why" ] || die "horovod built but is unusable: $why (log: $VENV/horovod-build.log)"
  echo "${HOROVOD_GPU_OPERATIONS:-cpu}" > "$GPU_CHOICE"
  "$VENV/bin/horovodrun" --check-build
}

project_problem() {  # prints why the project needs (re)installing, nothing when .venv has it editable from ROOT
  # -I: the checkout's own folder off sys.path, so only the venv's record of the install is read.
  "$VENV/bin/python" -I - "$ROOT" <<'EOF' || echo "the venv's record of the install could not be read"
import importlib.metadata, json, pathlib, sys
try:
    url = json.loads(importlib.metadata.distribution("medimg").read_text("direct_url.json") or "{}")
except importlib.metadata.PackageNotFoundError:
    sys.exit(print("medimg is not installed"))
if url.get("url") != pathlib.Path(sys.argv[1]).as_uri() or not url.get("dir_info", {}).get("editable"):
    print(f"medimg is installed from {url.get('url', 'an unknown place')}, not editable from {sys.argv[1]}")
EOF
}

ensure_project() {
  local want why
  want=$( (cat "$ROOT/pyproject.toml"; echo "$ROOT") | sha256sum | cut -d' ' -f1)
  why=$(project_problem)
  if [ -z "$why" ] && [ -f "$PROJECT_STAMP" ] && [ "$(cat "$PROJECT_STAMP")" = "$want" ]; then
    log "project installed editable from $ROOT, pyproject.toml unchanged"
    return
  fi
  # pyproject.toml's build-system: setuptools 64 brought editable wheels (PEP 660).
  "$VENV/bin/python" -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 64)' 2>/dev/null || {
    log "installing setuptools>=64 into $VENV (editable installs need it)"
    "$VENV/bin/pip" install -q --disable-pip-version-check 'setuptools>=64' 2>&1 | grep -v '^WARNING: Location' || true
  }
  # --no-deps: nothing may replace the pinned stack; --no-build-isolation: the venv's setuptools, no download.
  log "installing the project editable from $ROOT (${why:-pyproject.toml changed})"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT" \
    > "$VENV/project-install.log" 2>&1 \
    || die "pip install -e $ROOT failed; the log is $VENV/project-install.log (tail: $(tail -n 3 "$VENV/project-install.log" | tr '\n' ' '))"
  why=$(project_problem)
  [ -z "$why" ] || die "the project installed but $why (log: $VENV/project-install.log)"
  echo "$want" > "$PROJECT_STAMP"
}

main() {
  local t0=$SECONDS
  case "${1:-}" in
    "") ;;
    --preflight)
      resolve_gpu_choice; gpu_guard; gpu_preflight
      [ -n "${HOROVOD_GPU_OPERATIONS:-}" ] || log "CPU build: no GPU preflight needed"
      return;;
    --which-cmake)
      ensure_system_packages; ensure_venv
      local cmake; cmake=$(choose_cmake)
      log "cmake for the horovod build: $cmake $(cmake_version "$cmake")"
      return;;
    *) die "unknown argument '$1': usage: scripts/setup.sh [--preflight | --which-cmake]";;
  esac
  resolve_gpu_choice
  gpu_guard  # before anything is installed: a GPU machine says which build it wants
  ensure_system_packages
  # A fresh venv will surely build horovod: check the GPU build's needs before TensorFlow's download.
  [ -x "$VENV/bin/horovodrun" ] || gpu_preflight early
  ensure_venv
  ensure_requirements
  ensure_horovod  # fails unless horovodrun --check-build ticks TensorFlow, MPI, Gloo (and NCCL on the GPU path)
  ensure_project
  log "environment ready in $((SECONDS - t0)) s: activate with 'source $VENV/bin/activate'"
}

main "$@"
