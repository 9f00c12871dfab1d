"""Every recorded study in benchmarks/results/ rebuilds its committed tables from its records alone; a study
leaves a run folder it did not make as it is."""
import os
import shutil
import sys

import pytest

from helpers import run_job

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "results")
# (script, results name, the tables it builds)
STUDIES = [("allreduce.py", "allreduce", (".md", ".csv")), ("core_split.py", "core_split", (".md",)),
           ("inference.py", "inference", (".md", "-latency.csv", "-pruning.csv")),
           ("input_pipeline.py", "input_pipeline", (".md", ".csv")), ("precision.py", "precision", (".md", ".csv")),
           ("scaling.py", "scaling", (".md", ".csv")), ("step_overhead.py", "step_overhead", (".md",)),
           ("lr_scaling.py", "lr_scaling", (".md",)), ("segmentation_input.py", "segmentation_input", (".md",)),
           ("tfrecord_write.py", "tfrecords", (".md",))]


@pytest.mark.parametrize("script,name,tables", STUDIES, ids=[s[1] for s in STUDIES])
def test_the_recorded_records_rebuild_the_committed_tables(tmp_path, script, name, tables):
    shutil.copytree(os.path.join(RESULTS, name), tmp_path / name)
    run_job([sys.executable, f"benchmarks/{script}", "--tables-only", "--out", str(tmp_path / name)], timeout=120)
    for suffix in tables:
        with open(os.path.join(RESULTS, name + suffix), encoding="utf-8") as committed:
            assert (tmp_path / (name + suffix)).read_text(encoding="utf-8") == committed.read(), suffix


def test_lr_scaling_refuses_a_run_folder_it_did_not_make_before_any_work(tmp_path):
    """A folder where the study would put a run, without the study's note beside it: refused in one line naming
    it, before the data stages, and left as it was (the study restarts only half-finished runs of its own)."""
    work = tmp_path / "work"
    theirs = work / "runs-100-e1" / "seed0" / "lr-sqrt-np1"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("mine")
    proc = run_job([sys.executable, "benchmarks/lr_scaling.py", "--images", "100", "--epochs", "1", "--ranks", "1",
                    "--workdir", str(work), "--out", str(tmp_path / "lr")], expect_rc=1, timeout=60)
    assert proc.stderr.strip().splitlines() == [
        f"{theirs} exists but this study did not make it (no {theirs}.study.json): it is left as it is; pass "
        f"another --workdir, or move it away"]
    assert (theirs / "notes.txt").read_text() == "mine" and sorted(os.listdir(work)) == ["runs-100-e1"]


def test_tfrecord_write_refuses_an_output_folder_it_did_not_make_before_any_work(tmp_path):
    """The same for the writing study's output folders in a --workdir of the user's."""
    work = tmp_path / "work"
    theirs = work / "enc-png"
    theirs.mkdir(parents=True)
    (theirs / "train-00000.tfrecord").write_bytes(b"theirs")
    proc = run_job([sys.executable, "benchmarks/tfrecord_write.py", "--images", "20", "--workdir", str(work),
                    "--out", str(tmp_path / "tfr")], expect_rc=1, timeout=60)
    assert proc.stderr.strip().splitlines() == [
        f"{theirs} exists but this study did not make it (no {theirs}.study.json): it is left as it is; pass "
        f"another --workdir, or move it away"]
    assert (theirs / "train-00000.tfrecord").read_bytes() == b"theirs" and os.listdir(work) == ["enc-png"]
