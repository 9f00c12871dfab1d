"""Grad-CAM heatmaps of the CheXNet model, placed back on the X-ray they came from.

    layer = feature_layer(model)                        # deepest DenseNet block output at least 7x7
    probe = probe_model(model, layer)                   # once: (features, logits)
    maps = grad_cam(probe, x, class_ids)                # (N, K, h, w) in [0, 1]
    heat, box = place(maps[0, 0], crop, stored_size, original.shape[:2])
    x, y = peak(heat, box)                              # pixel of the original image
    draw_panel("out.png", original, [(heat, box, "Cardiomegaly", 0.93)])

Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391): the heatmap of a
class is the ReLU of the feature maps of one layer weighted by the spatial
mean of the class logit's gradient with respect to them. On the last block
of a network that ends in global average pooling and one dense layer (as
CheXNet does) this is the paper's class activation map (Zhou et al., CVPR
2016) up to a positive factor, so both are the same picture there; Grad-CAM
also works on an earlier block. ``feature_layer`` takes the deepest block
whose map is at least ``MIN_SIDE`` cells wide: the last block at crop 224
(7x7), an earlier one at small crops, where the last block is 1x1 and could
not point anywhere.

No Horovod here: CAMs are drawn by the single-process predict.
"""
import numpy as np
import tensorflow as tf
import tf_keras as keras

MIN_SIDE = 7
# DenseNet121's block outputs, shallow to deep (strides 4, 8, 16, 32); "relu" is the last block after BN-ReLU.
BLOCK_OUTPUTS = ("conv2_block6_concat", "conv3_block12_concat", "conv4_block24_concat", "relu")


def feature_layer(model, min_side=MIN_SIDE):
    """Name of the deepest block output whose feature map is at least ``min_side`` x ``min_side``."""
    sides = {name: model.get_layer(name).output.shape[1] for name in BLOCK_OUTPUTS}
    usable = [name for name in BLOCK_OUTPUTS if sides[name] >= min_side]
    return usable[-1] if usable else BLOCK_OUTPUTS[0]


def probe_model(model, layer):
    """The model with a second output: ``layer``'s feature map (refused unless it is one)."""
    output = model.get_layer(layer).output
    if len(output.shape) != 4:
        raise ValueError(f"layer {layer} gives {tuple(output.shape)}, not a feature map (N, h, w, channels)")
    return keras.Model(model.input, [output, model.output])


def grad_cam(probe, x, class_ids):
    """(N, K, h, w) float32 heatmaps in [0, 1] of ``class_ids`` (N, K) for the batch ``x``.

    ``probe``: probe_model(model, layer). Each map is scaled by its own maximum;
    a map with no positive evidence is all zero.
    """
    class_ids = tf.constant(np.asarray(class_ids, np.int32))
    with tf.GradientTape(persistent=True) as tape:
        features, logits = probe(x, training=False)
        chosen = tf.gather(tf.cast(logits, tf.float32), class_ids, batch_dims=1)  # (N, K)
        targets = [chosen[:, k] for k in range(class_ids.shape[1])]  # sliced under the tape, to be differentiable
    values = tf.cast(features, tf.float32)
    maps = []
    for target in targets:
        # Images do not interact at inference (BatchNorm uses its moving statistics), so the
        # gradient of the batch sum is each image's own gradient.
        grads = tf.cast(tape.gradient(target, features), tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        maps.append(tf.nn.relu(tf.reduce_sum(weights * values, axis=-1)))
    del tape
    maps = tf.stack(maps, axis=1).numpy()
    top = maps.max(axis=(2, 3), keepdims=True)
    return np.divide(maps, top, out=np.zeros_like(maps), where=top > 0)


def crop_box(crop, stored_size, original_hw):
    """(x0, y0, x1, y1) in original pixels of the region the model saw.

    The stored form is the centre square of the original resized to ``stored_size``
    (chexnet.preprocess.to_stored_form), and evaluation takes its centre ``crop``.
    """
    h, w = original_hw
    side = min(h, w)
    scale = side / stored_size
    offset = (stored_size - crop) // 2
    x0, y0 = (w - side) // 2 + offset * scale, (h - side) // 2 + offset * scale
    return x0, y0, x0 + crop * scale, y0 + crop * scale


def place(cam, crop, stored_size, original_hw):
    """(heatmap resized to the region the model saw, that region's box in original pixels)."""
    box = crop_box(crop, stored_size, original_hw)
    side = max(1, int(round(box[2] - box[0])))
    heat = tf.image.resize(cam[..., None], (side, side), method="bilinear").numpy()[..., 0]
    return heat, box


def peak(heat, box):
    """(x, y) in original pixels of the heatmap's maximum (the centre of that heatmap pixel)."""
    row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
    scale = (box[2] - box[0]) / heat.shape[1]
    return box[0] + (col + 0.5) * scale, box[1] + (row + 0.5) * scale


def draw_panel(path, image, panels, alpha=0.45):
    """One PNG: the X-ray once per (heat, box, name, probability), heatmap over it, peak marked, title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    gray = image if image.ndim == 2 else image[..., :3].mean(axis=-1)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (heat, box, name, prob) in zip(axes[0], panels):
        ax.imshow(gray, cmap="gray", extent=(0, gray.shape[1], gray.shape[0], 0))  # pixel edges, as the box
        ax.imshow(heat, cmap="jet", alpha=alpha, vmin=0, vmax=1, extent=(box[0], box[2], box[3], box[1]))
        ax.plot(*peak(heat, box), marker="+", color="white", markersize=12, mew=2)
        ax.set_xlim(0, gray.shape[1])
        ax.set_ylim(gray.shape[0], 0)
        ax.set_title(f"{name}: p = {prob:.2f}", fontsize=9)
        ax.axis("off")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
