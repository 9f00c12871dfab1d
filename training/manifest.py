"""``manifest.json`` of a TFRecord folder, read and checked without TensorFlow (so bad input stops before it loads).

    m = Manifest.load("data/chestxray14/tfrecords")   # one line for a missing, unreadable or hand-broken file
    m.expect_dataset("chestxray14", "chexnet.train")   # another data set's records are refused by name
    m.steps_per_epoch("train", size=2, per_rank_batch=16)
    m.check_counts("train")                            # every shard holds the records the manifest promises

The shards are TFRecord files: each record is a little-endian uint64 length,
a 4-byte CRC of it, the data, and a 4-byte CRC of the data, so a shard's
records are counted by stepping over the lengths, without reading the data.
"""
import json
import os
import struct

from runtime.errors import UserError

RECORD_OVERHEAD = 16  # length (8) + its CRC (4) + the data's CRC (4)
REWRITE = "run write_tfrecords.sh again"


def count_records(path):
    """Records in the TFRecord file ``path``; a UserError where the file ends inside a record."""
    size, count, offset = os.path.getsize(path), 0, 0
    with open(path, "rb", buffering=0) as fh:
        while offset < size:
            header = os.pread(fh.fileno(), 8, offset)
            if len(header) < 8:
                break
            offset += RECORD_OVERHEAD + struct.unpack("<Q", header)[0]
            count += 1
    if offset != size:
        raise UserError(f"{path} ends inside record {count}: truncated or not a TFRecord file; {REWRITE}")
    return count


class Manifest:
    """``manifest.json`` of a TFRecord folder: splits, their shards and record counts, the stored size,
    and the class order (empty for a data set without classes)."""

    def __init__(self, folder, data):
        self.folder, self.data = folder, data
        self.stored_size = data["options"]["image_size"]
        self.classes = data.get("class_order", [])
        self.dataset = data.get("dataset", "")
        self._counted = set()

    @classmethod
    def load(cls, folder):
        path = os.path.join(folder, "manifest.json")
        if not os.path.isfile(path):
            raise UserError(f"{path} not found: run write_tfrecords.sh first (or pass --data-dir)")
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as err:
            raise UserError(f"{path}: cannot read it as JSON ({err}); {REWRITE}") from None
        problem = schema_problem(data)
        if problem:
            raise UserError(f"{path}: {problem}: not as write_tfrecords.sh writes it (hand-edited?); {REWRITE}")
        return cls(folder, data)

    def expect_dataset(self, dataset, trainer):
        """Refuse the records of another data set than ``dataset`` (a name, or a tuple of the names a trainer
        takes): the trainer would crash on them, or worse."""
        names = (dataset,) if isinstance(dataset, str) else tuple(dataset)
        if self.dataset not in names:
            raise UserError(f"{self.folder} holds {self.dataset or 'unnamed'} records; {trainer} trains on "
                            f"{' or '.join(names)}: pass --data-dir of ./write_tfrecords.sh --dataset {names[0]}")

    def check_crop(self, crop, log):
        """The crop must fit the stored images and should cover most of them (224 of 256 does)."""
        if crop > self.stored_size:
            raise UserError(f"--crop {crop} is larger than the stored {self.stored_size}x{self.stored_size} "
                            f"images of {self.folder}: lower --crop or rewrite with a larger --image-size")
        if crop < 0.6 * self.stored_size:
            log.warning("--crop %d sees only the central %.0f%% of each %dx%d image: findings near the "
                        "edges are cut off; rewrite the TFRecords with --image-size near %d",
                        crop, 100 * (crop / self.stored_size) ** 2, self.stored_size, self.stored_size,
                        round(crop * 256 / 224))

    def split(self, name):
        info = self.data["splits"].get(name)
        if not info or not info["images"]:
            present = ", ".join(s for s, v in self.data["splits"].items() if v["images"]) or "none"
            raise UserError(f"{self.folder}/manifest.json has no {name} images (its splits: {present}): pick "
                            f"one of those, or rewrite the TFRecords with that split")
        return info

    def images(self, name):
        return self.split(name)["images"]

    def ceiling(self, name):
        """The split's known ceiling (a realistic synthetic set's, dataprep.ceiling), or None."""
        return self.split(name).get("ceiling")

    def files(self, name):
        """The split's shard paths, each checked against the size write_tfrecords.sh recorded: a
        truncated or replaced shard is refused here, not met as a DataLossError in the middle of an epoch."""
        paths = []
        for shard in self.split(name)["shards"]:
            path = os.path.join(self.folder, shard["file"])
            if not os.path.isfile(path):
                raise UserError(f"{path} is missing ({self.folder}/manifest.json lists it): run "
                                f"write_tfrecords.sh again, it rewrites missing shards")
            expected, size = shard.get("bytes"), os.path.getsize(path)
            if expected is not None and size != expected:
                raise UserError(f"{path} holds {size} bytes, manifest.json says {expected}: truncated or changed "
                                f"since it was written; run write_tfrecords.sh again, it rewrites such shards")
            paths.append(path)
        return paths

    def check_counts(self, name):
        """Every shard of the split holds the records the manifest promises (and the split the images): an
        edited count would give ranks short epochs, or steps that wait on records that do not exist."""
        if name in self._counted:
            return
        shards = self.split(name)["shards"]
        for shard, path in zip(shards, self.files(name)):
            found = count_records(path)
            if found != shard["records"]:
                raise UserError(f"{path} holds {found} records, {self.folder}/manifest.json says "
                                f"{shard['records']}: the manifest was edited or belongs to another write; {REWRITE}")
        if sum(s["records"] for s in shards) != self.images(name):
            raise UserError(f"{self.folder}/manifest.json: its {name} shards hold {sum(s['records'] for s in shards)} "
                            f"records but it says {self.images(name)} images; {REWRITE}")
        self._counted.add(name)

    def check_records(self, name):
        """The first record of every shard of the split must hold images of the manifest's size (shards of
        another write merged into the folder would otherwise train on another field of view without a word)."""
        import tensorflow as tf
        spec = {"height": tf.io.FixedLenFeature([], tf.int64), "width": tf.io.FixedLenFeature([], tf.int64)}
        for path in self.files(name):
            try:
                first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
                sides = None if first is None else tf.io.parse_single_example(first, spec)
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
                raise UserError(f"{path}: its first record is unreadable ({err.message.splitlines()[0]}): "
                                f"{REWRITE}") from None
            if sides is not None:
                found = (int(sides["height"]), int(sides["width"]))
                if found != (self.stored_size, self.stored_size):
                    raise UserError(f"{path} holds {found[1]}x{found[0]} images, {self.folder}/manifest.json says "
                                    f"image_size {self.stored_size}: the shard or the manifest belongs to another "
                                    f"write; {REWRITE}")

    def record_counts(self, name):
        return [s["records"] for s in self.split(name)["shards"]]

    def record_bytes(self, name):
        """Mean serialized bytes of the split's records (the shards' sizes over their records)."""
        shards = self.split(name)["shards"]
        sizes = [s["bytes"] if s.get("bytes") is not None else os.path.getsize(os.path.join(self.folder, s["file"]))
                 for s in shards]
        return sum(sizes) / max(1, sum(s["records"] for s in shards))

    def steps_per_epoch(self, name, size, per_rank_batch, batches_per_update=1):
        """Steps every rank runs: the smallest rank share (N // size) in whole updates of
        ``batches_per_update`` batches (--grad-accum-steps), so that an epoch ends between updates."""
        steps = (sum(self.record_counts(name)) // size) // per_rank_batch
        steps -= steps % batches_per_update
        if steps < 1:
            accum = f" x --grad-accum-steps {batches_per_update}" if batches_per_update > 1 else ""
            raise UserError(f"the {name} split has {self.images(name)} images: too few for "
                            f"{size} ranks x --per-rank-batch {per_rank_batch}{accum}; lower the batch")
        return steps


def schema_problem(data):
    """What makes ``data`` no manifest of write_tfrecords.sh, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if not isinstance(data.get("options"), dict) or not isinstance(data["options"].get("image_size"), int):
        return "no options.image_size"
    if not isinstance(data.get("splits"), dict):
        return "no splits"
    for name, info in data["splits"].items():
        if not isinstance(info, dict) or not isinstance(info.get("images"), int) \
                or not isinstance(info.get("shards"), list):
            return f"split {name!r} has no images count or shard list"
        for shard in info["shards"]:
            if not isinstance(shard, dict) or not isinstance(shard.get("file"), str) \
                    or not isinstance(shard.get("records"), int) or shard["records"] < 0:
                return f"a shard of split {name!r} has no file name or record count"
            if os.path.isabs(shard["file"]) or ".." in shard["file"].split("/"):
                return f"shard {shard['file']!r} lies outside the folder"
    return None
