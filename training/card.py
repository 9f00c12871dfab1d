"""The model card of an export: model_card.json (for programs) and MODEL_CARD.md (for people), from the run.

    data = contents("chexnet", parts, state, "runs/cx/best.npz", {"savedmodel": "savedmodel", "onnx": "model.onnx"},
                    checks, timings)
    write("exported/cx", data)
    written_by_export("exported/cx/model_card.json")   # True: --overwrite may replace that folder

The figures come from the run folder the checkpoint is in: the validation
figures logged at the checkpoint's epoch (metrics.jsonl ``epoch`` records),
and the evaluate records of that same checkpoint and epoch (``eval``
records), each with its bootstrap interval where evaluate computed one. The
training data is the manifest of the records the run trained on
(config.json's data_dir): its SHA-256 and split sizes. Light: no TensorFlow.
"""
import datetime
import hashlib
import json
import os
import subprocess

from runtime.files import sha256_of, write_json
from runtime.metrics import read_events
from training import paths

MARK = "training.export"
INTENDED_USE = "research; not for clinical use"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOLATILE = ("event", "time")


def written_by_export(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh).get("exported_by") == MARK
    except (OSError, ValueError, AttributeError):
        return False


def contents(name, parts, state, checkpoint_path, files, checks, timings):
    """Everything the card says, as one JSON-ready dict; ``files``: {format: its name in the export folder}."""
    run = os.path.dirname(os.path.abspath(checkpoint_path))
    return {"exported_by": MARK, "workload": name, "intended_use": INTENDED_USE,
            **parts.describe(state),
            "checkpoint": {"file": os.path.abspath(checkpoint_path), "epoch": state.get("epoch"),
                           "monitor": state.get("monitor"), "best": state.get("best")},
            "precision": {"trained": state.get("precision", "float32"), "exported": "float32",
                          "note": "exported in float32 whatever the training precision: equal to predict "
                                  "--precision float32"},
            "files": dict(files), "checks": {"max_abs_difference": checks,
                                                                 "on": "2 random tensors, against TensorFlow"},
            "export_seconds": timings, "training_data": training_data(run), "figures": figures(run, state,
                                                                                               checkpoint_path),
            "operating_points": {**operating_points(checkpoint_path), "output": state.get("operating_point")},
            "code_version": code_version(), "exported_at": datetime.datetime.now().astimezone().isoformat()}


def training_data(run):
    """The manifest the run trained on: path, SHA-256, data set, options and split sizes; or why not."""
    try:
        with open(os.path.join(run, "config.json"), encoding="utf-8") as fh:
            data_dir = json.load(fh)["config"]["data_dir"]
        path = os.path.join(data_dir, "manifest.json")
        with open(path, "rb") as fh:
            raw = fh.read()
        manifest = json.loads(raw)
    except (OSError, ValueError, KeyError, TypeError) as err:
        return {"found": False, "why": f"no readable config.json and manifest.json from {run} "
                                       f"({type(err).__name__})"}
    splits = {name: {k: v for k, v in split.items() if k in ("images", "patients")}
              for name, split in manifest.get("splits", {}).items()}
    return {"found": True, "manifest": os.path.abspath(path), "manifest_sha256": hashlib.sha256(raw).hexdigest(),
            "dataset": manifest.get("dataset"), "options": manifest.get("options"), "splits": splits}


def operating_points(checkpoint_path):
    """evaluate's operating_points.json beside the checkpoint, when it was chosen for this very file (by SHA-256)."""
    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), "operating_points.json")
    try:
        with open(path, encoding="utf-8") as fh:
            saved = json.load(fh)
    except (OSError, ValueError):
        return {"found": False, "why": f"no operating_points.json beside {checkpoint_path}: grade the checkpoint "
                                       f"with chexnet.evaluate --split val,test first"}
    if saved.get("checkpoint_sha256") != sha256_of(checkpoint_path):
        return {"found": False, "why": f"{path} was chosen for another checkpoint ({saved.get('checkpoint')}); "
                                       f"grade this one with chexnet.evaluate --split val,test --checkpoint "
                                       f"{os.path.basename(checkpoint_path)}"}
    return {"found": True, **{k: saved[k] for k in ("chosen_on", "target_sensitivity", "points", "measured")}}


def thresholds(checkpoint_path, kind):
    """Per class, in order, the threshold of operating point ``kind``; NaN where val could not choose one."""
    return [float("nan") if p[kind] is None else p[kind] for p in operating_points(checkpoint_path)["points"]]


def figures(run, state, checkpoint_path):
    """Validation figures at the checkpoint's epoch and the evaluate records of this checkpoint."""
    stream = os.path.join(run, "metrics.jsonl")
    if not os.path.isfile(stream):
        return {"found": False, "why": f"no metrics.jsonl beside the checkpoint ({run})"}
    epoch, name = state.get("epoch"), os.path.basename(checkpoint_path)
    logged = [e for e in read_events(stream, "epoch") if e.get("epoch") == epoch]
    validation = {k: v for k, v in (logged[-1] if logged else {}).items() if k.startswith("val_")}
    evaluations = {}
    for record in read_events(stream, "eval"):
        if record.get("checkpoint") == name and record.get("epoch") == epoch:
            evaluations[record["split"]] = {k: v for k, v in record.items() if k not in VOLATILE}
    return {"found": True, "epoch": epoch, "validation": validation, "evaluations": evaluations}


PACKAGES = ("chexnet", "dataprep", "runtime", "segmentation", "smoke", "training")  # the code that shapes a model


def code_version():
    """git describe of the checkout's commit; where the packages or data stages differ from it, or outside a
    checkout, with the SHA-256 of their sources (``sources_sha256``), so that two versions never read alike."""
    commit = _git("describe", "--always", "--tags")
    if commit and not _git("status", "--porcelain", "--", *PACKAGES, "*.sh"):
        return commit
    return f"{commit or 'not a git checkout'}+sources.{sources_sha256()[:16]}"


def _git(*args):
    """git's output in the checkout, stripped; "" where git or the checkout is missing."""
    try:
        return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def sources_sha256():
    """SHA-256 over the names and bytes of the packages' .py files and the top-level data stages (.sh)."""
    files = [f for f in os.listdir(ROOT) if f.endswith(".sh")]
    for package in PACKAGES:
        for folder, dirs, names in os.walk(os.path.join(ROOT, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            files += [os.path.relpath(os.path.join(folder, n), ROOT) for n in names if n.endswith(".py")]
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + sha256_of(os.path.join(ROOT, rel)).encode())
    return digest.hexdigest()


def write(folder, data):
    write_json(os.path.join(folder, "model_card.json"), data)
    paths.write_text(os.path.join(folder, "MODEL_CARD.md"), markdown(data))


def markdown(data):
    """MODEL_CARD.md: the same facts, in the order a reader needs them."""
    lines = [f"# Model card: {data['workload']} ({data.get('model', '')})", "",
             f"**Intended use: {data['intended_use']}.**", "",
             "## Classes (output order)", "", *(f"{i}. {c}" for i, c in enumerate(data["classes"])), "",
             "## Input", "", *(f"- {line}" for line in data["input_contract"]), "",
             "## Outputs", "", *(f"- `{k}`: {v}" for k, v in data["outputs"].items()), "",
             "## Files", "", *(f"- `{v}` ({k})" for k, v in data["files"].items()), "",
             f"Precision: trained in {data['precision']['trained']}, exported in float32 "
             f"({data['precision']['note']}). Largest difference from TensorFlow when loaded back: "
             + ", ".join(f"{k} {v:.2g}" for k, v in data["checks"]["max_abs_difference"].items()) + ".", "",
             *_data_lines(data["training_data"]), *_figure_lines(data["figures"]),
             *_operating_lines(data["operating_points"]),
             f"Checkpoint: `{data['checkpoint']['file']}` (epoch {data['checkpoint']['epoch']}). "
             f"Code version: `{data['code_version']}`. Exported {data['exported_at']}.", ""]
    return "\n".join(lines)


def _data_lines(td):
    if not td["found"]:
        return ["## Training data", "", f"Not recorded: {td['why']}.", ""]
    sizes = ", ".join(f"{name} {s.get('images')} images" + (f" ({s['patients']} patients)" if "patients" in s
                                                            else "") for name, s in td["splits"].items())
    return ["## Training data", "", f"`{td['manifest']}` ({td['dataset']}), SHA-256 `{td['manifest_sha256']}`.",
            f"Splits: {sizes}.", ""]


def _figure_lines(fig):
    if not fig["found"]:
        return ["## Figures", "", f"Not recorded: {fig['why']}.", ""]
    lines = ["## Figures", "", f"Validation at epoch {fig['epoch']}: " + (", ".join(
        f"{k} {v:.4g}" for k, v in fig["validation"].items() if isinstance(v, float) and "_auc_" not in k)
        or "not logged") + "."]
    for split, record in fig["evaluations"].items():
        means = [(k, v) for k, v in record.items() if k.startswith("mean_") and not k.endswith("_ci")]
        shown = [f"{k} {v:.4g}" + (f" [{record[k + '_ci'][0]:.4g}, {record[k + '_ci'][1]:.4g}]"
                                   if k + "_ci" in record else "") for k, v in means]
        lines.append(f"- {split} ({record.get('images')} images, evaluate; 95% bootstrap intervals): "
                     f"{', '.join(shown)}")
    if not fig["evaluations"]:
        lines.append("- no evaluate record of this checkpoint: run the workload's evaluate, then export again")
    return [*lines, ""]


def _operating_lines(op):
    if not op["found"]:
        return ["## Operating points", "", f"Not recorded: {op['why']}.", ""]
    measured = op["measured"].get("test") or op["measured"].get(op["chosen_on"], [])
    split = "test" if "test" in op["measured"] else op["chosen_on"]
    lines = ["## Operating points", "",
             f"Thresholds chosen on the {op['chosen_on']} split (positive when the probability is at least the "
             f"threshold): Youden's J, and the highest threshold reaching sensitivity {op['target_sensitivity']:g}. "
             f"Sensitivity / specificity on the {split} split." + (
                 f" The `positive` output uses the {op['output']} threshold." if op["output"] else ""), "",
             "| class | Youden threshold | sens / spec | sensitivity threshold | sens / spec |", "|---|---|---|---|---|"]
    for row in measured:
        lines.append(f"| {row['pathology']} | {_num(row['youden_threshold'])} | {_num(row['youden_sensitivity'])} / "
                     f"{_num(row['youden_specificity'])} | {_num(row['sensitivity_threshold'])} | "
                     f"{_num(row['sensitivity_sensitivity'])} / {_num(row['sensitivity_specificity'])} |")
    return [*lines, ""]


def _num(v):
    return "n/a" if v is None else f"{v:.4g}"
