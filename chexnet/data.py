"""CheXNet's input: ChestX-ray14 records through the one preprocess, on the shared rank sharding.

    m = training.shards.Manifest.load("data/chestxray14/tfrecords")
    ds = train_dataset(m, rank=0, size=2, per_rank_batch=16, crop=224, seed=0, first_epoch=0,
                       epochs=10, steps=m.steps_per_epoch("train", 2, 16))
    ev = eval_dataset(m, "val", rank=0, size=2, batch=64, crop=224)   # (x, labels, name, patient) batches

Sharding, equal steps and per-epoch determinism are ``training.shards``'; this
module adds what is CheXNet's: the record schema, the class order and
the preprocessing's first half (a seeded random crop and flip when training,
the centre crop otherwise). Images stay uint8: the model normalises them on
the device (``Workload.device_model``).
"""
from chexnet.preprocess import crop_image
from dataprep import records
from dataprep.chestxray14.facts import CLASSES  # noqa: F401  (the class order of --synthetic-input)
from training import shards


def class_positives(manifest, split):
    positives = manifest.split(split)["positives"]
    return [positives[c] for c in manifest.classes]


def class_known(manifest, split):
    """Images of ``split`` with a known label per class (all of them, but those --uncertain ignore left out)."""
    ignored = manifest.split(split).get("ignored", {})
    return [manifest.images(split) - ignored.get(c, 0) for c in manifest.classes]


def train_dataset(manifest, rank, size, per_rank_batch, crop, seed, first_epoch, epochs, steps,
                  pipeline=shards.Pipeline(), first_step=0):
    n_classes = len(manifest.classes)

    def parse(serialized, aug_seed):
        image, labels, _, _ = records.parse(serialized, n_classes)
        return crop_image(image, crop, training=True, seed=aug_seed), labels

    return shards.train_batches(manifest, rank, size, per_rank_batch, seed, first_epoch, epochs, steps, parse,
                                pipeline, first_step=first_step)


def eval_dataset(manifest, split, rank, size, batch, crop, pipeline=shards.Pipeline()):
    """(images, labels, names, patients) batches of this rank's records of ``split``; nothing dropped.
    The patient ids travel with the predictions so that intervals can resample patients."""
    n_classes = len(manifest.classes)

    def parse(serialized):
        image, labels, name, patient = records.parse(serialized, n_classes)
        return crop_image(image, crop, training=False), labels, name, patient

    return shards.eval_batches(manifest, split, rank, size, batch, parse, pipeline)
