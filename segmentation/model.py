"""Binary polyp segmentation networks: ResUNet++ and a U-Net baseline.

    from segmentation.model import build_model, count_params
    model = build_model("resunetpp", 256)   # or build_model("unet", 256)
    model.output_shape                       # (None, 256, 256, 1): logits, float32
    count_params(model)                      # 4070385

The models end in logits (no sigmoid): the loss and the metrics apply it. The
last layer is float32, so the output stays float32 under a mixed-precision
policy. No Horovod and no data code here.

References:
  ResUNet++: D. Jha et al., "ResUNet++: An Advanced Architecture for Medical
    Image Segmentation", IEEE ISM 2019, arXiv:1911.07067. The block layout
    follows the authors' Keras code (github.com/DebeshJha/ResUNetPlusPlus,
    m_resunet.py), whose 4,070,385 parameters the paper rounds to 4.07 M.
  U-Net: O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks
    for Biomedical Image Segmentation", MICCAI 2015, arXiv:1505.04597.

Parameters at 256x256x3 (trainable + non-trainable, i.e. counting the
BatchNorm moving statistics, as Keras' summary does):
  resunetpp, filters (16, 32, 64, 128, 256): 4,070,385 (7,392 non-trainable),
    the count of the authors' Keras model.
  unet, filters (32, 64, 128, 256, 512): 7,771,873 (5,888 non-trainable);
    with the paper's (64, ..., 1024): 31,055,297.
"""
import tf_keras as keras

from runtime.errors import UserError

L = keras.layers
DOWNSAMPLING = 16  # U-Net halves the image 4 times (ResUNet++ 3): one multiple serves both


def conv_bn_relu(x, filters):
    x = L.Conv2D(filters, 3, padding="same")(x)
    x = L.BatchNormalization()(x)
    return L.ReLU()(x)


def bn_relu_conv(x, filters, strides=1):
    """Pre-activation 3x3 convolution, as in the residual units of ResUNet++."""
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    return L.Conv2D(filters, 3, strides=strides, padding="same")(x)


def squeeze_excite(x, ratio=8):
    """Rescale each channel by a gate computed from the global average of all channels."""
    channels = x.shape[-1]
    gate = L.GlobalAveragePooling2D(keepdims=True)(x)
    # No biases and He init in the two gate layers, as in the authors' code.
    gate = L.Dense(channels // ratio, activation="relu", use_bias=False, kernel_initializer="he_normal")(gate)
    gate = L.Dense(channels, activation="sigmoid", use_bias=False, kernel_initializer="he_normal")(gate)
    return L.Multiply()([x, gate])


def _projection(x, filters, strides):
    """1x1 convolution + BN: the shortcut, matching the residual branch's shape."""
    x = L.Conv2D(filters, 1, strides=strides, padding="same")(x)
    return L.BatchNormalization()(x)


def stem_block(x, filters):
    """First unit: conv-BN-ReLU-conv on the image (no activation before it), plus a projected shortcut."""
    branch = conv_bn_relu(x, filters)
    branch = L.Conv2D(filters, 3, padding="same")(branch)
    return squeeze_excite(L.Add()([branch, _projection(x, filters, 1)]))


def resnet_block(x, filters, strides=1):
    """Pre-activation residual unit (BN-ReLU-conv twice), projected shortcut, then squeeze-and-excitation.

    The authors' code applies squeeze-and-excitation after every residual unit,
    the decoder's too (the paper's text names it after the encoder blocks only);
    without it in the decoder the model would have 5,376 parameters fewer than
    theirs (4,065,009).
    """
    branch = bn_relu_conv(x, filters, strides)
    branch = bn_relu_conv(branch, filters)
    return squeeze_excite(L.Add()([branch, _projection(x, filters, strides)]))


def aspp_block(x, filters, rates=(6, 12, 18, 1)):
    """Atrous spatial pyramid pooling: parallel 3x3 conv + BN at several dilation rates, summed, then 1x1 conv.

    Rates 6, 12, 18 and an undilated branch, as in the authors' code; no ReLU in the branches, as there.
    """
    branches = [L.BatchNormalization()(L.Conv2D(filters, 3, dilation_rate=rate, padding="same")(x))
                for rate in rates]
    return L.Conv2D(filters, 1, padding="same")(L.Add()(branches))


def attention_block(skip, x):
    """Weight the decoder map ``x`` by features of the encoder map ``skip`` (twice x's resolution).

    Both go through BN-ReLU-conv to x's channel count; the skip is max-pooled
    to x's size, the two are added, go through BN-ReLU-conv once more, and the
    result multiplies x (no sigmoid: as in the authors' code).
    """
    filters = x.shape[-1]
    from_skip = L.MaxPooling2D(2)(bn_relu_conv(skip, filters))
    summed = L.Add()([from_skip, bn_relu_conv(x, filters)])
    return L.Multiply()([bn_relu_conv(summed, filters), x])


def _check_size(size, name):
    if size % DOWNSAMPLING:
        raise ValueError(f"image size {size} is not a multiple of {DOWNSAMPLING} (the models halve it up to 4 "
                         f"times), as {name} needs; "
                         f"use e.g. {max(DOWNSAMPLING, size // DOWNSAMPLING * DOWNSAMPLING)}")


def _logits(x):
    # float32 so that the output stays float32 under a mixed-precision policy.
    return L.Conv2D(1, 1, padding="same", dtype="float32", name="logits")(x)


def resunetpp(size, channels=3, filters=(16, 32, 64, 128, 256)):
    """ResUNet++ (Jha et al. 2019): ``(None, size, size, channels)`` -> ``(None, size, size, 1)`` logits."""
    _check_size(size, "resunetpp")
    f0, f1, f2, f3, f4 = filters
    inputs = L.Input((size, size, channels))
    c1 = stem_block(inputs, f0)
    c2 = resnet_block(c1, f1, strides=2)
    c3 = resnet_block(c2, f2, strides=2)
    c4 = resnet_block(c3, f3, strides=2)
    x = aspp_block(c4, f4)  # bridge, at 1/8 of the input size
    for skip, width in ((c3, f3), (c2, f2), (c1, f1)):
        x = attention_block(skip, x)
        x = L.UpSampling2D(2)(x)  # nearest neighbour, as in the authors' code
        x = L.Concatenate()([x, skip])
        x = resnet_block(x, width)
    x = aspp_block(x, f0)
    return keras.Model(inputs, _logits(x), name="resunetpp")


def _double_conv(x, filters):
    return conv_bn_relu(conv_bn_relu(x, filters), filters)


def unet(size, channels=3, filters=(32, 64, 128, 256, 512)):
    """U-Net (Ronneberger et al. 2015) with "same" padding and BN: ``(None, size, size, channels)`` -> logits.

    Default widths are half the paper's (64, ..., 1024): a quarter of its
    parameters and convolution cost, for 2-core CPU runs; pass the paper's
    widths for the original.
    """
    _check_size(size, "unet")
    inputs = L.Input((size, size, channels))
    x, skips = inputs, []
    for width in filters[:-1]:
        x = _double_conv(x, width)
        skips.append(x)
        x = L.MaxPooling2D(2)(x)
    x = _double_conv(x, filters[-1])
    for width, skip in zip(reversed(filters[:-1]), reversed(skips)):
        x = L.Conv2DTranspose(width, 2, strides=2, padding="same")(x)  # the paper's 2x2 up-convolution
        x = _double_conv(L.Concatenate()([skip, x]), width)
    return keras.Model(inputs, _logits(x), name="unet")


MODELS = {"resunetpp": resunetpp, "unet": unet}


def build_model(name, size, channels=3, bn_momentum=None, **kwargs):
    """An uncompiled model ``name`` (a key of MODELS) for ``size`` x ``size`` x ``channels`` images -> logits.

    ``bn_momentum``: BatchNorm moving-average momentum (None: Keras' 0.99).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(sorted(MODELS))}")
    model = MODELS[name](size, channels=channels, **kwargs)
    if bn_momentum is not None:
        for layer in model.layers:
            if isinstance(layer, L.BatchNormalization):
                layer.momentum = bn_momentum
    return model


def count_params(model):
    """All parameters: trainable ones plus BatchNorm moving statistics."""
    return sum(w.shape.num_elements() for w in model.weights)


OUTPUT_KIND = "logits"  # recorded in checkpoints: predict and evaluate apply the sigmoid / threshold


def check_checkpoint(state, path, stored_size=None):
    """Refuse a checkpoint of another trainer, or one trained on records of another size than the data's."""
    if state.get("output") != OUTPUT_KIND or "model" not in state:
        raise UserError(f"{path} is not a checkpoint of segmentation.train: pass a run of that trainer")
    if stored_size is not None and state["stored_size"] != stored_size:
        raise UserError(f"{path} was trained on {state['stored_size']}px records, the data holds {stored_size}px "
                        f"ones: use records written with --image-size {state['stored_size']}")
