"""Benchmark: CheXNet and ResUNet++ inference latency and throughput, and what magnitude pruning costs and saves.

    .venv/bin/python benchmarks/inference.py --chexnet-run runs/cx --segmentation-run runs/seg-demo
    .venv/bin/python benchmarks/inference.py              # no run folders: trains small models first
    .venv/bin/python benchmarks/inference.py --tables-only

1. Latency and throughput, one process on all cores: for each model, --batches
   x its sizes (--chexnet-sizes, --segmentation-sizes) x --precisions, on random
   inputs and weights. The model runs in a tf.function (one trace per shape) and
   each call ends in a host copy (``.numpy()``): --warmup untimed calls, then
   --iters timed ones; images/s = images / total time of the timed calls, and
   latency mean, p50, p90, p95, p99. ``mixed`` is mixed_bfloat16 where
   runtime.precision finds native bfloat16 units on the CPU; elsewhere it is not
   run and the reason is recorded (emulated bfloat16 is ~9x slower than float32).
2. Magnitude pruning, in float32. The subject is the --checkpoint of a trainer's
   run folder (--chexnet-run, --segmentation-run), or, without one, a small model
   trained here for --train-epochs on a synthetic set made by the project's own
   data stages (--train-images / --train-pairs at --train-size, CheXNet cropped to
   --train-crop). For each of --sparsities, every Conv2D and Dense kernel is pruned
   by magnitude with tensorflow-model-optimization while fine-tuning for
   --fine-tune-epochs on the training split (the run's per-rank batch, Adam at
   --fine-tune-lr): a PolynomialDecay schedule ramps the sparsity from 0 to the
   target over the first two thirds of the steps, the rest recover; then the
   wrappers are stripped. Cost: mean AUC (CheXNet) or Dice and IoU (ResUNet++) on
   --split by the project's own data and metric code, against the dense control
   (``dense-ft``: the unpruned model fine-tuned by the very same steps, batches,
   rate and loss, without pruning), so that the fine-tuning's own gain or loss is
   not counted as pruning's; the unpruned model as trained (``dense``) is graded
   the same way, for reference. Savings: gzip size of the .h5 weights file, and latency at
   --prune-batches at the model's first size, dense and pruned calls interleaved.
3. Each measurement is one record in <out>/metrics.jsonl, carrying the CPU,
   versions, peak RSS and load average. <out>.md, <out>-latency.csv,
   <out>-pruning.csv and <out>.png are built from the last run's records alone;
   ``--tables-only`` rebuilds them. Data, small runs and weights files go to --workdir.

Tiny check: ``--chexnet-sizes 32 --segmentation-sizes 32 --batches 1,2 --warmup 2 --iters 3 --train-images 60
--train-pairs 24 --train-size 32 --train-crop 32 --train-epochs 1 --fine-tune-epochs 1 --prune-batches 1,2
--bootstrap 20 --out /tmp/inf``.
"""
import argparse
import csv
import dataclasses
import gzip
import io
import json
import os
import resource
import signal
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import runtime  # noqa: E402,F401  (legacy Keras before TensorFlow loads; needs ROOT on sys.path)
from benchmarks.common import machine, output_flags, synthetic_data  # noqa: E402  (needs ROOT on sys.path)
from runtime.metrics import MetricsStream, fmt, read_events  # noqa: E402

NAMES = {"chexnet": "CheXNet (DenseNet121)", "segmentation": "ResUNet++"}
QUALITY = {"chexnet": (("mean_auc", "AUC"),), "segmentation": (("dice", "Dice"), ("iou", "IoU"))}
PRECISIONS = ("float32", "mixed")
PARTS = ("latency", "pruning")
CONTROL = "dense-ft"    # the dense control: fine-tuned as the pruned variants are, without pruning
RAMP_SHARE = 2 / 3      # of the fine-tuning steps over which the sparsity ramps up; the rest recover at the target
MASK_UPDATES = 10       # mask updates along the ramp
GRAPH_FROM_STEPS = 40   # tracing DenseNet121's pruned train step costs ~1 min of CPU, an eager step ~3 s (crop 32)
EVAL_BATCH = 32
TRAIN_LR = 1e-3         # the trainers' default --base-lr, for the small models trained here
TRAIN_BN_MOMENTUM = 0.9  # as presets/*_demo.json: 0.99 leaves the statistics unsettled in a few hundred steps
KVASIR_FRAME = 200      # largest synthetic frame height, as make demo
MB = 1e6


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, as the other benchmark scripts' errors
        sys.exit(f"inference.py: {message}")


def number_list(text, flag, kind=int, low=1, high=None):
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < low or (high is not None and max(values) >= high):
        sys.exit(f"--{flag} takes comma-separated {kind.__name__}s >= {low}" + (f" and < {high}" if high else "") +
                 f", e.g. 1,8,32; got {text!r}")
    return values


def name_list(text, flag, known):
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(known)) or ([] if names else ["(nothing)"])
    if unknown:
        sys.exit(f"--{flag}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


def parse_args(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="chexnet,segmentation", help="chexnet, segmentation or both (default)")
    p.add_argument("--parts", default="latency,pruning", help="latency, pruning or both (default)")
    p.add_argument("--batches", default="1,8,32", help="latency batch sizes (default 1,8,32)")
    p.add_argument("--chexnet-sizes", default="224,320", help="CheXNet input sides (default 224,320)")
    p.add_argument("--segmentation-sizes", default="256,384", help="ResUNet++ input sides, multiples of 8 "
                   "(default 256,384)")
    p.add_argument("--precisions", default="float32,mixed", help="float32, mixed or both (default)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls before the timed ones (default 5)")
    p.add_argument("--iters", type=int, default=30, help="timed calls per configuration (default 30)")
    p.add_argument("--chexnet-run", default="", help="chexnet.train run folder (default: train a small one)")
    p.add_argument("--segmentation-run", default="", help="segmentation.train run folder of a ResUNet++ "
                   "(default: train a small one)")
    p.add_argument("--checkpoint", default="best.npz", help="checkpoint in the run folders (default best.npz)")
    p.add_argument("--split", default="test", choices=["val", "test"], help="split graded (default test)")
    p.add_argument("--sparsities", default="0.5,0.8", help="target sparsities (default 0.5,0.8)")
    p.add_argument("--fine-tune-epochs", type=int, default=2, help="fine-tuning epochs while pruning (default 2)")
    p.add_argument("--fine-tune-lr", type=float, default=1e-4, help="Adam rate while pruning (default 1e-4)")
    p.add_argument("--prune-batches", default="1,8", help="batch sizes of the pruned latency (default 1,8)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the 95%% intervals")
    p.add_argument("--train-images", type=int, default=1000, help="synthetic ChestX-ray14 images (default 1000)")
    p.add_argument("--train-pairs", type=int, default=300, help="synthetic Kvasir-SEG pairs (default 300)")
    p.add_argument("--train-size", type=int, default=64, help="synthetic records' side (default 64)")
    p.add_argument("--train-crop", type=int, default=56, help="CheXNet crop of those records (default 56)")
    p.add_argument("--train-epochs", type=int, default=3, help="epochs of the small models (default 3)")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "inference-study"),
                   help="synthetic data, small runs and weights files; reused across invocations")
    output_flags(p, "inference", ".md/-latency.csv/-pruning.csv/.png")
    args = p.parse_args(argv)
    if not args.tables_only:
        check_args(args)
    return args


def check_args(args):
    args.models = name_list(args.models, "models", NAMES)
    args.parts = name_list(args.parts, "parts", PARTS)
    args.precisions = name_list(args.precisions, "precisions", PRECISIONS)
    args.batches = number_list(args.batches, "batches")
    args.prune_batches = number_list(args.prune_batches, "prune-batches")
    args.sparsities = number_list(args.sparsities, "sparsities", float, 0.01, 1.0)
    args.sizes = {"chexnet": number_list(args.chexnet_sizes, "chexnet-sizes", low=32),
                  "segmentation": number_list(args.segmentation_sizes, "segmentation-sizes", low=32)}
    for flag in ("iters", "fine_tune_epochs", "bootstrap", "train_images", "train_pairs", "train_epochs"):
        if getattr(args, flag) < 1:
            sys.exit(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.warmup < 0:
        sys.exit(f"--warmup must be >= 0, got {args.warmup}")
    if not 32 <= args.train_crop <= args.train_size:
        sys.exit(f"--train-crop {args.train_crop}: DenseNet121 needs >= 32, and no more than --train-size "
                 f"{args.train_size}")
    for key, flag in (("chexnet", "--chexnet-run"), ("segmentation", "--segmentation-run")):
        run = getattr(args, flag[2:].replace("-", "_"))
        if run and not os.path.isfile(os.path.join(run, "config.json")):
            sys.exit(f"{flag} {run!r}: no config.json there; pass the folder the {key} trainer wrote")
    from segmentation.model import size_problem  # imports TensorFlow: the cheap checks come first
    for size in args.sizes["segmentation"] + [args.train_size]:
        problem = size_problem(size, "resunetpp")
        if problem:
            sys.exit(f"ResUNet++ at {size}x{size}: {problem}")


# ------------------------------------------------------------------ records
def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Recorder:
    """Writes the study's records, each with the study id, the machine's facts, the peak RSS and the load."""

    def __init__(self, path):
        import numpy
        import tensorflow_model_optimization as tfmot

        from runtime.precision import cpu_facts
        facts = machine()
        self.study = time.strftime("%Y%m%dT%H%M%S")
        self.facts = {"cpu_model": facts.pop("cpu"), "cores": facts.pop("cores"),
                      "native_bf16": cpu_facts().native_bf16,
                      "versions": dict(facts, numpy=numpy.__version__, tfmot=tfmot.__version__)}
        self.stream = MetricsStream(path)

    def write(self, event, **fields):
        self.stream.write(event, study=self.study, **fields, **self.facts, peak_rss_mb=peak_rss_mb(),
                          loadavg=list(os.getloadavg()))


# ------------------------------------------------------------------ timing
def time_calls(calls, warmup, iters, before=None):
    """Seconds per timed call of each of ``calls``, interleaved call by call, so that a change of load on
    the machine hits every one of them alike; ``warmup`` untimed rounds first. ``before[i]()``, untimed,
    precedes every call of ``calls[i]``."""
    before = before or [lambda: None] * len(calls)
    times = [[] for _ in calls]
    for round_ in range(warmup + iters):
        for prepare, call, own in zip(before, calls, times):
            prepare()
            t0 = time.perf_counter()
            call()
            if round_ >= warmup:
                own.append(time.perf_counter() - t0)
    return times


def latency_figures(batch, times):
    import numpy as np
    p50, p90, p95, p99 = (float(v) * 1e3 for v in np.percentile(times, (50, 90, 95, 99)))
    return {"iters": len(times), "images_per_s": batch * len(times) / sum(times), "images_per_s_p50": batch * 1e3 / p50,
            "latency_mean_ms": 1e3 * sum(times) / len(times), "latency_p50_ms": p50, "latency_p90_ms": p90,
            "latency_p95_ms": p95, "latency_p99_ms": p99}


def forward_call(model, batch, size):
    """A call of ``model`` on one random batch that ends in a host copy (the host sync of each timed call),
    traced here: no timed call, warm-up or not, includes the trace."""
    import tensorflow as tf
    forward = tf.function(lambda x: model(x, training=False))
    x = tf.random.stateless_normal((batch, size, size, 3), seed=(batch, size))
    forward(x).numpy()
    return lambda: forward(x).numpy()


def build_network(key, size, bn_momentum=None):
    """``key``'s network for ``size`` x ``size`` inputs, random weights, in the current Keras precision policy."""
    if key == "chexnet":
        from chexnet.model import build_model
        from dataprep.chestxray14.facts import CLASSES
        return build_model(size, len(CLASSES), "none", bn_momentum or 0.99)
    from segmentation.model import build_model
    return build_model("resunetpp", size, bn_momentum=bn_momentum)


def precision_for(requested):
    """(Keras policy, reason) for ``requested`` on this CPU; the policy is None where it must not run."""
    from runtime.precision import choose
    choice = choose(requested)
    if requested == "mixed" and choice.policy == "float32":
        return None, choice.reason  # no native bfloat16 units: emulated, ~9x slower; nothing worth timing
    return choice.policy, choice.reason


def latency_study(rec, args, key):
    import tf_keras as keras
    for requested in args.precisions:
        policy, reason = precision_for(requested)
        if policy is None:
            rec.write("skipped", model=key, precision=requested, reason=reason)
            print(f"[latency] {key} {requested}: not run: {reason}", flush=True)
            continue
        keras.mixed_precision.set_global_policy(policy)
        for size in args.sizes[key]:
            model = build_network(key, size)
            for batch in args.batches:
                times = time_calls([forward_call(model, batch, size)], args.warmup, args.iters)[0]
                figures = latency_figures(batch, times)
                rec.write("latency", model=key, size=size, batch=batch, precision=requested, policy=policy,
                          policy_reason=reason, warmup=args.warmup, **figures)
                print(f"[latency] {key} {size} {policy} batch {batch}: {figures['images_per_s']:.1f} images/s, "
                      f"p50 {figures['latency_p50_ms']:.1f} ms", flush=True)
            keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")


# ------------------------------------------------------------------ the models to prune
@dataclasses.dataclass
class Subject:
    """A trained model in float32, and what its workload needs to fine-tune and grade it.

    Every variant is measured in ``model`` itself, its weights loaded first: one traced predictor serves all."""
    key: str
    model: object
    manifest: object
    source: str          # the checkpoint, or how the model was trained here
    batch: int           # fine-tuning batch: the run's per-rank batch
    size: int            # input side it was trained at (CheXNet's crop, the segmentation records' side)
    bn_momentum: float
    loss: object         # Keras loss on logits
    train_data: object   # (epochs, steps) -> (x, y) batches of the training split
    grade: object        # (predictor, split, n_boot) -> {figure: mean, figure_ci: [low, high]}

    def __post_init__(self):
        from training.gather import Predictor
        self.dense = self.model.get_weights()
        self.predictor = Predictor(self.model)


def normalised(name, dataset):
    """The workload's batches (uint8 images) normalised here: the study's models are the bare networks."""
    from training import workload
    normalise = workload.get(name).normalise
    return dataset.map(lambda x, *rest: (normalise(x), *rest))


def predict_split(predictor, dataset, expected, per_batch=None):
    """Rows of every image of a split predicted by this one process (training.gather), each exactly once."""
    rows, names = predictor.local(dataset, *([per_batch] if per_batch else []))
    if len(names) != expected or len(set(names)) != expected:
        raise RuntimeError(f"predicted {len(names)} images ({len(set(names))} distinct), the split has {expected}")
    return rows


def chexnet_workload(manifest, crop, batch, seed=0):
    """(loss, train_data, grade): the trainer's class-weighted loss and input, chexnet.evaluate's AUC table."""
    from chexnet import auc, data, losses
    w_pos, w_neg = losses.class_weights(data.class_positives(manifest, "train"), manifest.images("train"))

    def train_data(epochs, steps):
        return normalised("chexnet", data.train_dataset(manifest, 0, 1, batch, crop, seed, 0, epochs, steps))

    def grade(predictor, split, n_boot):
        split_data = normalised("chexnet", data.eval_dataset(manifest, split, 0, 1, EVAL_BATCH, crop))
        rows = predict_split(predictor, split_data, manifest.images(split))
        mean = auc.auc_table(rows["targets"], rows["outputs"], manifest.classes, n_boot, seed,
                             patients=rows.get("patient"))[-1]
        return {"mean_auc": mean["auc"], "mean_auc_ci": [mean["ci_low"], mean["ci_high"]]}

    return losses.weighted_bce(w_pos, w_neg), train_data, grade


def segmentation_workload(manifest, loss_name, batch, seed=0):
    """(loss, train_data, grade): the trainer's loss and augmented input, segmentation.evaluate's Dice and IoU."""
    from segmentation import data, losses, metrics, validation
    loss = losses.build_loss(loss_name)

    def train_data(epochs, steps):
        return normalised("segmentation", data.train_dataset(manifest, 0, 1, batch, seed, 0, epochs, steps))

    def grade(predictor, split, n_boot):
        split_data = normalised("segmentation", data.eval_dataset(manifest, split, 0, 1, EVAL_BATCH))
        rows = predict_split(predictor, split_data, manifest.images(split), validation.per_image_rows(loss))
        table = {r["figure"]: r for r in metrics.table(rows["counts"], n_boot, seed)}
        return {k: v for f, _ in QUALITY["segmentation"]
                for k, v in ((f, table[f]["mean"]), (f"{f}_ci", [table[f]["ci_low"], table[f]["ci_high"]]))}

    return loss, train_data, grade


def subject_from_run(key, run, checkpoint_name):
    """The checkpoint of a trainer's run folder, checked as evaluate checks it, on the data it trained on."""
    from training import checkpoint
    from training.shards import Manifest
    path = os.path.join(run, checkpoint_name)
    _, _, state = checkpoint.read(path)
    with open(os.path.join(run, "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)["config"]
    manifest = Manifest.load(config["data_dir"])
    if key == "chexnet":
        from chexnet.model import check_checkpoint
        check_checkpoint(state, path, manifest.classes, manifest.stored_size)
        size, workload = state["crop"], chexnet_workload(manifest, state["crop"], config["per_rank_batch"])
    else:
        from segmentation.model import check_checkpoint
        check_checkpoint(state, path, manifest.stored_size)
        if state["model"] != "resunetpp":
            sys.exit(f"{path} holds a {state['model']}: --segmentation-run takes a ResUNet++ run")
        size, workload = state["stored_size"], segmentation_workload(manifest, state["loss"], config["per_rank_batch"])
    model = build_network(key, size, config["bn_momentum"])
    checkpoint.restore(path, model, with_optimizer=False)
    return Subject(key, model, manifest, f"Checkpoint {path} (epoch {state['epoch']})", config["per_rank_batch"], size,
                   config["bn_momentum"], *workload)


def make_synthetic(args, key):
    """TFRecords of a synthetic ChestX-ray14 or Kvasir-SEG, made by the project's three stages (once)."""
    if key == "chexnet":
        dataset, count, source, write = "chestxray14", args.train_images, args.train_size, []
    else:  # a seeded 80/10/10 split, as make demo: the official lists have no test split
        dataset, count, source, write = "kvasir-seg", args.train_pairs, KVASIR_FRAME, ["--split", "random"]
    out = os.path.join(args.workdir, f"data-{dataset}-{count}-{args.train_size}")
    return os.path.join(synthetic_data(dataset, out, count, source, args.train_size, write), "tfrecords")


def subject_trained_here(args, key):
    """A small model of ``key`` trained here for --train-epochs on a synthetic set: what CI can run end to end."""
    from training.shards import Manifest
    manifest = Manifest.load(make_synthetic(args, key))
    if key == "chexnet":
        batch, size = 16, args.train_crop
        workload = chexnet_workload(manifest, size, batch)
    else:
        batch, size = 8, manifest.stored_size
        workload = segmentation_workload(manifest, "dice_bce", batch)
    model = build_network(key, size, TRAIN_BN_MOMENTUM)
    steps_per_epoch = manifest.steps_per_epoch("train", 1, batch)
    print(f"[pruning] {key}: training a small model here, {steps_per_epoch * args.train_epochs} steps", flush=True)
    train(model, workload[0], workload[1](args.train_epochs, steps_per_epoch), steps_per_epoch * args.train_epochs,
          TRAIN_LR)
    source = (f"Trained here: {manifest.images('train')} synthetic training images at {size}x{size}, "
              f"{args.train_epochs} epoch(s), batch {batch}, Adam {TRAIN_LR:g}")
    return Subject(key, model, manifest, source, batch, size, TRAIN_BN_MOMENTUM, *workload)


# ------------------------------------------------------------------ pruning
def train(model, loss, dataset, steps, lr, pruned=False):
    """``steps`` Adam steps on ``dataset``'s (x, y) batches. A pruned model's wrappers count their own steps;
    its masks are applied once more at the end, so the kernels kept are mask x weights."""
    import tensorflow as tf
    import tf_keras as keras
    optimizer = keras.optimizers.Adam(lr)
    optimizer.build(model.trainable_variables)  # slots exist before the first step: one trace, not two

    def step(x, y):
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(loss(y, model(x, training=True)))
        optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_variables), model.trainable_variables))
        return value

    run = tf.function(step) if steps >= GRAPH_FROM_STEPS else step  # a short fine-tune is faster without a trace
    if pruned:
        import tensorflow_model_optimization as tfmot
        masks = tfmot.sparsity.keras.UpdatePruningStep()
        masks.set_model(model)
        masks.on_train_begin()  # the wrappers' step counters start at 0
    for x, y in dataset.take(steps):
        run(x, y)
    if pruned:
        masks.on_epoch_end(-1)
    return "graph" if run is not step else "eager"


def ramp(steps):
    """(end_step, frequency) of the schedule: the last mask update falls on end_step, at the target sparsity."""
    end = max(1, round(steps * RAMP_SHARE))
    frequency = max(1, end // MASK_UPDATES)
    return end // frequency * frequency, frequency


def prunable(model):
    import tf_keras as keras
    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


def fine_tune_steps(subject, args):
    """(steps per epoch, steps) of the fine-tuning, pruned or not."""
    steps_per_epoch = subject.manifest.steps_per_epoch("train", 1, subject.batch)
    return steps_per_epoch, steps_per_epoch * args.fine_tune_epochs


def fine_tune_dense(subject, args):
    """(weights, fine-tuning facts): the dense control, ``subject`` fine-tuned as ``prune`` does it (same steps,
    batches in the same order, rate and loss), without pruning."""
    steps_per_epoch, steps = fine_tune_steps(subject, args)
    subject.model.set_weights(subject.dense)
    mode = train(subject.model, subject.loss, subject.train_data(args.fine_tune_epochs, steps_per_epoch), steps,
                 args.fine_tune_lr)
    return subject.model.get_weights(), {"epochs": args.fine_tune_epochs, "steps": steps, "batch": subject.batch,
                                         "lr": args.fine_tune_lr, "schedule": None, "mode": mode}


def prune(subject, target, args):
    """(stripped model, fine-tuning facts): ``subject`` pruned to ``target`` while fine-tuning."""
    import tf_keras as keras
    import tensorflow_model_optimization as tfmot
    sparsity = tfmot.sparsity.keras
    steps_per_epoch, steps = fine_tune_steps(subject, args)
    end, frequency = ramp(steps)
    schedule = sparsity.PolynomialDecay(0.0, target, begin_step=0, end_step=end, frequency=frequency)
    # The clone shares the subject's layers (the wrappers wrap them): start each target from the trained weights.
    subject.model.set_weights(subject.dense)
    targets = {id(layer) for layer in prunable(subject.model)}
    wrapped = keras.models.clone_model(subject.model, clone_function=lambda layer: sparsity.prune_low_magnitude(
        layer, pruning_schedule=schedule) if id(layer) in targets else layer)
    mode = train(wrapped, subject.loss, subject.train_data(args.fine_tune_epochs, steps_per_epoch), steps,
                 args.fine_tune_lr, pruned=True)
    facts = {"epochs": args.fine_tune_epochs, "steps": steps, "batch": subject.batch, "lr": args.fine_tune_lr,
             "schedule": "PolynomialDecay", "begin_step": 0, "end_step": end, "frequency": frequency, "mode": mode}
    stripped = sparsity.strip_pruning(wrapped)
    # Stripped, the layers are the subject's own: the same variables in the same order, so weights carry over.
    if [id(v) for v in stripped.weights] != [id(v) for v in subject.model.weights]:
        raise RuntimeError(f"{subject.key}: the stripped model's weights are not the subject's, in its order")
    return stripped, facts


def zero_share(arrays):
    import numpy as np
    return sum(int(np.count_nonzero(a == 0)) for a in arrays) / sum(a.size for a in arrays)


def weights_file(model, path):
    """(.h5 MB, gzip MB) of ``model``'s weights saved at ``path``."""
    model.save_weights(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    # gzip's own default level, what `gzip FILE` gives; level 9 took 7x longer on sparse kernels for 2% less.
    return len(raw) / MB, len(gzip.compress(raw, compresslevel=6)) / MB


def measure_variant(rec, args, subject, variant, target, weights, fine_tune):
    """The ``pruning`` record of one variant's ``weights`` (sparsity, weights file sizes, quality), measured in
    the subject's model; returns (variant, target, weights)."""
    t0 = time.perf_counter()
    model = subject.model
    model.set_weights(weights)
    layers = prunable(model)
    kernels = [layer.kernel.numpy() for layer in layers]
    path = os.path.join(args.workdir, "weights", f"{subject.key}-{variant.rstrip('%')}.h5")
    h5_mb, gzip_mb = weights_file(model, path)
    figures = subject.grade(subject.predictor, args.split, args.bootstrap)
    rec.write("pruning", model=subject.key, variant=variant, target_sparsity=target, source=subject.source,
              input_size=subject.size, split=args.split, images=subject.manifest.images(args.split),
              precision="float32", **figures, sparsity_pruned_kernels=zero_share(kernels),
              sparsity_all_weights=zero_share(model.get_weights()), pruned_layers=[layer.name for layer in layers],
              pruned_weights=sum(k.size for k in kernels), weights_file=path, weights_mb=h5_mb, gzip_mb=gzip_mb,
              fine_tune=fine_tune, bootstrap=args.bootstrap)
    print(f"[pruning] {subject.key} {variant}: {figures}, gzip {gzip_mb:.2f} MB "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return variant, target, weights


def pruning_study(rec, args, key):
    import tf_keras as keras
    keras.mixed_precision.set_global_policy("float32")  # one precision for every variant, on any CPU
    run = args.chexnet_run if key == "chexnet" else args.segmentation_run
    subject = subject_from_run(key, run, args.checkpoint) if run else subject_trained_here(args, key)
    os.makedirs(os.path.join(args.workdir, "weights"), exist_ok=True)
    variants = [measure_variant(rec, args, subject, "dense", 0.0, subject.dense, None)]
    t0 = time.perf_counter()
    control, fine_tune = fine_tune_dense(subject, args)
    print(f"[pruning] {key}: dense control fine-tuned ({time.perf_counter() - t0:.0f} s)", flush=True)
    variants.append(measure_variant(rec, args, subject, CONTROL, 0.0, control, fine_tune))
    for target in args.sparsities:
        t0 = time.perf_counter()
        stripped, fine_tune = prune(subject, target, args)
        print(f"[pruning] {key}: pruned to {target:.0%} while fine-tuning ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        variants.append(measure_variant(rec, args, subject, f"{target:.0%}", target, stripped.get_weights(),
                                        fine_tune))
    pruned_latency(rec, args, subject, variants)
    keras.backend.clear_session()


def pruned_latency(rec, args, subject, variants):
    """Each variant's weights in one model of the first latency size, float32, calls interleaved by variant
    (its weights are set, untimed, before each of its calls)."""
    size = args.sizes[subject.key][0]
    model = subject.model if size == subject.size else build_network(subject.key, size, subject.bn_momentum)
    if [w.shape for w in model.weights] != [w.shape for w in subject.model.weights]:
        raise RuntimeError(f"{subject.key} at {size}x{size} does not hold the weights of the model pruned")
    for batch in args.prune_batches:
        forward = forward_call(model, batch, size)
        times = time_calls([forward] * len(variants), args.warmup, args.iters,
                           before=[lambda weights=weights: model.set_weights(weights) for _, _, weights in variants])
        for (variant, target, _), own in zip(variants, times):
            figures = latency_figures(batch, own)
            rec.write("pruned_latency", model=subject.key, variant=variant, target_sparsity=target, size=size,
                      batch=batch, precision="float32", warmup=args.warmup, **figures)
            print(f"[pruning] {subject.key} {variant} batch {batch} at {size}: p50 {figures['latency_p50_ms']:.1f} ms",
                  flush=True)


def run_study(args, path):
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")  # every timed shape is traced on purpose: no retracing warnings
    rec = Recorder(path)
    t0 = time.perf_counter()
    rec.write("study", command=" ".join([os.path.relpath(sys.executable, ROOT), *sys.argv]),
              date=time.strftime("%Y-%m-%d %H:%M"), warmup=args.warmup, iters=args.iters)
    if "latency" in args.parts:  # first: ru_maxrss is a high-water mark, so no training inflates these
        for key in args.models:
            latency_study(rec, args, key)
    if "pruning" in args.parts:
        for key in args.models:
            pruning_study(rec, args, key)
    rec.write("study_end", wall_s=time.perf_counter() - t0)


# ------------------------------------------------------------------ tables, from the records only
def last_study(path):
    """(study record, study_end record or None, every record of the last study in ``path``)."""
    if not os.path.isfile(path):
        sys.exit(f"{path} not found: run the study first (without --tables-only), or pass its --out")
    records = read_events(path)
    starts = [r for r in records if r["event"] == "study"]
    if not starts:
        sys.exit(f"{path} holds no study record: the study ran nothing")
    mine = [r for r in records if r.get("study") == starts[-1]["study"]]
    ends = [r for r in mine if r["event"] == "study_end"]
    return starts[-1], ends[-1] if ends else None, mine


def of(records, event):
    return [r for r in records if r["event"] == event]


LATENCY_COLUMNS = ["model", "size", "precision", "policy", "batch", "warmup", "iters", "images_per_s",
                   "images_per_s_p50", "latency_mean_ms", "latency_p50_ms", "latency_p90_ms", "latency_p95_ms",
                   "latency_p99_ms", "peak_rss_mb", "loadavg_1m", "cpu_model"]


def latency_rows(records):
    order = list(NAMES)
    rows = [dict(r, loadavg_1m=r["loadavg"][0]) for r in of(records, "latency")]
    return sorted(rows, key=lambda r: (order.index(r["model"]), PRECISIONS.index(r["precision"]), r["size"], r["batch"]))


def pruning_rows(records):
    """One row per (model, variant): its pruning record, with the pruned latency at each batch beside it."""
    timed = {(r["model"], r["variant"], r["batch"]): r for r in of(records, "pruned_latency")}
    batches = sorted({r["batch"] for r in timed.values()})
    rows = []
    for r in of(records, "pruning"):
        row = {k: v for k, v in r.items() if not isinstance(v, (list, dict))}
        for figure, _ in QUALITY[r["model"]]:
            row[f"{figure}_ci_low"], row[f"{figure}_ci_high"] = r[f"{figure}_ci"]
        row["pruned_layers"] = len(r["pruned_layers"])
        for b in batches:
            t = timed.get((r["model"], r["variant"], b), {})
            row.update({f"latency_b{b}_p50_ms": t.get("latency_p50_ms"), f"latency_b{b}_mean_ms": t.get(
                "latency_mean_ms"), f"images_per_s_b{b}": t.get("images_per_s"), "latency_size": t.get("size")})
        rows.append(row)
    return rows, batches


PRUNING_COLUMNS = ["model", "variant", "target_sparsity", "sparsity_pruned_kernels", "sparsity_all_weights",
                   "pruned_layers", "pruned_weights", "split", "images", "mean_auc", "mean_auc_ci_low",
                   "mean_auc_ci_high", "dice", "dice_ci_low", "dice_ci_high", "iou", "iou_ci_low", "iou_ci_high",
                   "weights_mb", "gzip_mb", "latency_size"]


def csv_text(rows, columns):
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def header(study, end):
    facts = study["versions"]
    loads = "/".join(f"{v:.2f}" for v in study["loadavg"])
    lines = [f"# Inference study: {' and '.join(NAMES.values())} on {study['cpu_model']}", "",
             f"Run {study['date']} (study {study['study']}), one process on {study['cores']} cores; native "
             f"bfloat16 units: {', '.join(study['native_bf16']) or 'none'}. Python {facts['python']}, TensorFlow "
             f"{facts['tensorflow']}, tf_keras {facts['tf_keras']}, tensorflow-model-optimization {facts['tfmot']}, "
             f"numpy {facts['numpy']}.",
             f"Load average (1/5/15 min) {loads} at the start"]
    if end:
        lines[-1] += f", {'/'.join(f'{v:.2f}' for v in end['loadavg'])} at the end; the study took {end['wall_s']:.0f} s"
    lines[-1] += f". Command: `{study['command']}`"
    return lines + [""]


def latency_markdown(rows, skipped, study):
    lines = ["## Latency and throughput", "",
             f"Random inputs and weights; each timed call is one batch through the model's tf.function, ending in "
             f"a host copy. Averaged over {study['iters']} iterations after {study['warmup']} warm-up. images/s = "
             f"images / total time of the timed calls; p50 images/s = batch / median latency, which other load on "
             f"the machine disturbs less. Peak RSS: the process's high-water mark so far (ru_maxrss).", "",
             "| model | input | precision | batch | images/s | p50 images/s | latency avg (ms) | p50 (ms) | "
             "p90 (ms) | p95 (ms) | p99 (ms) | peak RSS (MiB) |", "|---" * 12 + "|"]
    for r in rows:
        lines.append(f"| {NAMES[r['model']]} | {r['size']}x{r['size']} | {r['policy']} | {r['batch']} | "
                     f"{fmt(r['images_per_s'], '.1f')} | {fmt(r['images_per_s_p50'], '.1f')} | "
                     + " | ".join(fmt(r[f"latency_{k}_ms"], ".1f") for k in ("mean", "p50", "p90", "p95", "p99"))
                     + f" | {fmt(r['peak_rss_mb'], '.0f')} |")
    lines += [f"\nNot run: {r['precision']} for {NAMES[r['model']]}: {r['reason']}." for r in skipped]
    return lines + [""]


def quality_cell(row, model, dense=None):
    """The row's figures with their intervals; or, given ``dense``, the row's minus its (``-`` for itself)."""
    if dense is row:
        return "-"
    parts = []
    for figure, label in QUALITY[model]:
        if dense is None:
            parts.append(f"{label} {fmt(row[figure], '.3f')} ({fmt(row[figure + '_ci_low'], '.3f')}-"
                         f"{fmt(row[figure + '_ci_high'], '.3f')})")
        else:
            parts.append(f"{label} {row[figure] - dense[figure]:+.3f}")
    return "; ".join(parts)


def method_line(record):
    """How one model was pruned, from one of its pruned variants' record."""
    ft = record["fine_tune"]
    return (f"- {NAMES[record['model']]}: {record['source']}. {len(record['pruned_layers'])} Conv2D/Dense kernels "
            f"pruned while fine-tuning {ft['epochs']} epoch(s), {ft['steps']} steps of batch {ft['batch']}, Adam "
            f"{ft['lr']:g}, {ft['mode']} mode; {ft['schedule']} from 0 to the target over steps 1-{ft['end_step']}, "
            f"masks updated every {ft['frequency']}.")


def pruning_markdown(rows, batches, records):
    lines = ["## Magnitude pruning", ""]
    pruned = {r["model"]: r for r in of(records, "pruning") if r["target_sparsity"] > 0}
    lines += [method_line(r) for r in pruned.values()]
    sizes = ", ".join(dict.fromkeys(f"{NAMES[r['model']]} at {r['latency_size']}x{r['latency_size']}" for r in rows))
    # Records of studies from before the dense control have none: their table is as it was then.
    controlled = any(r["variant"] == CONTROL for r in rows)
    control_text = (f"{CONTROL}: the dense model fine-tuned by the same steps, batches, rate and loss as the pruned "
                    f"ones, without pruning: \"vs {CONTROL}\" is what pruning costs; \"vs dense\" adds the "
                    f"fine-tuning's own effect. ") if controlled else ""
    interleaved = "every variant's" if controlled else "dense and pruned"
    lines += ["", f"Quality on the {rows[0]['split']} split with 95% bootstrap intervals, float32. {control_text}"
              f"Latency: float32, {sizes}, p50 of the timed calls, "
              f"{interleaved} calls interleaved; "
              f"(x) is the ratio to dense. MB = 10^6 bytes.", "",
              "| model | variant | sparsity, pruned kernels | sparsity, all weights | quality (95% CI) | "
              + (f"vs {CONTROL} | " if controlled else "") + "vs dense | .h5 MB | gzip MB | gzip vs dense | " +
              " | ".join(f"batch {b} p50 ms (x)" for b in batches) + " |",
              "|---" * (9 + controlled + len(batches)) + "|"]
    for r in rows:
        dense, control = (next((d for d in rows if d["model"] == r["model"] and d["variant"] == v), None)
                          for v in ("dense", CONTROL))
        lat = [f"{fmt(r[f'latency_b{b}_p50_ms'], '.1f')} ({fmt(ratio(r, dense, f'latency_b{b}_p50_ms'), '.2f')})"
               for b in batches]
        against_control = "-" if r is dense else "n/a" if control is None else quality_cell(r, r["model"], control)
        lines.append(f"| {NAMES[r['model']]} | {r['variant']} | {100 * r['sparsity_pruned_kernels']:.1f}% | "
                     f"{100 * r['sparsity_all_weights']:.1f}% | {quality_cell(r, r['model'])} | "
                     + (f"{against_control} | " if controlled else "") + f"{quality_cell(r, r['model'], dense)} | "
                     f"{fmt(r['weights_mb'], '.2f')} | {fmt(r['gzip_mb'], '.2f')} | "
                     f"{fmt(ratio(r, dense, 'gzip_mb'), '.2f')} | " + " | ".join(lat) + " |")
    return lines + [""]


def ratio(row, dense, key):
    return None if row[key] is None or not dense[key] else row[key] / dense[key]


def plot(rows, path):
    """images/s against batch size, one panel per model, a line per input size and precision."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(6 * max(1, len(models)), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        for line in dict.fromkeys((r["size"], r["policy"]) for r in rows if r["model"] == model):
            pts = [(r["batch"], r["images_per_s"]) for r in rows if r["model"] == model and (r["size"], r["policy"]) == line]
            ax.plot(*zip(*pts), marker="o", label=f"{line[0]}x{line[0]} {line[1]}")
        ax.set(xscale="log", xlabel="batch size", ylabel="images/s", title=NAMES[model])
        ax.set_xticks(sorted({r["batch"] for r in rows}), [str(b) for b in sorted({r["batch"] for r in rows})])
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_tables(out):
    study, end, records = last_study(os.path.join(out, "metrics.jsonl"))
    lat = latency_rows(records)
    prun, batches = pruning_rows(records)
    md = header(study, end)
    if lat or of(records, "skipped"):
        md += latency_markdown(lat, of(records, "skipped"), study)
    if prun:
        md += pruning_markdown(prun, batches, records)
    outputs = {".md": "\n".join(md), "-latency.csv": csv_text(lat, LATENCY_COLUMNS),
               "-pruning.csv": csv_text(prun, PRUNING_COLUMNS + [c for b in batches for c in (
                   f"latency_b{b}_p50_ms", f"latency_b{b}_mean_ms", f"images_per_s_b{b}")])}
    for suffix, text in outputs.items():
        with open(out + suffix, "w", encoding="utf-8") as fh:
            fh.write(text)
    if lat:
        plot(lat, out + ".png")
    print(outputs[".md"], flush=True)


def main(argv=None):
    args = parse_args(argv)
    if not args.tables_only:
        # A stop ends the data stage running in a child (benchmarks.common.sh) before this process exits.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit("inference study: stopped by SIGTERM"))
        os.makedirs(args.out, exist_ok=True)
        run_study(args, os.path.join(args.out, "metrics.jsonl"))
    write_tables(args.out)


if __name__ == "__main__":
    main()
