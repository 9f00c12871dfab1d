"""The benchmark commands on tiny sizes: each runs end to end and builds its table from its records."""
import csv
import os
import sys

from helpers import run_job
from runtime.metrics import read_events


def test_allreduce_study_tables_come_from_its_records(tmp_path):
    out = tmp_path / "ar"
    run_job([sys.executable, "benchmarks/allreduce.py", "--sizes", "1K,64K", "--repeats", "3",
             "--fusion", f"0:1,{64 << 20}:1", "--out", str(out)], timeout=600)
    records = read_events(str(out / "metrics.jsonl"), "allreduce")
    assert sorted((r["impl"], r["controller"], r["bytes"]) for r in records if r["impl"] != "horovod grouped") == \
        sorted((i, c, n) for i, c in (("mpi4py", "mpi"), ("horovod", "mpi"), ("horovod", "gloo"))
               for n in (1024, 65536))
    assert sorted(r["fusion_threshold"] for r in records if r["impl"] == "horovod grouped") == ["0", str(64 << 20)]
    assert all(r["ranks"] == 2 and r["repeats"] == 3 and r["seconds_p50"] > 0 for r in records)
    with open(str(out) + ".csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(records)
    def key(r):
        return r["impl"], r["controller"], int(r["bytes"]), str(r.get("fusion_threshold", "")), \
            str(r.get("cycle_time_ms", ""))

    by = {key(r): r for r in records}
    for row in rows:  # every figure of the table is its record's
        r = by[key(row)]
        assert float(row["busbw_GBps"]) == float(f"{r['busbw_GBps']:.6g}")
    md = open(str(out) + ".md").read()
    assert "| 1 KB |" in md and "| 64 KB |" in md and "| off (0) | 1 ms |" in md
    assert os.path.getsize(str(out) + ".png") > 5_000
    # Rebuilt from the records alone, the tables come out the same.
    run_job([sys.executable, "benchmarks/allreduce.py", "--tables-only", "--out", str(out)], timeout=120)
    assert open(str(out) + ".md").read() == md
