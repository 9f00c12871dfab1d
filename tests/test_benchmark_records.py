"""Every recorded study in benchmarks/results/ rebuilds its committed tables from its records alone."""
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
