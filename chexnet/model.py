"""The CheXNet network: DenseNet121 backbone, global average pooling, 14 sigmoids.

    model = build_model(crop=224, num_classes=14, weights="none", bn_momentum=0.99)
    model.output_shape   # (None, 14): probabilities

No Horovod here. ``weights``: "none" (random init), "imagenet" (Keras
downloads them: needs internet), or a path to an .h5 weights file of the
backbone.
"""
import os

import tf_keras as keras

from runtime.errors import UserError


def _backbone(crop, weights):
    kwargs = dict(include_top=False, input_shape=(crop, crop, 3), pooling="avg")
    if weights == "none":
        return keras.applications.DenseNet121(weights=None, **kwargs)
    if weights == "imagenet":
        try:
            return keras.applications.DenseNet121(weights="imagenet", **kwargs)
        except Exception as err:  # urllib/OSError/ValueError, depending on where it failed
            raise UserError(f"ImageNet weights for DenseNet121 could not be downloaded ({type(err).__name__}: "
                            f"{str(err)[:120]}): this machine may have no internet; pass --weights none, "
                            f"or download densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5 elsewhere "
                            f"and pass its path") from None
    if not os.path.isfile(weights):
        raise UserError(f"--weights {weights!r}: no such file; use none, imagenet or a .h5 path")
    backbone = keras.applications.DenseNet121(weights=None, **kwargs)
    backbone.load_weights(weights)
    return backbone


def build_model(crop, num_classes, weights="none", bn_momentum=0.99):
    backbone = _backbone(crop, weights)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = bn_momentum
    # float32 output: sigmoid and the loss stay accurate under mixed precision.
    outputs = keras.layers.Dense(num_classes, activation="sigmoid", dtype="float32",
                                 name="pathologies")(backbone.output)
    return keras.Model(backbone.input, outputs, name="chexnet")
