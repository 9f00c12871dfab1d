"""The metrics stream: one JSON object per line in ``runs/<name>/metrics.jsonl``.

    stream = MetricsStream("runs/demo/metrics.jsonl", enabled=ctx.is_chief)
    stream.write("epoch", epoch=1, loss=0.31, images_per_s=412.0)
    read_events("runs/demo/metrics.jsonl", "epoch")   # -> [{"event": "epoch", ...}]

Every record has ``event`` (config, epoch, eval, benchmark, ...) and ``time``
(Unix seconds). NaN and infinities are written as "nan", "inf", "-inf" (strict
JSON has no such numbers) and ``read_events`` gives them back as floats. Units live in the field names (``_s`` seconds, ``_per_s`` per
second); tables and plots are built from this file, never from stdout.
"""
import json
import math
import os
import time


_NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _clean(value):
    """JSON has no NaN/Inf: they are written as the strings "nan", "inf", "-inf" (read back as floats)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):  # numpy / TF scalars
        return _clean(value.item())
    return value


def _restore(value):
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    return value


def fmt(value, spec=".4f"):
    """A figure for a table: ``nan`` for NaN or a missing value, ``inf``/``-inf`` as such."""
    if value is None:
        return "nan"
    value = float(value)
    return str(value) if not math.isfinite(value) else format(value, spec)


class MetricsStream:
    """Appends records; only the chief (rank 0) writes, the others hold a no-op."""

    def __init__(self, path, enabled=True):
        self.path = path
        self.enabled = enabled
        if enabled:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(self, event, **fields):
        if not self.enabled:
            return
        record = {"event": event, "time": round(time.time(), 3), **_clean(fields)}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=False) + "\n")


def read_events(path, event=None):
    """All records of ``path`` (or those whose ``event`` matches), in order."""
    with open(path, encoding="utf-8") as fh:
        records = [_restore(json.loads(line)) for line in fh if line.strip()]
    return [r for r in records if event is None or r.get("event") == event]
