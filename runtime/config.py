"""Typed run settings: one dataclass per trainer, filled from the command line.

    @dataclasses.dataclass
    class TrainConfig(RuntimeConfig):        # ProcessConfig for processes that do not train
        epochs: int = field(3, "passes over the training data")

    cfg = parse_args(TrainConfig, ["--epochs", "5", "--no-xla"])
    cfg.epochs  # 5

Every field becomes a flag (``per_rank_batch`` -> ``--per-rank-batch``; booleans
get ``--x/--no-x``), its help text comes from the field, so no flag is copied by
hand into a second object. ``--preset FILE`` (a JSON object, keys as the
fields) sets defaults that flags override. ``to_dict`` gives what
``config.json`` holds.
"""
import argparse
import dataclasses
import json
import os
import typing

from runtime.devices import DEVICES
from runtime.errors import UserError


def field(default, help_text, choices=None, at_least=None, above=None, at_most=None):
    """A dataclass field with the help text (and choices) its flag shows.

    A number declares its range (``at_least``/``above`` below, ``at_most`` above): ``check_bounds``
    refuses a value outside it in one line, and a test holds every numeric field to having one.
    """
    return dataclasses.field(default=default, metadata={"help": help_text, "choices": choices,
                                                        "at_least": at_least, "above": above, "at_most": at_most})


def flag_name(name):
    return "--" + name.replace("_", "-")


BOUNDS = (("at_least", ">=", lambda v, b: v >= b), ("above", ">", lambda v, b: v > b),
          ("at_most", "<=", lambda v, b: v <= b))


def bounds_text(meta):
    """'>= 1', '> 0 and <= 1', ... of a field's metadata ('' for none)."""
    return " and ".join(f"{op} {_number(meta[key])}" for key, op, _ in BOUNDS if meta.get(key) is not None)


def _number(value):
    return str(value) if isinstance(value, int) else f"{value:g}"


def check_bounds(cfg):
    """One line for the first numeric setting of ``cfg`` outside its declared range (NaN is outside any)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        for key, op, holds in BOUNDS:
            bound = f.metadata.get(key)
            if bound is not None and not holds(value, bound):
                raise UserError(f"{flag_name(f.name)} must be {op} {_number(bound)}, got {value!r}")


PRECISION_HELP = ("compute precision: auto = bfloat16 on GPUs of compute capability 8.0 and later and on CPUs "
                  "with AMX/AVX512-BF16, float16 (loss-scaled) on 7.x GPUs, else float32; mixed = the same but "
                  "warns where it falls back; float32/bfloat16/float16 force it (weights stay float32)")
PRECISIONS = ["auto", "mixed", "float32", "bfloat16", "float16"]


@dataclasses.dataclass
class ProcessConfig:
    """Settings of every process that runs a model (training, evaluation): seed, precision, threads."""

    seed: int = field(0, "seed for weights (rank 0's are broadcast) and data order (offset by rank)",
                      at_least=0, at_most=2 ** 31 - 1)
    precision: str = field("auto", PRECISION_HELP, choices=PRECISIONS)
    device: str = field("auto", "auto = the GPUs TensorFlow sees, else the CPU, refusing a node that has GPUs "
                        "TensorFlow cannot use; gpu = require one per rank; cpu = hide the GPUs",
                        choices=list(DEVICES))
    xla: bool = field(False, "compile the train step with XLA (one rank only with horovod 0.28.1)")
    threads_per_rank: int = field(0, "TensorFlow intra-op threads per rank (0: cores / local ranks)",
                                  at_least=0, at_most=1024)
    deterministic: bool = field(False, "deterministic TensorFlow ops (slower): bit-identical reruns and resumes")

    def validate(self):
        check_bounds(self)

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RuntimeConfig(ProcessConfig):
    """Settings every trainer shares; trainers subclass this and add their own."""

    run_name: str = field("", "folder under --runs-dir for this run (default: <trainer>-<time>)")
    runs_dir: str = field("runs", "parent folder of run folders")
    fp16_allreduce: bool = field(False, "compress gradients to float16 for the allreduce (no overflow guard: a "
                                 "gradient beyond float16's range becomes inf unless float16 loss scaling runs)")
    grad_accum_steps: int = field(1, "batches whose gradients are summed locally before one allreduce",
                                  at_least=1, at_most=1024)
    lr_scaling: str = field("sqrt", "learning rate for N ranks: base_lr x sqrt(N) (Adam-like optimizers), "
                            "x N (Goyal et al., SGD), or none", choices=["sqrt", "linear", "none"])
    warmup_epochs: float = field(1.0, "epochs over which the learning rate ramps up from base_lr to the "
                                 "scaled rate (0: the scaled rate from the first step)", at_least=0, at_most=1000)
    throughput_warmup_steps: int = field(5, "steps per epoch left out of throughput figures", at_least=0,
                                         at_most=10 ** 6)
    progress: str = field("auto", "rank 0 progress: Keras bar, a log line every --progress-every-s, "
                          "or none; auto = bar on an interactive terminal outside MPI, else log",
                          choices=["auto", "bar", "log", "none"])
    progress_every_s: float = field(30.0, "seconds between progress log lines (--progress log)", at_least=0.1,
                                    at_most=86400)

    def validate(self):
        super().validate()
        if self.run_name and (os.path.basename(self.run_name) != self.run_name or self.run_name in (".", "..")):
            raise UserError(f"--run-name {self.run_name!r} must be a folder name, not a path: put the parent in "
                            f"--runs-dir")
        if self.precision == "float16" and self.grad_accum_steps > 1:  # the auto choice is checked at init
            raise UserError("--precision float16 with --grad-accum-steps > 1: each rank's loss scale would react to "
                            "its own accumulated overflows and the replicas drift apart; use bfloat16 or float32")
        if self.xla and self.grad_accum_steps > 1:  # --xla trains without Horovod's optimizer wrapper
            raise UserError("--grad-accum-steps is done by Horovod's optimizer wrapper, which XLA cannot compile: "
                            "drop --xla or --grad-accum-steps")


def _flag_type(tp):
    if tp in (int, float, str):
        return tp
    raise TypeError(f"config fields must be int, float, str or bool, got {tp}")


def build_parser(cls, description=None):
    parser = argparse.ArgumentParser(description=description or cls.__doc__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = flag_name(f.name)
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        if hints[f.name] is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=f.default, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=_flag_type(hints[f.name]), default=f.default,
                                choices=f.metadata.get("choices"),
                                help=f"{help_text} (default: {f.default!r}"
                                     f"{'; ' + bounds_text(f.metadata) if bounds_text(f.metadata) else ''})")
    return parser


RUN_FOLDER_SETTINGS = ("run_name", "resume")


def load_preset(path, cls):
    """{field: value} of a JSON preset file, checked against ``cls``'s fields and types."""
    try:
        with open(path, encoding="utf-8") as fh:
            values = json.load(fh)
    except (OSError, ValueError) as err:
        raise UserError(f"--preset {path}: cannot read it as JSON ({err})") from None
    if not isinstance(values, dict):
        raise UserError(f"--preset {path}: must hold one JSON object of settings, e.g. {{\"epochs\": 3}}")
    if isinstance(values.get("config"), dict) and "environment" in values:
        # A run's own config.json: its settings, less the folder it names (a preset says how, not where).
        values = {k: v for k, v in values["config"].items() if k not in RUN_FOLDER_SETTINGS}
    hints = typing.get_type_hints(cls)
    choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in hints or key == "preset":
            raise UserError(f"--preset {path}: unknown setting {key!r}; settings are the flags' names with "
                            f"underscores, as in config.json (see --help)")
        tp = hints[key]
        ok = isinstance(value, bool) if tp is bool else (
            isinstance(value, tp) or (tp is float and isinstance(value, int))) and not isinstance(value, bool)
        if not ok:
            raise UserError(f"--preset {path}: {key} must be {tp.__name__}, got {value!r}")
        if choices[key] and value not in choices[key]:
            raise UserError(f"--preset {path}: {key} must be one of {choices[key]}, got {value!r}")
    return values


def parse_args(cls, argv=None, description=None):
    """Parse ``argv`` into a validated ``cls`` instance.

    ``--preset FILE`` (a JSON object of settings, keys as in config.json) sets
    the defaults first; flags on the command line override it.
    """
    parser = build_parser(cls, description)
    parser.add_argument("--preset", default="", help="JSON file of settings (keys as in config.json, e.g. "
                        "{\"epochs\": 3, \"per_rank_batch\": 8}); flags on the command line override it")
    known, _ = parser.parse_known_args(argv)
    if known.preset:
        parser.set_defaults(**load_preset(known.preset, cls))
    args = vars(parser.parse_args(argv))
    args.pop("preset")
    cfg = cls(**args)
    cfg.validate()
    return cfg
