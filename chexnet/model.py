"""The CheXNet network: DenseNet121 backbone, global average pooling, 14 logits.

    model = build_model(crop=224, num_classes=14, weights="none", bn_momentum=0.99)
    model.output_shape   # (None, 14): logits; probabilities = sigmoid(logits)

No Horovod here. ``weights``: "none" (random init), "imagenet" (fetched once
per node into Keras's cache: needs internet; chexnet.weights), or a path to an
.h5 of DenseNet121 no-top weights. A value that cannot be such weights is a
one-line UserError.
"""
import tf_keras as keras

from chexnet.weights import check_weights_flag, imagenet_path
from runtime.errors import UserError


def _backbone(crop, weights):
    check_weights_flag(weights)  # before the network is built: a bad file is known from its first bytes
    path = imagenet_path() if weights == "imagenet" else weights
    backbone = keras.applications.DenseNet121(weights=None, include_top=False, input_shape=(crop, crop, 3),
                                              pooling="avg")
    if path != "none":
        _load(backbone, path)
    return backbone


def _load(backbone, path):
    try:
        backbone.load_weights(path)
    except (OSError, ValueError, KeyError) as err:  # h5py: truncated or not Keras's; Keras: other layers or shapes
        detail = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise UserError(f"--weights {path}: Keras cannot load it into DenseNet121 without its top ({detail}): "
                        f"it holds another network's weights or is cut short; pass DenseNet121 no-top weights "
                        f"(include_top=False), imagenet or none") from None


def build_model(crop, num_classes, weights="none", bn_momentum=0.99):
    backbone = _backbone(crop, weights)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = bn_momentum
    # Logits, in float32 under mixed precision too: the loss takes them directly
    # (stable for any logit), and the sigmoid is applied only where probabilities
    # are shown (validation, evaluate, predict).
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="pathologies")(backbone.output)
    return keras.Model(backbone.input, outputs, name="chexnet")


OUTPUT_KIND = "logits"  # recorded in checkpoints: older ones ended in a sigmoid


def check_checkpoint(state, path, classes=None, stored_size=None):
    """Refuse a checkpoint this code cannot use, or one trained on other classes or image sizes."""
    if "classes" not in state or "crop" not in state:
        raise UserError(f"{path} is not a checkpoint of chexnet.train (it has no class list): pass a run of "
                        f"that trainer")
    if state.get("output") != OUTPUT_KIND:
        raise UserError(f"{path} was written by an older chexnet whose model ended in a sigmoid: "
                        f"retrain with this version (outputs are logits now)")
    if classes is not None and list(state["classes"]) != list(classes):
        raise UserError(f"{path} was trained on classes {state['classes']}, the data has {list(classes)}: "
                        f"evaluate on the data set it was trained on (--data-dir)")
    if stored_size is not None and state["stored_size"] != stored_size:
        raise UserError(f"{path} was trained on {state['stored_size']}px records, the data holds "
                        f"{stored_size}px ones: the field of view would differ; use records written with "
                        f"--image-size {state['stored_size']}")
