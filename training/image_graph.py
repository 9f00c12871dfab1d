"""Encoded PNG/JPEG bytes to the pixels OpenCV gives predict, in TensorFlow ops: the exported models' input.

    image, known = decode(data, channels=1)   # (H, W, 1) uint8 as cv2.imread + BGR2GRAY; known: PNG or JPEG
    image, known = decode(data, channels=3)   # (H, W, 3) uint8 RGB as cv2.imread(IMREAD_COLOR), reversed
    small = area_resize(image, 256)           # cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)
    square = pad_square(image)                # dataprep.images.square: black bands to the long side, centred
    rows = nearest_index(480, 48)             # the source rows of cv2.resize(..., INTER_NEAREST) to 480

Predict reads images with OpenCV; a serving graph cannot. These ops give the
same uint8 pixels (checked against the pinned opencv-python-headless by
tests/test_export.py):

- decoding: libjpeg's accurate integer IDCT (OpenCV's; TensorFlow's default
  fast IDCT differs by up to 15 grey levels); a 16-bit PNG keeps its high
  byte, as OpenCV's 8-bit read does; alpha is dropped;
- gray: OpenCV's fixed-point BGR2GRAY, (3735 B + 19235 G + 9798 R + 2^14) >> 15;
- area resize: OpenCV's four cases: 2x in both axes rounds half up, other
  whole factors take the block sum times 1/area, other shrinks use its weight
  table (fractions under 1e-3 of a pixel dropped) summed in float32 in its
  order and rounded half to even; an image smaller than the stored size on
  either side takes its fixed-point linear interpolation, with the rounding
  of its vector code;
- nearest: OpenCV's floor(x * (1 / (dst / src))) in float64.

The scales 1 / (dst / src) come from tables NumPy computes, up to MAX_SIDE:
in a graph, constant folding would turn them into src / dst, which rounds
otherwise.

Not read here: formats other than PNG and JPEG (``known`` is False), EXIF
orientation. Bytes that start as a PNG or JPEG but are corrupt make the
decode op fail, and with it the whole call.
"""
import numpy as np
import tensorflow as tf

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG_BIT_DEPTH_AT = 24  # signature (8), IHDR length and type (8), width and height (8), then the bit depth
GRAY_WEIGHTS = (9798, 19235, 3735)  # R, G, B of OpenCV's 8-bit BGR2GRAY, out of 2^15
GRAY_SHIFT = 15
TABLE_EPSILON = 1e-3  # OpenCV's area table drops a source pixel covering less than this
MAX_SIDE = 16384  # the scale tables' reach: the exports refuse a larger image (TOO_LARGE)
TOO_LARGE = f"larger than {MAX_SIDE} px on a side (the exported model's limit)"
LINEAR_ONE = 2048.0  # OpenCV's fixed-point unit of interpolation weights (INTER_RESIZE_COEF_SCALE)


def is_png(data):
    return tf.strings.substr(data, 0, len(PNG_SIGNATURE)) == PNG_SIGNATURE


def is_jpeg(data):
    return tf.strings.substr(data, 0, len(JPEG_SIGNATURE)) == JPEG_SIGNATURE


def png_bit_depth(data):
    """The IHDR bit depth of a PNG (8 for anything else): 16 is what predict's 8-bit reader refuses."""
    padded = tf.strings.join([data, b"\0" * (PNG_BIT_DEPTH_AT + 1)])  # substr refuses a start past the end
    byte = tf.io.decode_raw(tf.strings.substr(padded, PNG_BIT_DEPTH_AT, 1), tf.uint8)[0]
    return tf.where(is_png(data), tf.cast(byte, tf.int32), 8)


def first_reason(checks):
    """The message of the first true (condition, message) of ``checks``, else "": one image's refusal."""
    reason = tf.constant("")
    for condition, message in reversed(checks):
        reason = tf.where(condition, message, reason)
    return reason


def decode(data, channels):
    """(image (H, W, channels) uint8, known): ``channels`` 1 reads as cv2.IMREAD_UNCHANGED then BGR2GRAY
    (chexnet), 3 as cv2.IMREAD_COLOR in RGB order (segmentation). Not a PNG or JPEG: a 1x1 black image."""
    png, jpeg = is_png(data), is_jpeg(data)

    def decoded():
        # The accurate IDCT is OpenCV's (libjpeg's default); TensorFlow's own default is the fast one.
        raw = tf.cond(png, lambda: tf.io.decode_png(data, channels=0, dtype=tf.uint8),
                      lambda: tf.io.decode_jpeg(data, channels=0, dct_method="INTEGER_ACCURATE"))
        return to_gray(raw) if channels == 1 else to_rgb(raw)

    image = tf.cond(png | jpeg, decoded, lambda: tf.zeros([1, 1, channels], tf.uint8))
    return tf.ensure_shape(image, [None, None, channels]), png | jpeg


def to_gray(raw):
    """(H, W, 1): a gray (or gray+alpha) image's own values, else OpenCV's fixed-point BGR2GRAY of RGB(A)."""
    def weighted():
        rgb = tf.cast(raw[..., :3], tf.int32)
        total = tf.reduce_sum(rgb * tf.constant(GRAY_WEIGHTS, tf.int32), axis=-1, keepdims=True)
        return tf.cast(tf.bitwise.right_shift(total + (1 << (GRAY_SHIFT - 1)), GRAY_SHIFT), tf.uint8)
    return tf.cond(tf.shape(raw)[-1] >= 3, weighted, lambda: raw[..., :1])


def to_rgb(raw):
    """(H, W, 3): RGB(A) without alpha; a gray (or gray+alpha) image repeated, as IMREAD_COLOR does."""
    return tf.cond(tf.shape(raw)[-1] >= 3, lambda: raw[..., :3], lambda: tf.tile(raw[..., :1], [1, 1, 3]))


def pad_square(image):
    """(S, S, C), S the long side: dataprep.images.square in ops (the odd pixel of padding right or bottom)."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.maximum(h, w)
    return tf.image.pad_to_bounding_box(image, (side - h) // 2, (side - w) // 2, side, side)


def _scale(src, dst):
    """OpenCV's source pixels per output pixel, 1 / (dst / src) in float64; one of the two is a Python int.

    Looked up in a table NumPy computes: in a graph, constant folding turns 1 / (x / c) into c / x, which
    rounds otherwise (and floor(x * scale) then differs where x * src / dst is a whole number)."""
    fixed, side = (dst, src) if isinstance(dst, int) else (src, dst)
    n = np.arange(MAX_SIDE + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        table = 1.0 / (fixed / n) if fixed is dst else 1.0 / (n / fixed)
    return tf.gather(tf.constant(table), tf.minimum(tf.cast(side, tf.int32), MAX_SIDE))


def _whole(scale):
    return tf.abs(scale - tf.round(scale)) < 2.220446049250313e-16  # DBL_EPSILON, OpenCV's test


def area_resize(image, size):
    """(size, size, C) uint8 as cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA) gives it."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    sy, sx = _scale(h, size), _scale(w, size)
    whole, shrink = _whole(sy) & _whole(sx), (sy >= 1) & (sx >= 1)
    out = tf.case([((h == size) & (w == size), lambda: image),
                   (whole & shrink & (sy == 2) & (sx == 2), lambda: _halve(image)),
                   (whole & shrink, lambda: _block_mean(image, size)),
                   (shrink, lambda: _table_resize(image, size))],
                  default=lambda: _enlarge(image, size), exclusive=False)
    return tf.ensure_shape(out, [size, size, image.shape[-1]])


def _halve(image):
    """OpenCV's 2x2 path: integer mean rounded half up."""
    h, w, c = tf.shape(image)[0] // 2, tf.shape(image)[1] // 2, image.shape[-1]
    blocks = tf.reshape(tf.cast(image, tf.int32), [h, 2, w, 2, c])
    return tf.cast((tf.reduce_sum(blocks, axis=[1, 3]) + 2) // 4, tf.uint8)


def _block_mean(image, size):
    """OpenCV's other whole factors: the block sum times float32 1/area, rounded half to even."""
    fy, fx, c = tf.shape(image)[0] // size, tf.shape(image)[1] // size, image.shape[-1]
    sums = tf.reduce_sum(tf.reshape(tf.cast(image, tf.int32), [size, fy, size, fx, c]), axis=[1, 3])
    inverse = tf.constant(1.0, tf.float32) / tf.cast(fy * fx, tf.float32)
    return _to_uint8(tf.cast(sums, tf.float32) * inverse)


def _table(src, dst):
    """(dst, src) float32 weights of OpenCV's computeResizeAreaTab: output pixel d takes source pixel s."""
    scale = _scale(src, dst)
    d = tf.cast(tf.range(dst), tf.float64)[:, None]
    s = tf.cast(tf.range(src), tf.float64)[None, :]
    first, end = d * scale, d * scale + scale
    cell = tf.minimum(scale, tf.cast(src, tf.float64) - first)
    last = tf.minimum(tf.floor(end), tf.cast(src - 1, tf.float64))
    start = tf.minimum(tf.math.ceil(first), last)
    weights = tf.where((s >= start) & (s < last), 1.0 / cell, 0.0)
    weights = tf.where((s == start - 1) & (start - first > TABLE_EPSILON), (start - first) / cell, weights)
    tail = tf.minimum(tf.minimum(end - last, 1.0), cell) / cell
    weights = tf.where((s == last) & (end - last > TABLE_EPSILON), tail, weights)
    return tf.cast(weights, tf.float32)


def _taps(weights):
    """(K, dst) source indices and weights of each output's window in ``weights`` (dst, src), in source
    order; a window shorter than K ends in zero weights."""
    src = tf.shape(weights)[1]
    start = tf.argmax(tf.cast(weights > 0, tf.int32), axis=1, output_type=tf.int32)
    taps = tf.reduce_max(tf.reduce_sum(tf.cast(weights > 0, tf.int32), axis=1))
    index = start[None, :] + tf.range(taps)[:, None]
    inside = index < src
    index = tf.where(inside, index, src - 1)
    picked = tf.gather(weights, tf.transpose(index), axis=1, batch_dims=1)
    return index, tf.where(inside, tf.transpose(picked), 0.0)


def _weighted_sum(pixels, weights, axis):
    """Sum over ``axis`` of ``pixels`` times each output's taps, added one tap at a time in float32 as
    OpenCV's loop adds them (the last bit of a sum decides a rounding now and then)."""
    index, tap_weights = _taps(weights)
    shape = [1, 1, 1]
    shape[axis] = -1

    def add(total, tap):
        return total + tf.gather(pixels, tap[0], axis=axis) * tf.reshape(tap[1], shape)
    first = tf.gather(pixels, index[0], axis=axis) * tf.reshape(tap_weights[0], shape)
    return tf.foldl(add, (index[1:], tap_weights[1:]), initializer=first)


def _table_resize(image, size):
    """OpenCV's general shrink: columns then rows weighted by its table."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    rows = _weighted_sum(tf.cast(image, tf.float32), _table(w, size), axis=1)
    return _to_uint8(_weighted_sum(rows, _table(h, size), axis=0))


def _linear_coefficients(src, dst):
    """(first source index, second, their int32 weights out of 2048) per output: the linear coefficients
    OpenCV's INTER_AREA takes when it enlarges."""
    d = tf.range(dst)
    first = tf.cast(tf.floor(tf.cast(d, tf.float64) * _scale(src, dst)), tf.int32)
    inverse = tf.cast(dst, tf.float64) / tf.cast(src, tf.float64)
    fx = tf.cast(tf.cast(d + 1, tf.float64) - tf.cast(first + 1, tf.float64) * inverse, tf.float32)
    fx = tf.where(fx <= 0, 0.0, fx - tf.floor(fx))
    edge = first >= src - 1
    fx, first = tf.where(edge, 0.0, fx), tf.where(edge, src - 1, first)
    weight = lambda f: tf.cast(tf.round(f * LINEAR_ONE), tf.int32)  # noqa: E731  (cv2's saturate_cast<short>)
    return first, tf.minimum(first + 1, src - 1), weight(1.0 - fx), weight(fx)


def _enlarge(image, size):
    """OpenCV's INTER_AREA when either side grows: fixed-point linear, columns then rows, the rows combined
    as its vector code does (each term >> 4, high half of the 16-bit product, + 2 >> 2)."""
    x0, x1, a0, a1 = _linear_coefficients(tf.shape(image)[1], size)
    y0, y1, b0, b1 = _linear_coefficients(tf.shape(image)[0], size)
    pixels = tf.cast(image, tf.int32)
    rows = (tf.gather(pixels, x0, axis=1) * a0[None, :, None] + tf.gather(pixels, x1, axis=1) * a1[None, :, None])
    top, bottom = tf.gather(rows, y0), tf.gather(rows, y1)
    high = lambda s, b: tf.bitwise.right_shift(tf.bitwise.right_shift(s, 4) * b[:, None, None], 16)  # noqa: E731
    total = tf.bitwise.right_shift(high(top, b0) + high(bottom, b1) + 2, 2)
    return tf.cast(tf.clip_by_value(total, 0, 255), tf.uint8)


def _to_uint8(x):
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)  # tf.round: half to even, as cvRound


def nearest_index(dst, src):
    """The source index of each of ``dst`` outputs in cv2.resize(..., INTER_NEAREST) from ``src``."""
    index = tf.cast(tf.floor(tf.cast(tf.range(dst), tf.float64) * _scale(src, dst)), tf.int32)
    return tf.minimum(index, src - 1)
