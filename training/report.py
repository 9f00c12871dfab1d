"""Tables built from a run's metrics.jsonl (never from stdout); NaN shows as ``nan``.

    print(throughput_table("runs/demo/metrics.jsonl"))
    print(epoch_table("runs/demo/metrics.jsonl", [("val mean AUC", "val_mean_auc", ".4f")]))
    write_training_tables(run, ranks=2, columns=[...])     # <run>/training.md, and printed

``columns``: the trainer's validation figures, as (header, epoch-record key,
format); loss, validation loss, learning rate and images trained on are in
every epoch table.
"""
from runtime.metrics import fmt, read_events
from training.paths import write_text


def throughput_table(path):
    lines = ["| epoch | images/s (all ranks) | images/s per rank | step p50 / p90 / p99 (s) | epoch time (s) |",
             "|---|---|---|---|---|"]
    for rec in read_events(path, "epoch"):
        tp = rec.get("throughput")
        if not tp:
            lines.append(f"| {rec['epoch']} | n/a (fewer steps than the warm-up) | | | "
                         f"{fmt(rec.get('epoch_time_s'), '.1f')} |")
            continue
        per_rank = ", ".join(fmt(v, ".1f") for v in tp["images_per_s_per_rank"])
        steps = " / ".join(fmt(tp.get(f"step_time_p{q}_s"), ".3f") for q in (50, 90, 99))
        lines.append(f"| {rec['epoch']} | {fmt(tp['images_per_s'], '.1f')} | {per_rank} | {steps} | "
                     f"{fmt(rec.get('epoch_time_s'), '.1f')} |")
    return "\n".join(lines)


def epoch_table(path, columns=()):
    headers = ["epoch", "loss", "val loss", *(h for h, _, _ in columns), "learning rate", "images trained on"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for rec in read_events(path, "epoch"):
        cells = [str(rec["epoch"]), fmt(rec.get("loss")), fmt(rec.get("val_loss")),
                 *(fmt(rec.get(key), spec) for _, key, spec in columns),
                 fmt(rec.get("lr"), ".2e"), str(rec.get("train_images_seen", "n/a"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_training_tables(run, ranks, columns=()):
    """``<run>/training.md`` with both tables, also printed (rank 0 calls this)."""
    tables = (f"## Throughput ({ranks} ranks)\n\n{throughput_table(run.stream.path)}\n\n"
              f"## Training\n\n{epoch_table(run.stream.path, columns)}\n")
    write_text(run.file("training.md"), tables)  # atomic: a killed run leaves the previous tables whole
    print(tables, flush=True)


CEILING_FIGURES = (("mean AUC", "mean_auc"), ("mean Dice", "mean_dice"))


def ceiling_summary(run, split="test"):
    """One line: the run's latest ``split`` figure, its ceiling and the fraction of it (when the data set
    has a known ceiling: a realistic synthetic set), from metrics.jsonl.

        ceiling_summary("runs/demo")   # 'runs/demo, test split: mean AUC 0.7712, ceiling 0.8550, 0.902 of ceiling'
    """
    graded = [r for r in read_events(f"{run}/metrics.jsonl", "eval") if r.get("split") == split]
    if not graded:
        return f"{run}: no {split} evaluation"
    last = graded[-1]
    for name, key in CEILING_FIGURES:
        if key in last:
            known = (f", ceiling {fmt(last[key + '_ceiling'])}, {fmt(last[key + '_of_ceiling'], '.3f')} of ceiling"
                     if key + "_ceiling" in last else " (no known ceiling)")
            return f"{run}, {split} split: {name} {fmt(last[key])}{known}"
    return f"{run}: its {split} evaluation holds no {' or '.join(n for n, _ in CEILING_FIGURES)}"
