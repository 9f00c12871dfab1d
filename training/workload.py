"""One Workload interface: what a workload supplies to the shared trainer, evaluator, exporter and studies.

    from training import workload
    wl = workload.get("chexnet")              # or "segmentation"; workload.names() lists them
    cfg, manifest = preflight(wl, argv)       # wl.config's flags, wl.datasets' records, before TensorFlow
    model = wl.build_model(cfg, manifest)     # TensorFlow loads in the methods that need it
    ds = wl.train_dataset(cfg, manifest, rank, size, first_epoch, epochs, steps)

Each workload is a subclass of ``Workload`` in its own package (``chexnet.workload``,
``segmentation.workload``), registered here by name and imported on first use: this module and
the class attributes load no TensorFlow, so flags, presets and refusals are checked without it.
The methods take the run's settings (``cfg``), the records' ``manifest`` (None for random input)
or a checkpoint's saved ``state``; none imports Horovod.
"""
import importlib

REGISTRY = {"chexnet": "chexnet.workload", "segmentation": "segmentation.workload"}


def names():
    return tuple(REGISTRY)


def get(name):
    """The registered workload ``name`` (a ``Workload`` instance)."""
    if name not in REGISTRY:
        raise KeyError(f"no workload {name!r}: the registered ones are {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[name]).WORKLOAD


class Workload:
    """The parts of a workload; the shared code asks these instead of branching on the name."""

    name = ""            # the registry key, the kind of run folder and the logger ("chexnet")
    trainer = ""         # the module whose checkpoints these are ("chexnet.train")
    config = None        # its training.config.TrainConfig subclass
    eval_config = None   # its training.evaluation.EvalConfig (sub)class
    datasets = ()        # the writers whose records it trains on (the manifest's "dataset")
    monitor = ""         # the validation figure that picks best.npz and drives the plateau schedule
    mode = "max"
    columns = ()         # the training table's validation columns: (title, metrics key, format)
    stored_channels = 0  # the channels of the uint8 images its datasets yield (1 gray, 3 RGB)
    export_module = ""   # the module holding its export parts (training.export.ExportParts) as EXPORT

    # Before TensorFlow loads.
    def check_settings(self, cfg, manifest):
        """A setting the records or the network cannot take: a UserError in one line."""

    def input_size(self, cfg, manifest):
        """The side of the tensor the network trains on."""
        raise NotImplementedError

    def model_info(self, cfg, manifest):
        """What a checkpoint of this run records of its settings; a resume with others is refused."""
        raise NotImplementedError

    # Training (TensorFlow).
    def check_runtime(self, cfg, ctx, manifest, log):
        """A refusal or a warning once the runtime is up (the device known), the same on every rank."""

    def build_model(self, cfg, manifest):
        """The uncompiled training network, ending in logits."""
        raise NotImplementedError

    def prepare(self, model, cfg, rank):
        """Per-rank set-up of a built model (random streams); nothing by default."""

    def loss(self, cfg, manifest):
        raise NotImplementedError

    def train_dataset(self, cfg, manifest, rank, size, first_epoch, epochs, steps, first_step=0):
        """Rank ``rank``'s batches of epochs ``first_epoch``..``epochs - 1`` (less ``first_step`` batches)."""
        raise NotImplementedError

    def eval_dataset(self, manifest, split, rank, size, batch, state, pipeline=None):
        """Rank ``rank``'s share of ``split``, read as validation reads it, for a model of ``state``'s settings
        ((image, target, name) batches)."""
        raise NotImplementedError

    def validators(self, cfg, manifest, ctx):
        """The callbacks that add the validation figures (``monitor`` among them) to the epoch logs."""
        raise NotImplementedError

    def sample_shapes(self, cfg, manifest):
        """(input, target) shapes of one example as the datasets yield it (the input uint8): the random
        tensors of --synthetic-input."""
        raise NotImplementedError

    def normalise(self, images):
        """The first step of the model, on the device: a batch of uint8 images as the datasets yield them
        -> the network's float32 input."""
        raise NotImplementedError

    def device_model(self, network):
        """``network`` behind ``normalise``: the model that trains and validates on the datasets' batches.

        A batch crosses to the device as uint8 (a quarter of float32's bytes, a twelfth for gray images
        the network sees as RGB) and is normalised there. The model shares the network's layers and
        weights, in the network's order: a checkpoint of either is the other's."""
        import tf_keras as keras
        side = tuple(network.input_shape[1:3])
        stored = keras.Input(shape=(*side, self.stored_channels), dtype="uint8", name="stored")
        # Precision: normalised in float32, as the host did; the network's first layer casts to its compute dtype.
        x = keras.layers.Lambda(self.normalise, dtype="float32", name="normalise")(stored)
        return keras.Model(stored, network(x), name=f"{network.name}_on_device")

    def benchmark_settings(self, cfg, manifest):
        """What a benchmark record says of the network and its input."""
        raise NotImplementedError

    # Evaluation and export (TensorFlow), from a checkpoint's saved state.
    def check_checkpoint(self, state, path, manifest=None):
        """A UserError for a checkpoint of another kind (or for records it cannot read)."""
        raise NotImplementedError

    def model_from_checkpoint(self, state):
        """The uncompiled network of a checkpoint's settings, ending in logits."""
        raise NotImplementedError

    def grade(self, ev, predictor):
        """Collective: what the tables of split ``ev.split`` need, gathered on every rank."""
        raise NotImplementedError

    def write_grades(self, ev, predictor, graded):
        """Rank 0: split ``ev.split``'s tables in <run>/eval-<split>/ and its ``eval`` record."""
        raise NotImplementedError

    def after_grades(self, ev, gathered):
        """Rank 0, after every split's tables: work across the graded splits (``[(ev, graded), ...]``)."""

    def export_parts(self):
        """The export's parts of this workload (training.export.ExportParts)."""
        return importlib.import_module(self.export_module).EXPORT
