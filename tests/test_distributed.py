"""The runtime on 2 real MPI ranks: sync, averaging, gathering, warm-up, throughput."""
import json

import numpy as np
import pytest

from helpers import run_ranks
from runtime.callbacks import progress_mode
from runtime.schedule import warmup_lr


@pytest.fixture(scope="module")
def collectives(tmp_path_factory):
    out = tmp_path_factory.mktemp("collectives")
    run_ranks(2, ["tests/mpi_programs/collectives.py", "--out", str(out)], timeout=300)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_real_ranks(collectives):
    assert [c["rank"] for c in collectives] == [0, 1]
    assert all(c["size"] == 2 for c in collectives)


def test_threads_split_cores_between_local_ranks(collectives):
    import os
    cores = os.cpu_count()
    # 2 ranks on one node may use at most all cores between them.
    assert sum(c["threads"] for c in collectives) <= max(2, cores)
    # Set before MPI starts: a rank waiting in a collective gives its core back (runtime.distributed).
    assert all(c["mpi_yield_when_idle"] == "1" for c in collectives)


def test_allreduce_mean_is_true_mean_on_every_rank(collectives):
    for c in collectives:
        assert c["mean"] == pytest.approx({"a": 1.5, "b": 5.0})


def test_metric_average_callback_averages_epoch_logs(collectives):
    for c in collectives:
        assert c["averaged_logs"] == pytest.approx({"loss": 0.5, "accuracy": 0.625})


def test_average_variables_makes_every_rank_hold_the_mean(collectives):
    for c in collectives:  # rank 0 held [0, 0] and 3, rank 1 held [1, 10] and 4
        vector, scalar = c["averaged_variables"]
        assert vector == pytest.approx([0.5, 5.0]) and scalar == pytest.approx(3.5)


def test_images_seen_and_sums_add_over_ranks(collectives):
    for c in collectives:
        assert c["sum"] == pytest.approx({"images": 24.0})
        assert c["images_seen"] == (3 + 4) * 4


def test_allgather_concatenates_unequal_lengths_in_rank_order(collectives):
    for c in collectives:
        assert c["gathered"] == [0, 1, 100, 101, 102]


def test_throughput_gathered_over_ranks_from_known_timings(collectives):
    # rank 0: timed steps of 1 s, 1 s; rank 1: 2 s, 2 s; 10 images each step.
    for c in collectives:
        tp = c["throughput"]
        assert tp["images"] == 40
        assert tp["elapsed_s"] == pytest.approx(4.0)
        assert tp["images_per_s"] == pytest.approx(10.0)
        assert tp["images_per_s_per_rank"] == pytest.approx([10.0, 5.0])
        assert tp["step_time_p50_s"] == pytest.approx(1.5)


def _train_sync(tmp_path, mode, accum=1, extra=(), ranks=2):
    run_ranks(ranks, ["tests/mpi_programs/train_sync.py", "--mode", mode, "--out", str(tmp_path),
                  "--grad-accum-steps", str(accum), *extra], timeout=300)
    return json.loads((tmp_path / "result.json").read_text())


def test_weights_identical_on_every_rank_after_training(tmp_path):
    result = _train_sync(tmp_path, "runtime")
    assert len(result["digests"]) == 2
    assert result["digests"][0] == result["digests"][1]
    assert result["in_sync"] is True and result["wrapped"] is True  # Horovod's allreduce wrapper
    # Warm-up from the single-rank rate 1e-3 to 2e-3 over 4 steps, then held.
    assert result["lr"] == pytest.approx([1e-3, 1.25e-3, 1.5e-3, 1.75e-3, 2e-3, 2e-3])


def test_without_runtime_ranks_diverge(tmp_path):
    # The control: same program without broadcast and distributed optimizer.
    # If this passed with identical digests, the test above would prove nothing.
    result = _train_sync(tmp_path, "plain")
    assert result["digests"][0] != result["digests"][1]
    assert result["in_sync"] is False


def test_gradient_accumulation_keeps_ranks_in_sync(tmp_path):
    result = _train_sync(tmp_path, "runtime", accum=2)
    assert result["digests"][0] == result["digests"][1]


def test_one_rank_trains_with_keras_own_optimizer_unless_it_accumulates(tmp_path):
    """One rank has nothing to average: the wrapper, whose graph costs seconds of CPU per process, is
    left out; accumulating batches is the wrapper's work, so there it stays."""
    assert _train_sync(tmp_path, "runtime", ranks=1)["wrapped"] is False
    assert _train_sync(tmp_path, "runtime", accum=2, ranks=1)["wrapped"] is True


def test_two_ranks_accumulating_two_batches_make_the_updates_of_four_ranks(tmp_path):
    """N ranks x K batches = N*K ranks x 1 batch (the same global batches per update, Adam counting
    updates); a third job of 4 ranks x 1 would need 4 processes on 2 cores, so 2 x 1 and 1 x 2 it is."""
    run_ranks(2, ["tests/mpi_programs/accumulation.py", "--grad-accum-steps", "1", "--out", str(tmp_path)],
              timeout=300)
    run_ranks(1, ["tests/mpi_programs/accumulation.py", "--grad-accum-steps", "2", "--out", str(tmp_path)],
              timeout=300)
    wide, deep = (np.load(tmp_path / f"weights-k{k}.npz") for k in (1, 2))
    assert int(wide["iterations"]) == int(deep["iterations"]) == 6  # updates, not the 12 batches of 1 x 2
    arrays = sorted(k for k in wide.files if k.startswith("arr_"))
    assert len(arrays) == 4
    for name in arrays:
        np.testing.assert_allclose(deep[name], wide[name], rtol=1e-5, atol=1e-6)
    assert not np.allclose(wide["arr_0"], wide["initial_kernel"])  # it trained
    np.testing.assert_array_equal(wide["initial_kernel"], deep["initial_kernel"])


def test_fp16_compressed_allreduce_keeps_ranks_in_sync(tmp_path):
    result = _train_sync(tmp_path, "runtime", extra=["--fp16-allreduce"])
    assert result["digests"][0] == result["digests"][1]


def test_warmup_lr_ramp():
    assert warmup_lr(0, 10, 0.1, 0.8) == pytest.approx(0.1)
    assert warmup_lr(5, 10, 0.1, 0.8) == pytest.approx(0.45)
    assert warmup_lr(10, 10, 0.1, 0.8) == pytest.approx(0.8)
    assert warmup_lr(99, 10, 0.1, 0.8) == pytest.approx(0.8)
    assert warmup_lr(0, 0, 0.1, 0.8) == pytest.approx(0.8)  # no warm-up


def test_progress_only_on_rank_zero_and_no_bars_under_mpi():
    assert progress_mode("auto", is_chief=False, interactive=True, under_mpi=False) == "none"
    assert progress_mode("bar", is_chief=False, interactive=True, under_mpi=False) == "none"
    assert progress_mode("auto", is_chief=True, interactive=True, under_mpi=True) == "log"
    assert progress_mode("auto", is_chief=True, interactive=True, under_mpi=False) == "bar"
    assert progress_mode("auto", is_chief=True, interactive=False, under_mpi=False) == "log"
    assert progress_mode("bar", is_chief=True, interactive=False, under_mpi=True) == "bar"
