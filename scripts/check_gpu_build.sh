#!/usr/bin/env bash
# Usage: scripts/check_gpu_build.sh [DIR]     (make check-gpu-build; DIR defaults to /tmp/medimg-gpu-build)
#
# Proves on a machine without a GPU that horovod's GPU build compiles and links:
#   1. a throwaway venv in DIR/venv with the project's pinned TensorFlow and tf-keras, cmake < 4,
#      the CUDA 13 toolkit from PyPI (nvcc, cicc, static cudart, headers) and
#      NCCL's wheel (header and libnccl.so.2);
#   2. setup.sh's GPU preflight passes on that toolkit;
#   3. horovod's sdist is unpacked; its CMAKE_CUDA_STANDARD 11 is raised to 17 only
#      if this nvcc refuses horovod's CUDA source as C++11 (a compile of that one
#      file decides); then it is built with HOROVOD_GPU_OPERATIONS=NCCL;
#   4. CUDA and NCCL are compiled in, every symbol of the TensorFlow op library
#      resolves but the driver's, horovodrun --check-build ticks NCCL and
#      hvd.nccl_built() is true.
# It proves compilation only: running the result needs a CUDA 13 driver (docs/GPU.md).
# DIR is reused on a re-run (the venv is kept, horovod is rebuilt); the log is DIR/build.log.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-/tmp/medimg-gpu-build}
PYTHON=${PYTHON:-python3}
MARK=.medimg-gpu-build
# The CUDA 13 set from PyPI: one release of each part, so a re-run gets the same toolkit.
CUDA_WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.96
             nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85)
NCCL_WHEEL=nvidia-nccl-cu12==2.21.5  # the NCCL TensorFlow 2.18.1's and-cuda extra installs
CC_LIST=75,80,90                     # Turing, Ampere, Hopper: CUDA 13 builds for sm_75 and up

log() { printf '[check-gpu-build] %s\n' "$*"; }
die() { printf '[check-gpu-build] FAILED: %s\n' "$*" >&2; exit 1; }

pinned() {  # pinned NAME -> version pinned in requirements.txt
  sed -n "s/^$1==\([^ ;#]*\).*/\1/p" "$ROOT/requirements.txt" | head -n 1
}

prepare_dir() {
  if [ -e "$DIR" ] && [ ! -e "$DIR/$MARK" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
    die "$DIR exists and was not made by this check: give a new or empty folder (scripts/check_gpu_build.sh DIR)"
  fi
  mkdir -p "$DIR" || die "cannot create $DIR: give a writable folder (scripts/check_gpu_build.sh DIR)"
  touch "$DIR/$MARK"
}

install_toolchain() {
  [ -x "$DIR/venv/bin/python" ] || "$PYTHON" -m venv "$DIR/venv" || die "$PYTHON -m venv failed: set PYTHON=python3.11"
  # tf-keras too: with TF_USE_LEGACY_KERAS=1 (the project's setting) horovod.tensorflow imports it.
  log "installing tensorflow==$(pinned tensorflow), tf-keras==$(pinned tf-keras), cmake<4, ${CUDA_WHEELS[*]} $NCCL_WHEEL into $DIR/venv"
  "$DIR/venv/bin/pip" install -q --disable-pip-version-check "tensorflow==$(pinned tensorflow)" \
    "tf-keras==$(pinned tf-keras)" "cmake>=3.13,<4" "${CUDA_WHEELS[@]}" "$NCCL_WHEEL" >> "$DIR/build.log" 2>&1 \
    || die "pip install failed (tail of $DIR/build.log: $(tail -n 2 "$DIR/build.log" | tr '\n' ' '))"
  SITE=$("$DIR/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  CUDA_HOME=$SITE/nvidia/cu13
  NCCL_HOME=$SITE/nvidia/nccl
  TF_LIB=$SITE/tensorflow
  [ -x "$CUDA_HOME/bin/nvcc" ] || die "$CUDA_HOME/bin/nvcc missing: the CUDA 13 wheels changed layout"
  # nvcc.profile links from lib64, the wheels install lib: the layout of a system toolkit.
  [ -e "$CUDA_HOME/lib64" ] || ln -s lib "$CUDA_HOME/lib64"
  # CMake's FindCUDAToolkit looks for an unversioned libcudart.so; the wheel ships libcudart.so.13 only.
  ln -sfn libcudart.so.13 "$CUDA_HOME/lib/libcudart.so"
  # NCCL's wheel has libnccl.so.2 only: an unversioned link of our own for the shared link.
  mkdir -p "$DIR/nccl-lib"
  ln -sfn "$NCCL_HOME/lib/libnccl.so.2" "$DIR/nccl-lib/libnccl.so"
}

gpu_env() {  # the environment of the GPU build, as a user would set it
  export HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_CUDA_HOME="$CUDA_HOME" HOROVOD_BUILD_CUDA_CC_LIST="$CC_LIST"
  export HOROVOD_NCCL_INCLUDE="$NCCL_HOME/include" HOROVOD_NCCL_LIB="$DIR/nccl-lib" HOROVOD_NCCL_LINK=SHARED
}

unpack_and_patch() {  # horovod's sdist, its CUDA standard raised only if this nvcc refuses C++11
  local version; version=$(pinned horovod)
  SRC=$DIR/horovod-$version
  "$DIR/venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$DIR" "horovod==$version" >> "$DIR/build.log" 2>&1 || die "cannot download the horovod $version sdist"
  rm -rf "$SRC"  # our own unpacked tree from a previous run, never the user's
  tar -xzf "$DIR/horovod-$version.tar.gz" -C "$DIR"
  local cmakelists=$SRC/horovod/common/ops/cuda/CMakeLists.txt kernels=$SRC/horovod/common/ops/cuda/cuda_kernels.cu
  grep -q '^set(CMAKE_CUDA_STANDARD 11)$' "$cmakelists" || die "$cmakelists no longer sets CMAKE_CUDA_STANDARD 11: review this check"
  # horovod compiles its one CUDA source as C++11; newer CUDA headers may require C++17.
  if "$CUDA_HOME/bin/nvcc" -ccbin "${CXX:-c++}" -std=c++11 -gencode "arch=compute_${CC_LIST%%,*},code=sm_${CC_LIST%%,*}" \
       -DHAVE_CUDA=1 -DHAVE_GPU=1 -I"$SRC/horovod" -c "$kernels" -o "$DIR/cuda_kernels-c++11.o" >> "$DIR/build.log" 2>&1; then
    log "nvcc $(nvcc_release) compiles $(basename "$kernels") as C++11: CMAKE_CUDA_STANDARD 11 left as released"
  else
    sed -i 's/^set(CMAKE_CUDA_STANDARD 11)$/set(CMAKE_CUDA_STANDARD 17)/' "$cmakelists"
    log "nvcc $(nvcc_release) refuses $(basename "$kernels") as C++11 (build.log): patched $cmakelists to CMAKE_CUDA_STANDARD 17"
  fi
}

nvcc_release() { "$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\), V\([0-9.]*\).*/\2/p'; }

build() {
  log "building horovod $(pinned horovod) with NCCL for sm_${CC_LIST//,/, sm_} (log: $DIR/build.log)"
  local t0=$SECONDS
  "$DIR/venv/bin/pip" uninstall -q -y horovod >/dev/null 2>&1 || true
  # No build isolation: the build must see the venv's TensorFlow; one job a core.
  PATH="$DIR/venv/bin:$PATH" MAKEFLAGS=${MAKEFLAGS:--j$(nproc)} \
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    "$DIR/venv/bin/pip" install -v --no-cache-dir --no-build-isolation --disable-pip-version-check \
      "$SRC" >> "$DIR/build.log" 2>&1 \
    || die "horovod build failed after $((SECONDS - t0)) s (tail of $DIR/build.log: $(tail -n 3 "$DIR/build.log" | tr '\n' ' '))"
  log "horovod built in $((SECONDS - t0)) s"
}

main() {
  local t0=$SECONDS
  prepare_dir
  : > "$DIR/build.log"
  install_toolchain
  gpu_env
  log "setup.sh's GPU preflight on this toolkit"
  bash "$ROOT/scripts/setup.sh" --preflight || die "setup.sh --preflight refused the CUDA 13 toolkit"
  unpack_and_patch
  build
  PATH="$DIR/venv/bin:$PATH" LD_LIBRARY_PATH="$NCCL_HOME/lib:$CUDA_HOME/lib:$TF_LIB" \
    "$DIR/venv/bin/python" "$ROOT/scripts/check_gpu_build.py" --site-packages "$SITE" --build-log "$DIR/build.log" \
    --want "$(pinned horovod)" || die "the GPU build is incomplete (above)"
  log "passed in $((SECONDS - t0)) s: horovod $(pinned horovod) compiled with CUDA and NCCL in $DIR/venv"
}

main "$@"
