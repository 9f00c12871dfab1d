"""Run config from the command line, the metrics stream, atomic writes (one process)."""
import dataclasses
import glob
import json
import math
import os

import pytest

from helpers import ROOT
from runtime.config import RuntimeConfig, field, parse_args
from runtime.errors import UserError
from runtime.metrics import MetricsStream, fmt, read_events
from runtime.rundir import atomic_write


@dataclasses.dataclass
class DemoConfig(RuntimeConfig):
    epochs: int = field(3, "passes")
    base_lr: float = field(1e-3, "single-rank learning rate")


def test_every_field_is_a_flag_with_its_type():
    cfg = parse_args(DemoConfig, ["--epochs", "5", "--base-lr", "0.01", "--precision", "bfloat16",
                                  "--grad-accum-steps", "4", "--progress", "log", "--lr-scaling", "linear"])
    assert (cfg.epochs, cfg.base_lr, cfg.precision, cfg.grad_accum_steps) == (5, 0.01, "bfloat16", 4)
    assert cfg.lr_scaling == "linear" and parse_args(DemoConfig, []).precision == "auto"
    assert parse_args(DemoConfig, ["--no-xla"]).xla is False
    assert json.loads(json.dumps(cfg.to_dict()))["epochs"] == 5


def test_bad_values_are_one_line_errors():
    with pytest.raises(UserError, match="--grad-accum-steps must be >= 1, got 0"):
        parse_args(DemoConfig, ["--grad-accum-steps", "0"])
    with pytest.raises(UserError, match="drop --xla or --grad-accum-steps"):
        parse_args(DemoConfig, ["--xla", "--grad-accum-steps", "2"])
    with pytest.raises(SystemExit):  # argparse: wrong type / choice
        parse_args(DemoConfig, ["--progress", "fancy"])
    with pytest.raises(SystemExit):
        parse_args(DemoConfig, ["--precision", "float8"])


def test_accumulation_is_refused_where_it_could_not_be_exact():
    from training.config import TrainConfig
    with pytest.raises(UserError, match="^--elastic with --grad-accum-steps > 1 is refused"):
        parse_args(TrainConfig, ["--elastic", "--run-name", "r", "--grad-accum-steps", "2", "--data-dir", "d"])
    with pytest.raises(UserError, match="^--checkpoint-every-steps 5 is not a multiple of --grad-accum-steps 2"):
        parse_args(TrainConfig, ["--checkpoint-every-steps", "5", "--grad-accum-steps", "2", "--data-dir", "d"])
    assert parse_args(TrainConfig, ["--checkpoint-every-steps", "6", "--grad-accum-steps", "2",
                                    "--data-dir", "d"]).checkpoint_every_steps == 6


def test_the_rate_follows_the_images_per_update_and_the_warmup_counts_updates():
    from runtime.schedule import Schedule
    from training.config import TrainConfig
    cfg = TrainConfig(base_lr=1e-3, lr_scaling="linear", warmup_epochs=2, grad_accum_steps=4)
    plan = Schedule.of(cfg, ranks=2, steps_per_epoch=40)
    assert plan.target_lr == pytest.approx(8e-3)   # 2 ranks x 4 batches: the update of 8 ranks
    assert plan.warmup_updates == 20 and plan.at_epochs(1) == pytest.approx(4.5e-3)
    assert Schedule.of(TrainConfig(base_lr=1e-3), ranks=4, steps_per_epoch=10).target_lr == pytest.approx(2e-3)


def test_evaluate_takes_one_split_or_several_each_once(tmp_path):
    from training.evaluation import EvalConfig
    (tmp_path / "config.json").write_text("{}")
    run = ["--run", str(tmp_path)]
    assert parse_args(EvalConfig, run).split == "test"
    assert parse_args(EvalConfig, [*run, "--split", "val,test"]).split == "val,test"
    for bad in ("val,val", "dev", "val,", "val test"):
        with pytest.raises(UserError, match=f"^--split '{bad}': give train, val or test, or several of them "
                                            "comma-separated and each once, e.g. val,test$"):
            parse_args(EvalConfig, [*run, "--split", bad])


def test_a_preset_sets_defaults_and_flags_override_it(tmp_path):
    preset = tmp_path / "exp.json"
    preset.write_text(json.dumps({"epochs": 7, "base_lr": 1, "xla": True, "lr_scaling": "none"}))
    cfg = parse_args(DemoConfig, ["--preset", str(preset), "--epochs", "2"])
    assert (cfg.epochs, cfg.base_lr, cfg.xla, cfg.lr_scaling) == (2, 1, True, "none")
    assert "preset" not in cfg.to_dict()


@pytest.mark.parametrize("content, message", [
    ('{"epochs": 3, "epoch": 4}', "unknown setting 'epoch'"),
    ('{"epochs": "3"}', "epochs must be int, got '3'"),
    ('{"xla": 1}', "xla must be bool, got 1"),
    ('{"precision": "float8"}', "precision must be one of"),
    ('[1, 2]', "must hold one JSON object"),
    ('{"epochs": ', "cannot read it as JSON"),
])
def test_a_bad_preset_is_a_one_line_error_naming_the_file(tmp_path, content, message):
    preset = tmp_path / "bad.json"
    preset.write_text(content)
    with pytest.raises(UserError, match=message) as err:
        parse_args(DemoConfig, ["--preset", str(preset)])
    assert str(preset) in str(err.value) and "\n" not in str(err.value)


PRESET_CONFIGS = {"chexnet": "chexnet.config:CheXNetConfig", "segmentation": "segmentation.config:SegmentationConfig"}


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "presets", "*.json"))),
                         ids=os.path.basename)
def test_every_shipped_preset_loads_into_its_trainers_config(path):
    import importlib
    trainer = os.path.basename(path).split("_")[0]
    module, name = PRESET_CONFIGS[trainer].split(":")
    cfg = parse_args(getattr(importlib.import_module(module), name), ["--preset", path])
    for key, value in json.loads(open(path).read()).items():
        assert getattr(cfg, key) == value, key


def test_help_texts_may_hold_percent_signs(capsys):
    @dataclasses.dataclass
    class Percent(RuntimeConfig):
        level: float = field(95.0, "confidence level in % (95% intervals)")

    with pytest.raises(SystemExit) as stop:
        parse_args(Percent, ["--help"])
    assert stop.value.code == 0 and "in % (95% intervals)" in capsys.readouterr().out


def test_stream_writes_json_lines_with_event_and_non_finite_as_nan(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    stream = MetricsStream(str(path))
    stream.write("epoch", epoch=1, loss=float("nan"), per_rank=[1.0, float("inf"), float("-inf")])
    stream.write("eval", mean_auc=0.9)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])  # strict JSON: no NaN/Infinity tokens
    assert first["event"] == "epoch" and first["loss"] == "nan" and first["per_rank"] == [1.0, "inf", "-inf"]
    back = read_events(str(path), "epoch")[0]  # read back as floats
    assert math.isnan(back["loss"]) and back["per_rank"] == [1.0, math.inf, -math.inf]
    assert [r["mean_auc"] for r in read_events(str(path), "eval")] == [0.9]


def test_tables_show_nan_and_never_crash_on_it(tmp_path):
    from training import report
    path = tmp_path / "metrics.jsonl"
    stream = MetricsStream(str(path))
    stream.write("epoch", epoch=1, epoch_time_s=2.0, lr=1e-3, loss=float("nan"), val_loss=float("inf"),
                 val_mean_auc=float("nan"), throughput={"images_per_s": float("nan"), "images_per_s_per_rank":
                                                       [float("nan")], "step_time_p50_s": None,
                                                       "step_time_p90_s": 0.1, "step_time_p99_s": 0.2})
    epochs = report.epoch_table(str(path), [("val mean AUC", "val_mean_auc", ".4f")]).splitlines()[-1]
    assert epochs.startswith("| 1 | nan | inf | nan | 1.00e-03 |")
    assert "| nan | nan | nan / 0.100 / 0.200 |" in report.throughput_table(str(path))
    assert fmt(None) == "nan" and fmt(float("-inf")) == "-inf" and fmt(0.5, ".2f") == "0.50"


def test_disabled_stream_writes_nothing(tmp_path):
    MetricsStream(str(tmp_path / "m.jsonl"), enabled=False).write("epoch", epoch=1)
    assert not (tmp_path / "m.jsonl").exists()


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "best.h5"
    target.write_text("old")

    def broken(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(str(target), broken)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["best.h5"]  # no temp file left behind


def test_atomic_write_temp_keeps_extension(tmp_path):
    seen = []
    atomic_write(str(tmp_path / "last.keras"), lambda tmp: (seen.append(tmp), open(tmp, "w").close()))
    assert seen[0].endswith(".keras") and os.path.dirname(seen[0]) == str(tmp_path)
    assert (tmp_path / "last.keras").exists()


def test_a_runs_own_config_json_is_a_preset_for_its_trainer_less_the_run_folder(tmp_path):
    from chexnet.config import CheXNetConfig
    trained = parse_args(CheXNetConfig, ["--epochs", "7", "--base-lr", "0.002", "--run-name", "old", "--resume"])
    run_config = tmp_path / "config.json"  # as runtime.rundir writes it
    run_config.write_text(json.dumps({"config": trained.to_dict(), "ranks": 2, "environment": {"python": "3"}}))
    again = parse_args(CheXNetConfig, ["--preset", str(run_config), "--epochs", "9"])
    assert (again.epochs, again.base_lr, again.run_name, again.resume) == (9, 0.002, "", False)
