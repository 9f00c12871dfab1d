"""Segmentation's evaluation tables: Dice, IoU, precision, recall with bootstrap 95% CIs, per-image
figures, image panels and the inference rate (``training.evaluation`` runs them, through the workload:
segmentation.workload).

    graded = timed_gather(ev, predictor, split_dataset(ev), loss)   # collective
    write_split(ev, predictor, *graded)       # rank 0: <run>/eval-<split>/{metrics.md, metrics.csv, per_image.csv, panels.png}

Figures are per image on predictions thresholded at 0.5, then averaged (segmentation.metrics).
"""
import os
import time

from runtime.files import atomic_write
from training import paths

PANELS = 6  # validation images shown as image | truth | prediction


def panels_png(path, images, masks, logits, names):
    """One row per image: the frame, the true mask, the predicted mask (logit > 0)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(images), 3, figsize=(7.5, 2.5 * len(images)), squeeze=False)
    for row, (img, mask, z, name) in enumerate(zip(images, masks, logits, names)):
        for ax, shown, title in zip(axes[row], (img, mask[..., 0], z[..., 0] > 0), ("image", "truth", "prediction")):
            ax.imshow(shown, cmap=None if shown.ndim == 3 else "gray", vmin=0, vmax=1)
            ax.set_title(f"{title}: {name[:12]}" if title == "image" else title, fontsize=8)
            ax.axis("off")
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, bbox_inches="tight"))
    plt.close(fig)


def timed_gather(ev, predictor, ds, loss):
    """(counts, losses, names, inference images/s over all ranks: images / slowest rank's time).

    The time covers reading, decoding and predicting the split after one
    warm-up batch (tracing left out), as a user's inference job would see it.
    """
    from runtime import distributed
    from segmentation import validation
    from training.gather import gather_exactly_once
    predictor.warm_up(ds)
    t0 = time.perf_counter()
    local, names = predictor.local(ds, validation.per_image_rows(loss))
    elapsed = max(distributed.allgather_object(time.perf_counter() - t0))
    rows, all_names = gather_exactly_once(local, names, ev.manifest.images(ev.split))
    return rows["counts"], rows["loss"], all_names, len(all_names) / elapsed


def write_tables(out, title, rows, counts, names):
    from segmentation import metrics
    paths.write_text(os.path.join(out, "metrics.md"), f"# Segmentation: {title}\n\n{metrics.markdown(rows)}\n")
    paths.write_text(os.path.join(out, "metrics.csv"), metrics.csv_text(rows))
    paths.write_csv(os.path.join(out, "per_image.csv"), *metrics.per_image_rows(names, counts))


def split_dataset(ev):
    from segmentation import data
    return data.eval_dataset(ev.manifest, ev.split, ev.ctx.rank, ev.ctx.size, ev.cfg.eval_batch)


def write_split(ev, predictor, counts, per_image_loss, names, images_per_s):
    """Rank 0: the split's tables and panels in <run>/eval-<split>/, and its ``eval`` record."""
    from segmentation import metrics
    cfg, ds = ev.cfg, split_dataset(ev)
    rows = metrics.table(counts, n_boot=cfg.bootstrap, seed=cfg.seed)
    known = ev.manifest.ceiling(ev.split)
    if known:  # a realistic synthetic set: each figure beside the best achievable there
        rows = metrics.with_ceiling(rows, known)
    out, title = ev.out_dir(), ev.title(len(names))
    write_tables(out, title, rows, counts, names)
    sample = next(iter(ds.unbatch().batch(PANELS)), None)  # rank 0's first images
    if sample is not None:
        x, y, shown = sample
        panels_png(os.path.join(out, "panels.png"), x.numpy(), y.numpy(), predictor.model.predict(x, verbose=0),
                   [n.decode() for n in shown.numpy()])
    ev.record(len(names), **{f"mean_{r['figure']}": r["mean"] for r in rows},
              **{f"mean_{r['figure']}_ci": [r["ci_low"], r["ci_high"]] for r in rows},
              **{f"mean_{r['figure']}_{k}": r[k] for r in rows if r.get("ceiling") for k in ("ceiling", "of_ceiling")},
              loss=float(per_image_loss.mean()), inference_images_per_s=images_per_s, ranks=ev.ctx.size)
    print(f"## Segmentation: {title}\n\n{metrics.markdown(rows)}\n\ninference: {images_per_s:.1f} images/s on "
          f"{ev.ctx.size} rank(s), batch {cfg.eval_batch}\n(saved in {out}/)", flush=True)
    ev.log.info("evaluation written to %s", out)
