"""GPU acceptance check: run on a GPU node after `TF_EXTRA=and-cuda HOROVOD_GPU_OPERATIONS=NCCL make setup`.

    make gpu-check                                   # every GPU of the node
    .venv/bin/python scripts/gpu_check.py --gpus 4 --out runs/gpu-check

Checks, each a row of <out>/gpu_check.md, and exits 1 if any fails (2 for bad arguments or no GPU at all):
1. the build: TensorFlow built with CUDA and seeing --gpus GPUs, horovod built with NCCL;
2. benchmark mode of both trainers on 1 and --gpus GPUs, float32 and --precision auto (random tensors,
   ``benchmarks/scaling.py``), and that auto picked bfloat16 on compute capability 8.0 and later;
3. a 2-epoch training of CheXNet on the synthetic demo set on --gpus GPUs: 1 epoch, then --resume to 2;
4. the refusals: --deterministic ResUNet++ on a GPU, float16 with --grad-accum-steps, more ranks than GPUs.

The table gives the GPU model, driver and CUDA, images/s per GPU and the scaling efficiency per precision.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from runtime.metrics import read_events  # noqa: E402  (needs ROOT on sys.path; no TensorFlow)

NO_GPU = ("no NVIDIA GPU on this node ({why}): run the check on a GPU node, after "
          "TF_EXTRA=and-cuda HOROVOD_GPU_OPERATIONS=NCCL make setup")


def fail(message, status=2):
    print(f"gpu_check: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpus", type=int, default=0, help="GPUs to use, 1-64 (default: every GPU nvidia-smi lists)")
    p.add_argument("--out", default=os.path.join("runs", time.strftime("gpu-check-%Y%m%d-%H%M%S")),
                   help="a new folder for the runs, logs and gpu_check.md")
    p.add_argument("--steps", type=int, default=30, help="timed benchmark steps per run, 5-1000 (default 30)")
    args = p.parse_args(argv)
    if args.gpus and not 1 <= args.gpus <= 64:
        fail(f"--gpus must be between 1 and 64, got {args.gpus}")
    if not 5 <= args.steps <= 1000:
        fail(f"--steps must be between 5 and 1000, got {args.steps}")
    if os.path.exists(args.out):
        fail(f"--out {args.out} exists: the check writes a folder of its own; pick a new --out")
    args.out = os.path.abspath(args.out)  # the stages run in the project folder
    return args


def node_gpus():
    """[(name, driver)] of nvidia-smi; exits 2 when there is none."""
    if not shutil.which("nvidia-smi"):
        fail(NO_GPU.format(why="nvidia-smi not found"))
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        fail(NO_GPU.format(why="nvidia-smi did not answer within 60 s"))
    gpus = [tuple(v.strip() for v in line.split(",", 1)) for line in out.stdout.splitlines() if "," in line]
    if out.returncode or not gpus:
        fail(NO_GPU.format(why=f"nvidia-smi exited {out.returncode}: {out.stderr.strip()[:200] or 'no GPU listed'}"))
    return gpus


BUILD_PROBE = """
import json, runtime, tensorflow as tf, horovod, horovod.tensorflow as hvd
hvd.init()
gpus = tf.config.list_physical_devices("GPU")
cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") if gpus else None
print(json.dumps({"tf_cuda": tf.test.is_built_with_cuda(), "tf_gpus": len(gpus), "cc": cc,
                  "cuda": tf.sysconfig.get_build_info().get("cuda_version", ""), "nccl": bool(hvd.nccl_built()),
                  "horovod": horovod.__version__, "tensorflow": tf.__version__}))
"""


def run(cmd, log, env=None):
    """``cmd`` in ROOT, its output to ``log``; the exit status and the output."""
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env or os.environ).returncode
    with open(log) as fh:
        return rc, fh.read()


def ranks(n, args):
    return ["mpirun", "-np", str(n), "--bind-to", "none", sys.executable, *args] if n > 1 else [sys.executable, *args]


class Checks:
    """Rows of pass/fail with what was seen."""

    def __init__(self):
        self.rows = []

    def add(self, name, ok, seen):
        self.rows.append((name, bool(ok), seen))
        print(f"[{'PASS' if ok else 'FAIL'}] {name}: {seen}", flush=True)
        return ok

    @property
    def failed(self):
        return [name for name, ok, _ in self.rows if not ok]


def check_build(checks, out, gpus):
    rc, text = run([sys.executable, "-c", BUILD_PROBE], os.path.join(out, "build.log"))
    facts = json.loads(text.strip().splitlines()[-1]) if rc == 0 else {}
    checks.add("TensorFlow built with CUDA", facts.get("tf_cuda"), f"CUDA {facts.get('cuda') or '?'}; see build.log")
    checks.add(f"TensorFlow sees {gpus} GPU(s)", facts.get("tf_gpus", 0) >= gpus, f"{facts.get('tf_gpus', 0)} seen")
    checks.add("horovod built with NCCL", facts.get("nccl"), f"horovod {facts.get('horovod', '?')}")
    return facts


def benchmark(checks, out, gpus, precision, steps):
    """benchmarks/scaling.py on 1 and ``gpus`` GPUs; its table rows (weak scaling)."""
    study = os.path.join(out, f"scaling-{precision}")
    cmd = [sys.executable, "benchmarks/scaling.py", "--ranks", ",".join(sorted({"1", str(gpus)})), "--modes", "weak",
           "--repeats", "1", "--precision", precision, "--steps", str(steps), "--warmup-steps", "5",
           "--per-rank-batch", "chexnet=64,segmentation=16", "--workdir", os.path.join(out, "work"), "--out", study]
    rc, _ = run(cmd, os.path.join(out, f"scaling-{precision}.log"))
    records = read_events(os.path.join(study, "metrics.jsonl"), "benchmark") if rc == 0 else []
    checks.add(f"benchmark mode, {precision}, 1 and {gpus} GPU(s)", rc == 0 and records,
               f"{len(records)} runs; see scaling-{precision}.log")
    return records


def auto_policy_check(checks, records, cc):
    want = "mixed_bfloat16" if cc and tuple(cc) >= (8, 0) else "mixed_float16" if cc and tuple(cc) >= (7, 0) \
        else "float32"
    seen = sorted({r["precision"] for r in records})
    checks.add(f"--precision auto picks {want} on compute capability {cc}", seen == [want], f"picked {seen}")


def train_and_resume(checks, out, gpus):
    """Demo-size synthetic ChestX-ray14, CheXNet 1 epoch on ``gpus`` GPUs, then --resume to 2."""
    data, runs = os.path.join(out, "data"), os.path.join(out, "runs")
    for stage in (["./download_dataset.sh", "--synthetic", "1600", "--image-size", "256"], ["./extract_images.sh"],
                  ["./write_tfrecords.sh", "--image-size", "256"]):
        rc, _ = run(["bash", *stage, "--out", data], os.path.join(out, "data.log"))
        if rc:
            return checks.add("synthetic ChestX-ray14", False, f"{stage[0]} exited {rc}; see data.log")
    train = ["-m", "chexnet.train", "--data-dir", os.path.join(data, "chestxray14", "tfrecords"), "--runs-dir", runs,
             "--run-name", "resume", "--preset", "presets/chexnet_demo.json", "--weights", "none"]
    rc1, _ = run(ranks(gpus, [*train, "--epochs", "1"]), os.path.join(out, "train.log"))
    rc2, _ = run(ranks(gpus, [*train, "--epochs", "2", "--resume"]), os.path.join(out, "resume.log"))
    epochs = [e["epoch"] for e in read_events(os.path.join(runs, "resume", "metrics.jsonl"), "epoch")] \
        if os.path.exists(os.path.join(runs, "resume", "metrics.jsonl")) else []
    checks.add(f"CheXNet 1 epoch then --resume to 2 on {gpus} GPU(s)", (rc1, rc2, epochs) == (0, 0, [1, 2]),
               f"exit {rc1}, {rc2}; epochs {epochs}; see train.log, resume.log")


def refusal(checks, out, name, cmd, expected, env=None):
    rc, text = run(cmd, os.path.join(out, f"refusal-{name}.log"), env)
    checks.add(f"refused: {name}", rc == 2 and expected in text, f"exit {rc}; see refusal-{name}.log")


def refusals(checks, out, gpus):
    bench = ["--benchmark", "--synthetic-input", "--benchmark-steps", "2", "--throughput-warmup-steps", "1",
             "--runs-dir", os.path.join(out, "refusals"), "--progress", "none", "--no-tensorboard"]
    refusal(checks, out, "deterministic-resunetpp", [sys.executable, "-m", "segmentation.train", *bench,
                                                     "--model", "resunetpp", "--deterministic"],
            "no deterministic GPU kernel")
    refusal(checks, out, "float16-accumulation", [sys.executable, "-m", "chexnet.train", *bench, "--weights", "none",
                                                  "--precision", "float16", "--grad-accum-steps", "2"],
            "--precision float16 with --grad-accum-steps > 1")
    one_gpu = dict(os.environ, CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0])
    refusal(checks, out, "two-ranks-one-gpu", ["mpirun", "-np", "2", "-x", "CUDA_VISIBLE_DEVICES", sys.executable,
                                               "-m", "chexnet.train", *bench, "--weights", "none"],
            "would share GPU", env=one_gpu)


def scaling_rows(records, precision):
    """A table row per workload: 1-GPU images/s, per-GPU images/s at the most GPUs, scaling efficiency."""
    for workload in sorted({r["workload"] for r in records}):
        mine = {r["ranks"]: r for r in records if r["workload"] == workload}
        one, most = mine.get(1), mine[max(mine)]
        per_gpu = most["images_per_s"] / most["ranks"]
        eff = f"{100 * per_gpu / one['images_per_s']:.0f}%" if one else "n/a"
        yield (f"| {workload} ({most['network']}) | {precision} -> {most['precision']} | "
               f"{one['images_per_s']:.1f} | {most['ranks']} | {per_gpu:.1f} | {eff} |" if one else
               f"| {workload} ({most['network']}) | {precision} -> {most['precision']} | n/a | {most['ranks']} | "
               f"{per_gpu:.1f} | n/a |")


def report(out, gpus, node, facts, tables, checks):
    lines = [f"# GPU acceptance check, {time.strftime('%Y-%m-%d %H:%M')}", "",
             f"{gpus} x {node[0][0]}, driver {node[0][1]}, CUDA {facts.get('cuda') or '?'} (TensorFlow "
             f"{facts.get('tensorflow', '?')}), compute capability {facts.get('cc')}, horovod "
             f"{facts.get('horovod', '?')}; command: `{' '.join(sys.argv)}`.", "",
             "| workload | precision (asked -> ran) | images/s, 1 GPU | GPUs | images/s per GPU | scaling efficiency |",
             "|---|---|---|---|---|---|"]
    for precision, records in tables.items():
        lines += list(scaling_rows(records, precision))
    lines += ["", "| check | result | seen |", "|---|---|---|"]
    lines += [f"| {name} | {'pass' if ok else 'FAIL'} | {seen} |" for name, ok, seen in checks.rows]
    with open(os.path.join(out, "gpu_check.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main(argv=None):
    args = parse_args(argv)
    node = node_gpus()
    gpus = args.gpus or len(node)
    if gpus > len(node):
        fail(f"--gpus {gpus}: nvidia-smi lists {len(node)} GPU(s) on this node")
    os.makedirs(args.out)
    checks, started = Checks(), time.monotonic()
    facts = check_build(checks, args.out, gpus)
    tables = {}
    if not checks.failed:
        tables = {p: benchmark(checks, args.out, gpus, p, args.steps) for p in ("float32", "auto")}
        auto_policy_check(checks, tables["auto"], facts.get("cc"))
        train_and_resume(checks, args.out, gpus)
        refusals(checks, args.out, gpus)
    report(args.out, gpus, node, facts, tables, checks)
    print(f"gpu_check: {len(checks.rows) - len(checks.failed)} of {len(checks.rows)} checks passed in "
          f"{(time.monotonic() - started) / 60:.1f} min; {os.path.join(args.out, 'gpu_check.md')}", flush=True)
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
