"""The networks and losses a segmentation run may name, and the image sides each network takes, without TensorFlow
(the flags are checked before it loads).

    size_problem(250, "unet")   # 'unet needs a multiple of 16, at least 32 (...); e.g. 240'
"""

# How many times smaller the deepest feature map is: the image side must be a multiple of it.
DOWNSAMPLING = {"resunetpp": 8, "unet": 16, "fcn8s": 32, "segnet": 32}
LOSS_NAMES = ("dice_bce", "dice", "bce")  # the keys of segmentation.losses.LOSSES
# Networks that upsample by nearest neighbour: TensorFlow has no deterministic GPU kernel for its gradient.
NEAREST_UPSAMPLING = ("resunetpp", "segnet")


def determinism_problem(model, device):
    """Why --deterministic cannot train ``model`` on ``device`` ("GPU:0", "CPU"), or None."""
    if device.startswith("GPU") and model in NEAREST_UPSAMPLING:
        return (f"--deterministic: {model} upsamples by nearest neighbour, and TensorFlow has no deterministic "
                f"GPU kernel for its gradient (ResizeNearestNeighborGrad); drop --deterministic, train unet or "
                f"fcn8s, or pass --device cpu")
    return None


def size_problem(size, name):
    """Why ``name`` cannot take ``size`` x ``size`` images, or None."""
    factor = DOWNSAMPLING[name]
    if size < 32 or size % factor:
        return (f"{name} needs a multiple of {factor}, at least 32 (it halves the image "
                f"{factor.bit_length() - 1} times); e.g. {max(32, size // factor * factor)}")
    return None
