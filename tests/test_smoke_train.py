"""The smoke trainer end to end on 2 ranks through horovodrun (the demo's path)."""
import json
import sys

import pytest

from helpers import horovodrun, run_job
from runtime.metrics import read_events


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    proc = horovodrun(2, ["-m", "smoke.train", "--runs-dir", str(runs), "--run-name", "t",
                          "--epochs", "2", "--steps-per-epoch", "30"], timeout=600)
    return runs / "t", proc


def test_rank_zero_prints_a_final_throughput_line_and_rank_one_is_quiet(smoke_run):
    _, proc = smoke_run
    lines = proc.stdout.splitlines()
    final = [l for l in lines if l.startswith("[1,0]<stdout>:throughput: ") and "images/s on 2 rank" in l]
    assert len(final) == 1, proc.stdout[-3000:]
    assert not [l for l in lines if l.startswith("[1,1]<stdout>:")], "rank 1 printed to stdout"


def test_config_json_is_the_resolved_config(smoke_run):
    run, _ = smoke_run
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["epochs"] == 2 and cfg["ranks"] == 2
    assert cfg["environment"]["tensorflow"] == "2.18.1"
    assert cfg["environment"]["horovod"] == "0.28.1"


def test_metrics_stream_has_epochs_with_throughput(smoke_run):
    run, _ = smoke_run
    events = [r["event"] for r in read_events(str(run / "metrics.jsonl"))]
    assert events == ["config", "epoch", "epoch", "eval"]  # rank 0 alone wrote it
    for rec in read_events(str(run / "metrics.jsonl"), "epoch"):
        tp = rec["throughput"]
        assert tp["ranks"] == 2 and tp["images_per_s"] > 0
        assert tp["timed_steps"] == 30 - 5  # default 5 warm-up steps excluded
        assert tp["images"] == 2 * 25 * 32
        assert len(tp["images_per_s_per_rank"]) == 2
        assert tp["step_time_p50_s"] <= tp["step_time_p90_s"] <= tp["step_time_p99_s"]
    # Learning rate warmed up from 2e-3 to 2e-3 x sqrt(2 ranks) (the default sqrt rule) during epoch 1.
    assert read_events(str(run / "metrics.jsonl"), "epoch")[-1]["lr"] == pytest.approx(2e-3 * 2 ** 0.5)


def test_model_learned_and_ranks_agree(smoke_run):
    run, _ = smoke_run
    final = read_events(str(run / "metrics.jsonl"), "eval")[0]
    assert final["weights_in_sync"] is True
    assert final["accuracy"] > 0.8  # 4 classes: chance is 0.25


def test_bad_flag_value_is_a_one_line_error():
    proc = run_job([sys.executable, "-m", "smoke.train", "--epochs", "0"], expect_rc=2, timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "error: --epochs must be >= 1, got 0"
