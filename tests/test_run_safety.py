"""A run never starts on broken input and never shares its folder: the manifest checked before TensorFlow loads,
every shard's record count and image size, the run folder's lock, names and reuse after a failed start."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, job_env
from runtime import rundir
from runtime.config import parse_args
from runtime.errors import UserError
from training.manifest import Manifest, count_records


def write_shards(folder, counts, side=8, dataset="kvasir-seg"):
    """Raw ``side`` x ``side`` shards of ``counts`` records and their manifest.json; the manifest's data."""
    import tensorflow as tf
    from dataprep import records
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for i, n in enumerate(counts):
        path = folder / f"train-{i:05d}-of-{len(counts):05d}.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for j in range(n):
                writer.write(records.serialize(np.zeros((side, side), np.uint8).tobytes(), [0], f"{i}_{j}.png",
                                               str(i), "raw", side))
        shards.append({"file": path.name, "records": n, "bytes": path.stat().st_size})
    data = {"dataset": dataset, "options": {"image_size": side},
            "splits": {"train": {"images": sum(counts), "shards": shards}}}
    (folder / "manifest.json").write_text(json.dumps(data))
    return data


def test_records_are_counted_from_their_headers_and_a_cut_file_is_named(tmp_path):
    write_shards(tmp_path, [3, 0, 5])
    assert [count_records(tmp_path / f"train-{i:05d}-of-00003.tfrecord") for i in range(3)] == [3, 0, 5]
    cut = tmp_path / "train-00002-of-00003.tfrecord"
    cut.write_bytes(cut.read_bytes()[:-3])
    with pytest.raises(UserError, match="train-00002-of-00003.tfrecord ends inside record 5: truncated"):
        count_records(cut)


def test_an_edited_record_count_is_refused_naming_the_shard(tmp_path):
    data = write_shards(tmp_path, [4, 6])
    Manifest(str(tmp_path), data).check_counts("train")
    data["splits"]["train"]["shards"][1]["records"] = 9
    data["splits"]["train"]["images"] = 13
    with pytest.raises(UserError, match=r"train-00001-of-00002.tfrecord holds 6 records, .*manifest.json says 9"):
        Manifest(str(tmp_path), data).check_counts("train")
    data["splits"]["train"]["shards"][1]["records"] = 6
    with pytest.raises(UserError, match=r"its train shards hold 10 records but it says 13 images"):
        Manifest(str(tmp_path), data).check_counts("train")


def test_a_shard_of_another_size_anywhere_in_the_split_is_refused(tmp_path):
    data = write_shards(tmp_path, [2, 2, 2])
    other = write_shards(tmp_path / "other", [2], side=16)
    shutil.copy(tmp_path / "other" / other["splits"]["train"]["shards"][0]["file"],
                tmp_path / "train-00002-of-00003.tfrecord")  # merged in from another write
    data["splits"]["train"]["shards"][2]["bytes"] = other["splits"]["train"]["shards"][0]["bytes"]
    with pytest.raises(UserError, match=r"train-00002-of-00003.tfrecord holds 16x16 images, .* image_size 8"):
        Manifest(str(tmp_path), data).check_records("train")


@pytest.mark.parametrize("content, message", [
    ("{", "cannot read it as JSON"),
    ('{"options": {}}', "no options.image_size"),
    ('{"options": {"image_size": 8}, "splits": {"train": {"images": 3}}}', "split 'train' has no images count"),
    ('{"options": {"image_size": 8}, "splits": {"train": {"images": 1, "shards": [{"file": "../x", "records": 1}]}}}',
     "lies outside the folder"),
])
def test_a_hand_broken_manifest_is_one_line(tmp_path, content, message):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(UserError, match=message) as err:
        Manifest.load(str(tmp_path))
    assert "\n" not in str(err.value) and "manifest.json" in str(err.value)


def entry_point(module, *args):
    """Run ``python -m module args`` and report whether TensorFlow or Horovod were imported before it exited."""
    probe = ("import runpy, sys\n"
             f"sys.argv = [{module!r}, *{list(args)!r}]\n"
             "try:\n"
             f"    runpy.run_module({module!r}, run_name='__main__')\n"
             "finally:\n"
             "    print('loaded:', sorted(m for m in ('tensorflow', 'horovod') if m in sys.modules))\n")
    return subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=job_env(), capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("trainer, dataset, accepted, other", [
    ("chexnet.train", "chestxray14", "chestxray14 or csv", "kvasir-seg"),
    ("segmentation.train", "kvasir-seg", "kvasir-seg or masks", "chestxray14")])
def test_a_trainer_refuses_bad_flags_and_the_other_data_sets_records_before_tensorflow_loads(
        tmp_path, trainer, dataset, accepted, other):
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"dataset": other, "options": {"image_size": 64}, "splits": {}}))
    for args, message in ((["--base-lr=-0.1"], "error: --base-lr must be > 0, got -0.1"),
                          (["--data-dir", str(tmp_path)], f"error: {tmp_path} holds {other} records; {trainer} "
                                                          f"trains on {accepted}: pass --data-dir of "
                                                          f"./write_tfrecords.sh --dataset {dataset}")):
        proc = entry_point(trainer, *args, "--runs-dir", str(tmp_path / "runs"))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [message]
        assert proc.stdout.strip() == "loaded: []"
    assert not (tmp_path / "runs").exists()


def test_a_read_only_runs_folder_is_refused_before_any_work(tmp_path):
    from runtime.files import check_writable_folder
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_writable_folder(str(tmp_path / "file" / "runs"), "--runs-dir")
    if os.geteuid() != 0:
        pytest.skip("a read-only mount needs root")  # chmod does not stop root
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], check=True)
    try:
        with pytest.raises(UserError, match=r"^--runs-dir .*/ro/runs: .*/ro is on a read-only file system"):
            check_writable_folder(str(ro / "runs"), "--runs-dir")
    finally:
        subprocess.run(["umount", str(ro)], check=True)


class Cfg:
    def __init__(self, runs, name=""):
        self.runs_dir, self.run_name = str(runs), name


def test_runs_without_a_name_started_in_one_second_get_folders_of_their_own(tmp_path):
    paths = [rundir.new_folder(str(tmp_path), "chexnet") for _ in range(3)]
    assert len(set(paths)) == 3 and all(os.path.isdir(p) for p in paths)
    assert paths[1] == paths[0] + "-2" or os.path.basename(paths[1]) != os.path.basename(paths[0])


def test_a_start_that_failed_before_its_first_checkpoint_is_started_again_and_a_run_is_kept(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "metrics.jsonl").write_text(json.dumps({"event": "config"}) + "\n")
    with pytest.raises(UserError, match="holds no run to resume .* run the same command without --resume"):
        rundir.claim(Cfg(tmp_path, "r"), "chexnet", resume=True)
    path, fd = rundir.claim(Cfg(tmp_path, "r"), "chexnet", resume=False)
    os.close(fd)
    assert path == str(folder) and not (folder / "metrics.jsonl").exists()  # the failed start's record only
    (folder / "metrics.jsonl").write_text(json.dumps({"event": "config"}) + "\n" + json.dumps({"event": "epoch"}))
    with pytest.raises(UserError, match="already holds a run"):
        rundir.claim(Cfg(tmp_path, "r"), "chexnet", resume=False)
    assert (folder / "metrics.jsonl").read_text().count("epoch") == 1
    users = tmp_path / "mine"
    users.mkdir()
    (users / "config.json").write_text("{}")  # a folder of the user's, not a run
    with pytest.raises(UserError, match=r"mine holds files but no run \(config.json\): a trainer writes only"):
        rundir.claim(Cfg(tmp_path, "mine"), "chexnet", resume=False)
    assert (users / "config.json").read_text() == "{}"


@pytest.mark.parametrize("name", ["../data", "a/b", "..", "/tmp/x"])
def test_a_run_name_is_a_folder_name_never_a_path(name):
    from chexnet.config import CheXNetConfig
    with pytest.raises(UserError, match="must be a folder name, not a path"):
        parse_args(CheXNetConfig, ["--run-name", name])


HOLDER = """
import sys, time
from runtime import rundir
rundir.lock(sys.argv[1], "segmentation")
print("locked", flush=True)
time.sleep(120)
"""


def test_a_locked_run_folder_is_refused_naming_its_holder_and_free_once_it_ends(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, env=job_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"^{tmp_path} is in use by segmentation on host {os.uname().nodename}, "
                                            rf"pid {holder.pid}, since .*: .* pick another --run-name$"):
            rundir.lock(str(tmp_path), "chexnet")
        with pytest.raises(UserError, match="is in use by segmentation"):
            rundir.lock(str(tmp_path), "chexnet", shared=True)  # nor may an elastic worker join it
    finally:
        holder.kill()
        holder.wait(10)
    os.close(rundir.lock(str(tmp_path), "chexnet"))


def test_a_trainer_on_a_manifest_with_an_edited_count_stops_naming_the_shard_on_every_rank(small_kvasir, tmp_path):
    """Rank 0 counts every shard's records at start-up and the refusal reaches rank 1; nothing is trained."""
    from helpers import run_ranks
    data = tmp_path / "tfrecords"
    shutil.copytree(small_kvasir / "tfrecords", data)
    manifest = json.loads((data / "manifest.json").read_text())
    shard = manifest["splits"]["train"]["shards"][0]
    shard["records"] += 5
    manifest["splits"]["train"]["images"] += 5
    (data / "manifest.json").write_text(json.dumps(manifest))
    proc = run_ranks(2, ["-m", "segmentation.train", "--model", "unet", "--data-dir", str(data), "--runs-dir",
                         str(tmp_path / "runs"), "--run-name", "r", "--precision", "float32"], timeout=300,
                     expect_rc=None)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.count(f"error: {data / shard['file']} holds {shard['records'] - 5} records, {data}/manifest.json "
                             f"says {shard['records']}: the manifest was edited") == 2
    assert not (tmp_path / "runs" / "r").exists()
