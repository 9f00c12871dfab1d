"""Every numeric flag of every entry point declares its range, and a value outside it is one line (one process).

The flags are read from the config classes themselves, so a new flag without bounds fails here.
"""
import dataclasses
import importlib
import typing

import pytest

from runtime.config import BOUNDS, ProcessConfig, flag_name, parse_args
from runtime.errors import UserError

# Every module that defines an entry point's config; their ProcessConfig subclasses are collected below.
CONFIG_MODULES = ("chexnet.config", "chexnet.evaluate", "segmentation.config", "smoke.train", "training.evaluation")


def config_classes():
    for module in CONFIG_MODULES:
        importlib.import_module(module)
    found, todo = set(), [ProcessConfig]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    ours = (*CONFIG_MODULES, "runtime.config", "training.config")  # not the tests' own configs
    return sorted((c for c in found if c.__module__ in ours), key=lambda c: c.__qualname__)


def numeric_fields(cls):
    hints = typing.get_type_hints(cls)
    return [f for f in dataclasses.fields(cls) if hints[f.name] in (int, float)]


def required_argv(cls, tmp_path):
    """The flags a class needs before its numbers are looked at (evaluate: a run folder)."""
    if "run" in {f.name for f in dataclasses.fields(cls)}:
        (tmp_path / "config.json").write_text("{}")
        return ["--run", str(tmp_path)]
    return []


def outside(value, key, is_int):
    """A value just outside the bound ``value`` of kind ``key``."""
    step = 1 if is_int else max(1e-9, abs(value) * 0.01)
    return {"at_least": value - step, "above": value, "at_most": value + step}[key]


# The entry points' own classes: their fields include every shared one.
CASES = [(cls, f, key) for cls in config_classes() if cls.__module__ in CONFIG_MODULES
         for f in numeric_fields(cls) for key, _, _ in BOUNDS if f.metadata.get(key) is not None]


def test_every_numeric_flag_of_every_entry_point_has_a_lower_and_an_upper_bound():
    classes = config_classes()
    assert {c.__name__ for c in classes} >= {"CheXNetConfig", "SegmentationConfig", "SmokeConfig", "EvalConfig",
                                               "CheXNetEvalConfig"}
    missing = [f"{c.__name__}.{f.name}" for c in classes for f in numeric_fields(c)
               if f.metadata.get("at_most") is None
               or (f.metadata.get("at_least") is None and f.metadata.get("above") is None)]
    assert not missing, f"numeric flags without a range (field(..., at_least=/above=, at_most=)): {missing}"


@pytest.mark.parametrize("cls, f, key", CASES, ids=[f"{c.__name__}-{f.name}-{k}" for c, f, k in CASES])
def test_a_value_outside_a_flags_range_is_one_line_naming_the_flag(cls, f, key, tmp_path):
    base = required_argv(cls, tmp_path)
    parse_args(cls, base)  # the defaults are inside every range
    is_int = typing.get_type_hints(cls)[f.name] is int
    bad = (int if is_int else float)(outside(f.metadata[key], key, is_int))
    with pytest.raises(UserError) as err:
        parse_args(cls, [*base, f"{flag_name(f.name)}={bad}"])  # "=": argparse takes -1e-09 for a flag
    message = str(err.value)
    assert message.startswith(f"{flag_name(f.name)} must be ") and message.endswith(f"got {bad!r}")
    assert "\n" not in message


def test_a_nan_is_outside_every_range(tmp_path):
    from chexnet.config import CheXNetConfig
    with pytest.raises(UserError, match="^--base-lr must be > 0, got nan$"):
        parse_args(CheXNetConfig, ["--base-lr", "nan"])


def test_the_help_shows_each_range(capsys):
    from chexnet.config import CheXNetConfig
    with pytest.raises(SystemExit):
        parse_args(CheXNetConfig, ["--help"])
    assert "(default: 0.001; > 0 and <= 10)" in " ".join(capsys.readouterr().out.split())


def test_a_floor_above_the_learning_rate_is_refused():
    from chexnet.config import CheXNetConfig
    with pytest.raises(UserError, match=r"^--min-lr 0.01 is above --base-lr 0.001: .* lower --min-lr$"):
        parse_args(CheXNetConfig, ["--min-lr", "0.01"])
