"""Tables built from a run's metrics.jsonl (never from stdout).

    print(throughput_table("runs/demo/metrics.jsonl"))
    print(epoch_table("runs/demo/metrics.jsonl"))
"""
from runtime.metrics import read_events


def throughput_table(path):
    lines = ["| epoch | images/s (all ranks) | images/s per rank | step p50 / p90 / p99 (s) | epoch time (s) |",
             "|---|---|---|---|---|"]
    for rec in read_events(path, "epoch"):
        tp = rec.get("throughput")
        if not tp:
            lines.append(f"| {rec['epoch']} | n/a (fewer steps than the warm-up) | | | {rec['epoch_time_s']:.1f} |")
            continue
        per_rank = ", ".join(f"{v:.1f}" for v in tp["images_per_s_per_rank"])
        lines.append(f"| {rec['epoch']} | {tp['images_per_s']:.1f} | {per_rank} | {tp['step_time_p50_s']:.3f} / "
                     f"{tp['step_time_p90_s']:.3f} / {tp['step_time_p99_s']:.3f} | {rec['epoch_time_s']:.1f} |")
    return "\n".join(lines)


def epoch_table(path):
    lines = ["| epoch | loss | val loss | val mean AUC | learning rate |", "|---|---|---|---|---|"]
    for rec in read_events(path, "epoch"):
        lines.append(f"| {rec['epoch']} | {rec.get('loss', float('nan')):.4f} | {rec.get('val_loss', float('nan')):.4f} "
                     f"| {rec.get('val_mean_auc', float('nan')):.4f} | {rec['lr']:.2e} |")
    return "\n".join(lines)
