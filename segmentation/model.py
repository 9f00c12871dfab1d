"""Binary polyp segmentation networks: ResUNet++, and U-Net, FCN-8s and SegNet to compare it with.

    from segmentation.model import build_model, count_params
    model = build_model("resunetpp", 256)   # or "unet", "fcn8s", "segnet"
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
  FCN-8s: J. Long, E. Shelhamer, T. Darrell, "Fully Convolutional Networks
    for Semantic Segmentation", CVPR 2015, arXiv:1411.4038.
  SegNet: V. Badrinarayanan, A. Kendall, R. Cipolla, "SegNet: A Deep
    Convolutional Encoder-Decoder Architecture for Image Segmentation",
    IEEE TPAMI 2017, arXiv:1511.00561.

Parameters at 256x256x3 (trainable + non-trainable, i.e. counting the
BatchNorm moving statistics, as Keras' summary does):
  resunetpp, filters (16, 32, 64, 128, 256): 4,070,385 (7,392 non-trainable),
    the count of the authors' Keras model.
  unet, filters (32, 64, 128, 256, 512): 7,771,873 (5,888 non-trainable);
    with the paper's (64, ..., 1024): 31,055,297.
  fcn8s, filters (32, 64, 128, 256, 256), fc 1024: 17,585,987;
    with VGG16's widths and fc 4096: 134,282,595 (the paper's 134 M).
  segnet, filters (32, 64, 128, 256, 256): 7,384,481;
    with VGG16's widths: 29,496,129 (the paper's 29.5 M).
U-Net, FCN-8s and SegNet default to half the papers' widths (a quarter of
their convolution cost) for 2-core CPU runs; pass the papers' widths for the
originals. All four train from a random start here, so the FCN-8s and SegNet
encoders have BatchNorm after every convolution, as SegNet's has and as our
U-Net does (FCN-8s started from ImageNet VGG16 weights, without it).
"""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from runtime.errors import UserError
from segmentation.catalog import DOWNSAMPLING, size_problem  # noqa: F401  (re-exported)

L = keras.layers


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
    problem = size_problem(size, name)
    if problem:
        raise ValueError(f"image size {size}: {problem}")


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


def _vgg_block(x, filters, convs):
    for _ in range(convs):
        x = conv_bn_relu(x, filters)
    return x


def _double_conv(x, filters):
    return _vgg_block(x, filters, 2)


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


VGG16_CONVS = (2, 2, 3, 3, 3)  # 3x3 convolutions per block: 13 in all


def bilinear_upsampling(factor, name=None):
    """Learnable 2x``factor`` transposed convolution starting as bilinear interpolation (as FCN's were)."""
    size = 2 * factor
    centre = factor - 0.5
    ramp = 1 - abs(np.arange(size) - centre) / factor
    kernel = (ramp[:, None] * ramp[None, :])[..., None, None].astype("float32")
    return L.Conv2DTranspose(1, size, strides=factor, padding="same", use_bias=False, name=name,
                             kernel_initializer=keras.initializers.Constant(kernel))


def fcn8s(size, channels=3, filters=(32, 64, 128, 256, 256), fc=1024, dropout=0.5):
    """FCN-8s (Long et al. 2015) on a VGG16 encoder: ``(None, size, size, channels)`` -> logits.

    Class scores from the last block (fc6 as a 7x7 and fc7 as a 1x1
    convolution) are upsampled 2x and added to scores from pool4, upsampled
    2x again and added to scores from pool3, then upsampled 8x to the input.
    """
    _check_size(size, "fcn8s")
    inputs = L.Input((size, size, channels))
    x, pools = inputs, []
    for width, convs in zip(filters, VGG16_CONVS):
        x = L.MaxPooling2D(2)(_vgg_block(x, width, convs))
        pools.append(x)
    x = CountedDropout(dropout, name="drop6")(L.Conv2D(fc, 7, padding="same", activation="relu", name="fc6")(x))
    x = CountedDropout(dropout, name="drop7")(L.Conv2D(fc, 1, activation="relu", name="fc7")(x))
    score = L.Conv2D(1, 1, name="score_fr")(x)
    for pool, name in ((pools[3], "pool4"), (pools[2], "pool3")):
        score = L.Add()([bilinear_upsampling(2, f"up_to_{name}")(score), L.Conv2D(1, 1, name=f"score_{name}")(pool)])
    score = bilinear_upsampling(8, "up_to_input")(score)
    return keras.Model(inputs, L.Activation("linear", dtype="float32", name="logits")(score), name="fcn8s")


class CountedDropout(L.Layer):
    """Dropout whose masks are a function of (its stream, its count of training calls).

    Keras' Dropout draws from a generator that is the same on every rank (one
    global seed) and in no checkpoint, so every rank drops the same units and
    a resumed run draws other masks. Here the count is a weight (saved and
    restored with the others, the same on every rank) and the stream is set
    per rank (``set_dropout_streams``): each rank draws its own masks, and a
    resumed run the masks an uninterrupted one would have drawn.
    """

    def __init__(self, rate, stream=0, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.stream = float(rate), int(stream)

    def build(self, input_shape):
        self.calls = self.add_weight(name="calls", shape=(), dtype="int64", initializer="zeros", trainable=False)
        super().build(input_shape)

    def call(self, x, training=None):
        if not training or self.rate == 0:
            return x
        count = self.calls.assign_add(1)
        seed = tf.stack([tf.constant(self.stream, tf.int64), count])
        keep = tf.random.stateless_uniform(tf.shape(x), seed) >= self.rate
        return tf.where(keep, x / tf.cast(1 - self.rate, x.dtype), tf.zeros_like(x))

    def get_config(self):
        return dict(super().get_config(), rate=self.rate, stream=self.stream)


def set_dropout_streams(model, seed, rank):
    """Give each CountedDropout of ``model`` its own stream of masks on this rank (before training)."""
    for i, layer in enumerate(l for l in model.layers if isinstance(l, CountedDropout)):
        layer.stream = (seed * 1_000_003 + rank) * 64 + i


class PoolSwitch(L.Layer):
    """1 where a 2x2 max-pooling window took its maximum, else 0 (SegNet's pooling indices).

    One position per window: of tied maxima (common after ReLU, where whole windows
    are 0, and in bfloat16) the first in row-major order, as an argmax would pick.
    """

    def call(self, x):
        n, h, w, c = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2], x.shape[-1]
        # (n, h/2, 2, w/2, 2, c) -> (n, h/2, w/2, c, 4): each window's four values last, row-major.
        windows = tf.reshape(tf.transpose(tf.reshape(x, [n, h // 2, 2, w // 2, 2, c]), [0, 1, 3, 5, 2, 4]),
                             [n, h // 2, w // 2, c, 4])
        is_max = tf.equal(windows, tf.reduce_max(windows, axis=-1, keepdims=True))
        first = is_max & tf.equal(tf.cumsum(tf.cast(is_max, tf.int32), axis=-1), 1)
        mask = tf.reshape(tf.cast(first, x.dtype), [n, h // 2, w // 2, c, 2, 2])
        return tf.reshape(tf.transpose(mask, [0, 1, 4, 2, 5, 3]), [n, h, w, c])


def segnet(size, channels=3, filters=(32, 64, 128, 256, 256)):
    """SegNet (Badrinarayanan et al. 2017): VGG16 encoder, mirrored decoder, max-unpooling -> logits.

    The decoder upsamples by placing each value where the encoder's max-pooling
    took its maximum (the pooling switch) and zeros elsewhere; no skip
    connection carries features, only those positions.
    """
    _check_size(size, "segnet")
    inputs = L.Input((size, size, channels))
    x, switches = inputs, []
    for width, convs in zip(filters, VGG16_CONVS):
        x = _vgg_block(x, width, convs)
        switches.append(PoolSwitch()(x))
        x = L.MaxPooling2D(2)(x)
    stages = list(zip(filters, VGG16_CONVS, switches))[::-1]
    for i, (width, convs, switch) in enumerate(stages):
        x = L.Multiply()([L.UpSampling2D(2)(x), switch])
        # Each decoder block mirrors its encoder block; its last conv narrows to the next block's width.
        out_width = stages[i + 1][0] if i + 1 < len(stages) else width
        x = _vgg_block(x, width, convs - 1)
        x = conv_bn_relu(x, out_width)
    return keras.Model(inputs, _logits(x), name="segnet")


MODELS = {"resunetpp": resunetpp, "unet": unet, "fcn8s": fcn8s, "segnet": segnet}


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
    """All parameters: trainable ones plus BatchNorm moving statistics (not the dropout layers' counts)."""
    return sum(w.shape.num_elements() for w in model.weights if w.dtype.is_floating)


OUTPUT_KIND = "logits"  # recorded in checkpoints: predict and evaluate apply the sigmoid / threshold


def check_checkpoint(state, path, stored_size=None):
    """Refuse a checkpoint of another trainer, or one trained on records of another size than the data's."""
    if state.get("output") != OUTPUT_KIND or "model" not in state:
        raise UserError(f"{path} is not a checkpoint of segmentation.train: pass a run of that trainer")
    if stored_size is not None and state["stored_size"] != stored_size:
        raise UserError(f"{path} was trained on {state['stored_size']}px records, the data holds {stored_size}px "
                        f"ones: use records written with --image-size {state['stored_size']}")
