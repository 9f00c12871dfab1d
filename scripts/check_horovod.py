"""Is the installed horovod usable? Prints why not (one line, exit 1) or nothing (exit 0).

    .venv/bin/python scripts/check_horovod.py --want 0.28.1
    .venv/bin/python scripts/check_horovod.py --want 0.28.1 --gpu-operations NCCL   # GPU build

Checks, in order: horovod installed at the wanted version; its metadata.json
names the TensorFlow now installed (a wheel built against another TensorFlow
raises HorovodVersionMismatchError at import); ``horovodrun --check-build``
ticks TensorFlow, MPI and Gloo, and NCCL too when the GPU build was asked for
(``--gpu-operations NCCL``, what ``HOROVOD_GPU_OPERATIONS`` says): a CPU-only
build on a GPU machine is rebuilt. Used by scripts/setup.sh to decide a rebuild.
"""
import argparse
import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import sysconfig

REQUIRED_PARTS = ("TensorFlow", "MPI", "Gloo")


def missing_parts(check_build_output, gpu_operations=""):
    """Required parts not ticked ``[X]`` in ``horovodrun --check-build`` output."""
    ticked = set(re.findall(r"\[X\]\s+(\w+)", check_build_output))
    required = REQUIRED_PARTS + ((gpu_operations.upper(),) if gpu_operations else ())
    return [p for p in required if p not in ticked]


def metadata_problem(site_packages, tf_version):
    meta = os.path.join(site_packages, "horovod", "metadata.json")
    if not os.path.isfile(meta):
        return "horovod is not installed"
    with open(meta, encoding="utf-8") as fh:
        built = json.load(fh).get("tensorflow")
    if built != tf_version:
        return f"horovod was built against TensorFlow {built}, TensorFlow {tf_version} is installed"
    return None


def problem(want, site_packages, gpu_operations=""):
    try:
        tf_version = md.version("tensorflow")
    except md.PackageNotFoundError:
        return "tensorflow is not installed"
    why = metadata_problem(site_packages, tf_version)
    if why:
        return why
    have = md.version("horovod")
    if have != want:
        return f"horovod {have} is installed, {want} is pinned"
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    proc = subprocess.run([horovodrun, "--check-build"], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"horovodrun --check-build failed: {proc.stderr.strip().splitlines()[-1:]}"
    missing = missing_parts(proc.stdout, gpu_operations)
    if missing:
        return f"horovod lacks {', '.join(missing)} support"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--want", required=True, help="pinned horovod version")
    parser.add_argument("--site-packages", default=sysconfig.get_paths()["purelib"])
    parser.add_argument("--gpu-operations", default="", help="NCCL when horovod must do GPU allreduce")
    args = parser.parse_args()
    why = problem(args.want, args.site_packages, args.gpu_operations)
    if why:
        print(why)
        sys.exit(1)


if __name__ == "__main__":
    main()
