"""How an X-ray file becomes the stored gray square: one rule for both writers and chexnet.predict.

    img = load_gray("scan.dcm", 256)        # (256, 256) uint8, or raises dataprep.shards.Rejected(reason)
    dicom_patient("scan.dcm")               # the DICOM's PatientID ('' when none, or not a DICOM)
    image_files(["a.png", "folder/"])       # a folder expanded to the image files inside it, sorted

The steps, in order (docs/data.md "How images are read"):

1. Decode. A DICOM (the ``DICM`` marker at byte 128, or a ``.dcm`` name) through
   pydicom; anything else through OpenCV, unchanged.
2. DICOM pixels to 8-bit: the modality LUT (rescale slope and intercept), then
   the first VOI LUT, or else the first window centre/width (PS3.3 C.11.2.1.2),
   else the image's own minimum-maximum; ``MONOCHROME1`` is inverted so that
   bone is bright. Multi-frame and colour DICOMs are refused.
3. Colour to gray by OpenCV's formula (RGBA: alpha dropped).
4. Any other depth than 8-bit (16-bit PNG or TIFF): the image's own
   minimum-maximum stretched to 0..255, in integers (a constant image is black).
   An 8-bit image is left as it is.
5. Not square: padded with black to the long side, the image centred (the odd
   pixel to the right or bottom): cropping could cut off anatomy.
6. Area-resized to the stored side (no aliasing on downscaling).
"""
import os

import cv2
import numpy as np

from dataprep.shards import Rejected

MIN_SIDE = 32  # a shorter side than this holds too little to classify
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")


def load_gray(path, image_size):
    """The image at ``path`` as (image_size, image_size) uint8, or Rejected(reason)."""
    img = square(read_8bit(path))
    if img.shape[0] != image_size:
        img = cv2.resize(img, (image_size, image_size), interpolation=cv2.INTER_AREA)
    return img


def read_8bit(path):
    """(H, W) uint8 of steps 1 to 4, the image's own size; Rejected(reason) for what cannot be read."""
    if not os.path.exists(path):
        raise Rejected("missing: no such file after extraction")
    if not os.path.isfile(path):
        raise Rejected("not a file (a folder?)")
    if os.path.getsize(path) == 0:
        raise Rejected("empty file (0 bytes)")
    if is_dicom(path):
        img = read_dicom(path)
    else:
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None:
            raise Rejected("unreadable or corrupt image (OpenCV could not decode it)")
        img = to_8bit(to_gray(img))
    h, w = img.shape
    if min(h, w) < MIN_SIDE:
        raise Rejected(f"unexpected size {w}x{h}: smaller than {MIN_SIDE}x{MIN_SIDE}")
    return img


def square(img):
    """``img`` padded with black to its long side, centred (step 5); a square image is returned as it is."""
    h, w = img.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    if h == w:
        return img
    return cv2.copyMakeBorder(img, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=0)


def pad_offset(shape):
    """(left, top) of the image inside its padded square: file pixel = square pixel - offset."""
    h, w = shape[:2]
    side = max(h, w)
    return (side - w) // 2, (side - h) // 2


def to_gray(img):
    if img.ndim == 3 and img.shape[2] in (3, 4):
        # A few real images are RGBA (or RGB) copies of a gray image: same content.
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if img.ndim != 2:
        raise Rejected(f"unexpected mode: array of shape {img.shape}")
    return img


def to_8bit(img):
    """Step 4: uint8 unchanged; integers by (x - min) * 255 / (max - min), rounded half up, in integers so the
    exported graph can repeat it exactly; floats the same in float64."""
    if img.dtype == np.uint8:
        return img
    if img.dtype.kind in "ui":
        x = img.astype(np.int64)
        lo, span = int(x.min()), int(x.max()) - int(x.min())
        if span == 0:
            return np.zeros(img.shape, np.uint8)
        return (((x - lo) * 255 + span // 2) // span).astype(np.uint8)
    if img.dtype.kind == "f":
        return stretch(img.astype(np.float64))
    raise Rejected(f"unexpected mode: {img.dtype} pixels")


def stretch(x, lo=None, hi=None):
    """float pixels -> uint8: ``lo``..``hi`` (default the image's own range) to 0..255, clipped, rounded."""
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        raise Rejected("unexpected pixels: none is a finite number")
    lo = float(finite.min()) if lo is None else lo
    hi = float(finite.max()) if hi is None else hi
    if hi <= lo:
        return np.zeros(x.shape, np.uint8)
    y = (np.nan_to_num(x, nan=lo) - lo) * (255.0 / (hi - lo))
    return np.rint(np.clip(y, 0, 255)).astype(np.uint8)


# ------------------------------------------------------------------ DICOM
def is_dicom(path):
    """By content (the DICOM preamble's ``DICM`` at byte 128) or by a .dcm/.dicom name."""
    if path.lower().endswith((".dcm", ".dicom")):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:  # unreadable: the decoder's turn to name it
        return False
    return head[128:132] == b"DICM"


def dicom_patient(path):
    """The PatientID of a DICOM file ('' when none, or not a DICOM); no other tag is read into anything."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0 or not is_dicom(path):
        return ""
    import pydicom
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except Exception:  # noqa: BLE001  (unreadable: load_gray names the reason)
        return ""
    return str(ds.get("PatientID", "") or "").strip()


def read_dicom(path):
    """(H, W) uint8 of one DICOM X-ray (step 2); Rejected(reason) for one this rule does not read."""
    import pydicom
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # noqa: BLE001  (pydicom raises many kinds for a damaged file)
        raise Rejected(f"unreadable DICOM ({type(e).__name__}: {e})") from None
    if "PixelData" not in ds:
        raise Rejected("DICOM without pixel data (not an image)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise Rejected(f"multi-frame DICOM ({frames} frames): give one X-ray per file")
    kind = str(ds.get("PhotometricInterpretation", ""))
    if kind not in ("MONOCHROME1", "MONOCHROME2"):
        raise Rejected(f"DICOM {kind or 'without PhotometricInterpretation'}: expected a grayscale X-ray "
                       f"(MONOCHROME1 or MONOCHROME2)")
    try:
        raw = ds.pixel_array
    except Exception as e:  # noqa: BLE001  (a missing decoder plugin or damaged pixel data)
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", "unknown transfer syntax")
        raise Rejected(f"DICOM pixel data not decodable ({name}: {e}); for JPEG syntaxes install pylibjpeg "
                       f"with its libjpeg and openjpeg plugins") from None
    from pydicom.pixels import apply_modality_lut
    values = np.asarray(apply_modality_lut(raw, ds), np.float64)
    img = dicom_voi(values, ds)
    return 255 - img if kind == "MONOCHROME1" else img


def dicom_voi(x, ds):
    """Modality values -> uint8 by the first VOI LUT, else the first window, else the image's own range."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        return voi_lut(x, ds.VOILUTSequence[0])
    centre, width = first(ds.get("WindowCenter")), first(ds.get("WindowWidth"))
    if centre is None or width is None or width <= 0:
        return stretch(x)
    function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
    if function == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - centre) / width))
    elif function == "LINEAR_EXACT":
        y = (x - centre) / width + 0.5
    else:  # LINEAR (the default; PS3.3 C.11.2.1.2.1); width 1 is a threshold at the centre
        y = (x - (centre - 0.5)) / (width - 1) + 0.5 if width > 1 else (x >= centre).astype(np.float64)
    return stretch(y, 0.0, 1.0)


def voi_lut(x, item):
    """PS3.3 C.11.2.1.1: values below the first mapped take the first entry, above the last the last; the LUT's
    output range (its bits per entry) to 0..255."""
    entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
    lut = np.asarray(_lut_values(item), np.float64)[:entries or 65536]  # 0 entries means 2^16
    index = np.clip(np.rint(x) - first_mapped, 0, len(lut) - 1).astype(np.int64)
    return stretch(lut[index], 0.0, float(2 ** bits - 1))


def _lut_values(item):
    """LUTData as numbers: read as US it is a list; as OW, little-endian 16-bit words."""
    data = item.LUTData
    return np.frombuffer(data, "<u2") if isinstance(data, bytes) else np.atleast_1d(data)


def first(value):
    """A DICOM number, or the first of several; None when absent."""
    from pydicom.multival import MultiValue
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        return float(value[0]) if len(value) else None
    return float(value)


# ------------------------------------------------------------------ folders
def image_files(paths):
    """``paths`` with each folder replaced by the image files under it (by extension, or DICOM by content),
    sorted, hidden ones skipped; files named directly are kept whatever they are (the reader judges them)."""
    out = []
    for path in paths:
        if not os.path.isdir(path):
            out.append(path)
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                full = os.path.join(root, name)
                if not name.startswith(".") and (name.lower().endswith(IMAGE_EXTENSIONS) or _dicom_content(full)):
                    out.append(full)
    return out


def _dicom_content(path):
    return os.path.isfile(path) and is_dicom(path)
