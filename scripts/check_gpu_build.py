"""Asserts that a horovod built with HOROVOD_GPU_OPERATIONS=NCCL has CUDA and NCCL in it (no GPU needed).

    LD_LIBRARY_PATH=<nccl lib>:<cuda lib>:<tensorflow dir> \\
        venv/bin/python scripts/check_gpu_build.py --site-packages SITE --build-log build.log --want 0.28.1

Run by scripts/check_gpu_build.sh after its build. Prints one ``ok:`` line per check, or the
first failure (exit 1). The checks:
  1. the build log shows nvcc and NCCL found, and kernels for every HOROVOD_BUILD_CUDA_CC_LIST entry;
  2. every library and symbol of horovod's TensorFlow op library resolves (``ldd -r``); only the
     CUDA driver (``libcuda.so.1``, which only a GPU machine has) may be missing. The line also
     says how many of its CUDA runtime symbols TensorFlow's cudart stub provides;
  3. with every symbol bound at load (``LD_BIND_NOW=1``), ``import horovod.tensorflow`` works and
     ``hvd.cuda_built()`` and ``hvd.nccl_built()`` are true;
  4. scripts/check_horovod.py passes with ``--gpu-operations NCCL`` (``horovodrun --check-build``
     ticks TensorFlow, MPI, Gloo and NCCL; the build matches the installed TensorFlow).
"""
import argparse
import glob
import importlib.util
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# The driver: installed with the NVIDIA kernel module, never by a toolkit or a wheel.
DRIVER_LIBS = {"libcuda.so.1"}


class Failed(Exception):
    pass


def check_build_log(log_text, cc_list):
    """nvcc and NCCL were found by CMake and kernels were compiled for each wanted compute capability."""
    if "The CUDA compiler identification is NVIDIA" not in log_text:
        raise Failed("the build log shows no CUDA compiler: CMake did not enable CUDA")
    nccl = re.search(r"Found NCCL \(include: (.*?), library: (.*?)\)", log_text)
    if not nccl:
        raise Failed("the build log shows no 'Found NCCL': NCCL was not compiled in")
    flags = re.search(r"HVD_NVCC_COMPILE_FLAGS = (.*)", log_text)
    built = set(re.findall(r"arch=compute_(\d+)", flags.group(1))) if flags else set()
    missing = [cc for cc in cc_list if cc not in built]
    if missing:
        raise Failed(f"no kernels for compute capability {', '.join(missing)} (nvcc flags: {flags and flags.group(1)})")
    return f"CUDA and NCCL compiled in (NCCL library {nccl.group(2)}), kernels for sm_{', sm_'.join(cc_list)}"


def ldd_problems(ldd_output):
    """Libraries ``not found`` and ``undefined symbol`` names in ``ldd -r`` output."""
    missing = set(re.findall(r"^\s*(\S+) => not found", ldd_output, re.M))
    undefined = set(re.findall(r"undefined symbol: (\S+)", ldd_output))
    return missing, undefined


def symbols(library, which):
    """Dynamic symbol names of ``library``: ``--defined-only`` or ``--undefined-only``."""
    out = subprocess.run(["nm", "-D", which, library], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def check_symbols(op_library, tf_dir):
    out = subprocess.run(["ldd", "-r", op_library], capture_output=True, text=True)
    missing, undefined = ldd_problems(out.stdout + out.stderr)
    if missing - DRIVER_LIBS:
        raise Failed(f"{op_library} needs {', '.join(sorted(missing - DRIVER_LIBS))}, not found on LD_LIBRARY_PATH")
    if undefined:
        raise Failed(f"{len(undefined)} symbol(s) of {op_library} resolve nowhere: {', '.join(sorted(undefined)[:5])}")
    # The CUDA runtime calls bind to the first library that defines them: TensorFlow's cudart
    # stub, which loads TensorFlow's own libcudart at run time; worth knowing, so said.
    cuda_calls = {s for s in symbols(op_library, "--undefined-only") if s.startswith(("cuda", "__cuda"))}
    framework = os.path.join(tf_dir, "libtensorflow_framework.so.2")
    in_tf = cuda_calls & symbols(framework, "--defined-only") if os.path.exists(framework) else set()
    return (f"{os.path.basename(op_library)}: every library and symbol resolves "
            f"(not found: {', '.join(sorted(missing)) or 'none'}); {len(in_tf)} of its {len(cuda_calls)} "
            f"CUDA runtime symbols come from TensorFlow's libtensorflow_framework.so.2")


def check_import():
    code = ("import horovod.tensorflow as hvd; import sys; "
            "sys.exit(0 if hvd.cuda_built() and hvd.nccl_built() else 3)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, LD_BIND_NOW="1", TF_CPP_MIN_LOG_LEVEL="3"))
    if proc.returncode == 3:
        raise Failed("horovod.tensorflow imports, but hvd.cuda_built() or hvd.nccl_built() is false")
    if proc.returncode != 0:
        raise Failed(f"import horovod.tensorflow failed with every symbol bound: {proc.stderr.strip().splitlines()[-1:]}")
    return "import horovod.tensorflow with LD_BIND_NOW=1: hvd.cuda_built() and hvd.nccl_built() are true"


def check_horovodrun(want, site_packages):
    spec = importlib.util.spec_from_file_location("check_horovod", os.path.join(HERE, "check_horovod.py"))
    check_horovod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_horovod)
    why = check_horovod.problem(want, site_packages, "NCCL")
    if why:
        raise Failed(why)
    return "horovodrun --check-build ticks TensorFlow, MPI, Gloo and NCCL"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site-packages", required=True)
    parser.add_argument("--build-log", required=True)
    parser.add_argument("--want", required=True, help="pinned horovod version")
    args = parser.parse_args()
    cc_list = [cc for cc in os.environ.get("HOROVOD_BUILD_CUDA_CC_LIST", "").split(",") if cc]
    op_libraries = glob.glob(os.path.join(args.site_packages, "horovod", "tensorflow", "mpi_lib*.so"))
    try:
        with open(args.build_log, encoding="utf-8", errors="replace") as fh:
            print("ok:", check_build_log(fh.read(), cc_list))
        if not op_libraries:
            raise Failed(f"no horovod/tensorflow/mpi_lib*.so in {args.site_packages}")
        print("ok:", check_symbols(op_libraries[0], os.path.join(args.site_packages, "tensorflow")))
        print("ok:", check_import())
        print("ok:", check_horovodrun(args.want, args.site_packages))
    except Failed as err:
        print(f"FAILED: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
