"""The data stages never destroy a user's files, refuse bad numbers in one line, and stop cleanly.

Each refusal runs the real shell stage and checks, by SHA-256, that every file
that was there before is still there, byte for byte, and that nothing was added.
"""
import glob
import hashlib
import importlib
import json
import os
import re
import shutil
import signal
import sys
import time

import pytest

from dataprep import flags
from dataprep.chestxray14 import facts
from dataprep.kvasir_seg import facts as kv
from helpers import ROOT, one_line_refusal, run_job, snapshot, started_job

MAIN_BLOCK = re.compile(r"""^if __name__ == ["']__main__["']:""", re.MULTILINE)


def stage(*args, expect_rc=0, timeout=300, **env):
    return run_job(["bash", *args], timeout=timeout, expect_rc=expect_rc, **env)


@pytest.fixture(scope="module")
def cx(tmp_path_factory):
    """24 synthetic ChestX-ray14 images at 32x32, downloaded and extracted (read only: copy to change)."""
    out = tmp_path_factory.mktemp("cx")
    stage("download_dataset.sh", "--out", str(out), "--synthetic", "24", "--image-size", "32")
    stage("extract_images.sh", "--out", str(out), "--jobs", "2")
    return out / "chestxray14"


# ------------------------------------------------------------------ 1. synthetic over a real download
def real_download(root, dataset):
    """A user's real download as the stages leave it: archives and the metadata placed by hand."""
    folder = root / dataset
    folder.mkdir(parents=True)
    if dataset == "chestxray14":
        for i, a in enumerate(facts.ARCHIVES):
            (folder / a.name).write_bytes(f"real archive {i}".encode() * 100)
        for name in (facts.CSV_NAME, facts.TRAIN_VAL_LIST, facts.TEST_LIST):
            (folder / name).write_text(f"the user's own {name}\n")
    else:
        (folder / kv.ZIP_NAME).write_bytes(b"PK real kvasir-seg.zip" * 100)
        for split in kv.SPLIT_LISTS:
            shutil.copy(os.path.join(kv.SHIPPED_SPLITS, kv.SPLIT_LISTS[split]), folder / kv.SPLIT_LISTS[split])
    return folder


@pytest.mark.parametrize("dataset", ["chestxray14", "kvasir-seg", "all"])
def test_a_synthetic_write_into_a_real_download_is_refused_and_every_file_stays_byte_identical(tmp_path, dataset):
    """With --dataset all the real set is Kvasir-SEG, the second written: ChestX-ray14 must not be written
    either, as every folder is checked before the first is written."""
    real = "kvasir-seg" if dataset == "all" else dataset
    folder = real_download(tmp_path, real)
    before = snapshot(tmp_path)
    proc = stage("download_dataset.sh", "--dataset", dataset, "--out", str(tmp_path), "--synthetic", "24",
                 "--image-size", "32", expect_rc=2)
    one_line_refusal(proc, str(folder), "not a synthetic set", "nothing was written")
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "chestxray14").exists() or real == "chestxray14"


def test_a_synthetic_set_rewrites_its_own_folder_but_not_a_file_replaced_since(tmp_path):
    folder = tmp_path / "chestxray14"
    write = ["download_dataset.sh", "--out", str(tmp_path), "--synthetic", "12", "--image-size", "32"]
    stage(*write)
    first = snapshot(folder)
    stage(*write, "--seed", "1")  # the same command with another seed: its own files, rewritten
    assert snapshot(folder)[facts.CSV_NAME] != first[facts.CSV_NAME]
    (folder / facts.CSV_NAME).write_text("the user's corrected CSV\n")
    before = snapshot(tmp_path)
    proc = stage(*write, "--seed", "2", expect_rc=2)
    one_line_refusal(proc, f"{folder / facts.CSV_NAME} is not the file the synthetic writer made")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ 4. records the writer did not write
@pytest.mark.parametrize("foreign", ["unrecorded-shard", "foreign-manifest"])
def test_the_writer_refuses_records_it_did_not_write_and_leaves_them_byte_identical(cx, tmp_path, foreign):
    """Another data set's records: test_kvasir_stages.py; here records or a manifest of no writer of the project."""
    out = tmp_path / "records"
    out.mkdir()
    if foreign == "unrecorded-shard":
        (out / "train-00000-of-00001.tfrecord").write_bytes(b"a user's own records")
    else:
        (out / "manifest.json").write_text(json.dumps({"tool": "someone else's"}))
    before = snapshot(out)
    proc = stage("write_tfrecords.sh", "--out", str(cx.parent), "--out-dir", str(out), "--image-size", "32",
                 expect_rc=2)
    one_line_refusal(proc, f"{out} holds ", "nothing was changed")
    assert snapshot(out) == before


# ------------------------------------------------------------------ 10. an unfinished download
def test_an_unfinished_download_is_refused_by_name_and_a_deliberate_subset_is_recorded(cx, tmp_path):
    """5 of 12 archives and a .part: extraction and writing refuse, naming them; --allow-partial writes the
    subset and the manifest says so; once the download is complete the same commands write every image."""
    folder = tmp_path / "chestxray14"
    folder.mkdir()
    for name in (facts.CSV_NAME, facts.TRAIN_VAL_LIST, facts.TEST_LIST):
        shutil.copy(cx / name, folder / name)
    for a in facts.ARCHIVES[:5]:
        shutil.copy(cx / a.name, folder / a.name)
    sixth = facts.ARCHIVES[5].name
    (folder / f"{sixth}.part").write_bytes((cx / sixth).read_bytes()[:100])
    before = snapshot(folder)
    proc = stage("extract_images.sh", "--out", str(tmp_path), expect_rc=2)
    line = one_line_refusal(proc, "7 of 12 archives missing", f"unfinished download (.part left): {sixth}",
                            "--allow-partial")
    assert all(a.name in line for a in facts.ARCHIVES[6:])
    assert snapshot(folder) == before and not (folder / "images_all").exists()

    stage("extract_images.sh", "--out", str(tmp_path), "--allow-partial")
    write = ["write_tfrecords.sh", "--out", str(tmp_path), "--image-size", "32", "--processes", "1"]
    proc = stage(*write, expect_rc=2)
    one_line_refusal(proc, "7 of 12 archives are not extracted", sixth, "--allow-partial")
    assert not (folder / "tfrecords").exists()

    stage(*write, "--allow-partial")
    manifest = json.loads((folder / "tfrecords" / "manifest.json").read_text())
    assert manifest["allow_partial"] is True
    assert manifest["archives_missing"] == {"unfinished download (.part left)": [sixth],
                                            "not downloaded": [a.name for a in facts.ARCHIVES[6:]]}
    assert 0 < manifest["counts"]["written"] < 24 and manifest["counts"]["accounted"] == 24

    (folder / f"{sixth}.part").unlink()
    for a in facts.ARCHIVES[5:]:
        shutil.copy(cx / a.name, folder / a.name)
    stage("extract_images.sh", "--out", str(tmp_path))
    stage(*write)  # without --allow-partial: the shards that lacked images are written again
    manifest = json.loads((folder / "tfrecords" / "manifest.json").read_text())
    assert manifest["counts"]["written"] == 24 and manifest["archives_missing"] == {}
    assert manifest["allow_partial"] is False


# ------------------------------------------------------------------ 16. Ctrl-C while writing
def test_ctrl_c_while_writing_is_one_line_exit_130_and_a_rerun_continues(cx, tmp_path):
    """Ctrl-C reaches the whole process group (the stage, its writer processes), as from a terminal."""
    out = tmp_path / "records"
    write = ["write_tfrecords.sh", "--out", str(cx.parent), "--out-dir", str(out), "--image-size", "512",
             "--encoding", "png", "--images-per-shard", "1", "--processes", "1"]
    # SIGINT back to its default first: the suite may run with it ignored, which the stage would inherit.
    with started_job([sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                      "os.execvp('bash', ['bash', *sys.argv[1:]])", *write]) as job:
        deadline = time.monotonic() + 120
        while not glob.glob(str(out / ".shards" / "*.tfrecord.json")):
            assert job.proc.poll() is None and time.monotonic() < deadline, job.output_tail()
            time.sleep(0.02)
        os.killpg(job.proc.pid, signal.SIGINT)
        job.proc.wait(60)
        stdout, stderr = job.output()
    assert job.proc.returncode == 130, f"{stdout[-3000:]}\n{stderr[-3000:]}"
    done = int(re.fullmatch(r"interrupted; (\d+) of 24 shards complete; rerun the same command to continue",
                            stderr.strip()).group(1))
    assert 1 <= done < 24
    sides = {os.path.basename(p)[:-len(".json")]: json.loads(open(p).read())
             for p in glob.glob(str(out / ".shards" / "*.tfrecord.json"))}
    assert len(sides) == done and not list(out.glob(".tmp-*"))
    for shard in out.glob("*.tfrecord"):  # none half written under its final name
        if shard.name in sides:
            assert hashlib.sha256(shard.read_bytes()).hexdigest() == sides[shard.name]["sha256"]
        else:  # renamed, its record not yet written: complete, and rewritten by the rerun
            import tensorflow as tf
            assert sum(1 for _ in tf.data.TFRecordDataset(str(shard))) == 1
    proc = stage(*write)
    assert f"rank 0: {done} of its 24 shards already complete, skipped" in proc.stdout
    assert json.loads((out / "manifest.json").read_text())["counts"]["written"] == 24


# ------------------------------------------------------------------ 9. every numeric flag has bounds
def stage_parsers():
    """{module: parser} of every dataprep entry point, each built by its build_parser() (None: it has none)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "dataprep", "**", "*.py"), recursive=True)):
        if MAIN_BLOCK.search(open(path).read()):
            module = os.path.relpath(path, ROOT)[:-len(".py")].replace(os.sep, ".")
            build = getattr(importlib.import_module(module), "build_parser", None)
            found[module] = build() if build else None
    return found


def is_numeric(action):
    number = isinstance(action.default, (int, float)) and not isinstance(action.default, bool)
    return action.nargs != 0 and (isinstance(action.type, flags.Bounded) or action.type in (int, float) or number)


def out_of_bounds(kind):
    """Values each bounded type must refuse: past either end, not a number, not finite."""
    values = ["x", "1e999", "nan"] if kind.kind is float else ["x", "1.5"]
    step = 1 if kind.kind is int else 0.5
    values.append(str(kind.above) if kind.above is not None else str(kind.least - step))
    values.append(str(kind.below) if kind.below is not None else str(kind.most + step))
    return values


def valid(kind):
    return str(kind.least if kind.least is not None else kind.above + 1)


def numeric_cases():
    cases = []
    for module, parser in stage_parsers().items():
        if parser is None:  # fails in the test: its flags cannot be checked
            cases.append(pytest.param(module, "build_parser", "missing", id=f"{module}:build_parser"))
            continue
        for action in parser._actions:
            if not is_numeric(action):
                continue
            flag = action.option_strings[0]
            values = out_of_bounds(action.type) if isinstance(action.type, flags.Bounded) else ["unbounded"]
            cases += [pytest.param(module, flag, value, id=f"{module}:{flag}={value}") for value in values]
    return cases


def required_args(parser):
    args = []
    for action in parser._actions:
        if action.required:
            value = valid(action.type) if isinstance(action.type, flags.Bounded) else "somewhere"
            args += [action.option_strings[0], value]
    return args


NUMERIC_CASES = numeric_cases()


def test_the_stages_have_the_numeric_flags_they_are_known_for():
    flags_seen = {(c.values[0].rsplit(".", 1)[-1], c.values[1]) for c in NUMERIC_CASES}
    assert {("tfrecords", "--shard-mb"), ("tfrecords", "--images-per-shard"), ("tfrecords", "--processes"),
            ("tfrecords", "--image-size"), ("tfrecords", "--seed"), ("tfrecords", "--val-fraction"),
            ("synthetic", "--images"), ("synthetic", "--min-prevalence"), ("synthetic", "--test-fraction"),
            ("extract", "--jobs")} <= flags_seen


@pytest.mark.parametrize("module,flag,value", NUMERIC_CASES)
def test_every_numeric_flag_refuses_values_out_of_its_bounds_in_one_line(module, flag, value, capsys):
    parser = stage_parsers()[module]
    assert parser is not None, f"{module}: build its argparse parser in build_parser(), so its flags can be checked"
    action = next(a for a in parser._actions if flag in a.option_strings)
    assert isinstance(action.type, flags.Bounded), f"{module} {flag}: give it a type from dataprep.flags.bounded"
    kind = action.type
    assert action.default is None or kind.holds(action.default), f"{flag}'s default {action.default} is out of bounds"
    parser.parse_args(required_args(parser) + [flag, valid(kind)])  # the lower bound itself is taken
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(required_args(parser) + [flag, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: argument {flag}") and "(see --help)" in err, err


STAGE_REFUSALS = [
    (["write_tfrecords.sh", "--shard-mb", "0"], "argument --shard-mb: must be a number > 0"),
    (["write_tfrecords.sh", "--dataset", "kvasir-seg", "--images-per-shard", "-3"],
     "argument --images-per-shard: must be an integer >= 0"),
    (["write_tfrecords.sh", "--processes", "-1"], "argument --processes: must be an integer >= 0"),
    (["download_dataset.sh", "--synthetic", "5"], "argument --images/--synthetic: must be an integer >= 12"),
    (["download_dataset.sh", "--dataset", "all", "--synthetic", "20", "--seed", "-1"],
     "argument --seed: must be an integer >= 0"),
    (["extract_images.sh", "--jobs", "5000"], "argument --jobs: must be an integer >= 1 and <= 1024"),
]


@pytest.mark.parametrize("command,expected", [pytest.param(c, e, id=" ".join(c)) for c, e in STAGE_REFUSALS])
def test_a_stage_given_a_number_out_of_bounds_stops_in_one_line_before_any_work(tmp_path, command, expected):
    if command[0] == "extract_images.sh":  # the archives must be there for the stage to reach its writer
        (tmp_path / "chestxray14").mkdir()
    before = snapshot(tmp_path)
    proc = stage(*command, "--out", str(tmp_path), expect_rc=2)
    one_line_refusal(proc, expected)
    assert snapshot(tmp_path) == before and sorted(os.listdir(tmp_path)) in ([], ["chestxray14"])


# ------------------------------------------------------------------ data.sbatch
def test_data_sbatch_run_with_plain_bash_says_to_submit_it(tmp_path):
    proc = stage("job_submissions/slurm/data.sbatch", "kvasir-seg", "--synthetic", "12", expect_rc=2,
                 SLURM_JOB_ID="", DATA_DIR=str(tmp_path / "data"))
    one_line_refusal(proc, "submit with sbatch, or use job_submissions/local/launch.sh")
    assert not (tmp_path / "data").exists()


def test_data_sbatch_checks_the_writer_flags_before_downloading(tmp_path):
    proc = stage("job_submissions/slurm/data.sbatch", "kvasir-seg", "--synthetic", "12", "--", "--shard-mb", "0",
                 expect_rc=2, SLURM_JOB_ID="1", SLURM_CPUS_PER_TASK="1", DATA_DIR=str(tmp_path / "data"))
    one_line_refusal(proc, "argument --shard-mb: must be a number > 0")
    assert not (tmp_path / "data").exists()  # nothing downloaded
