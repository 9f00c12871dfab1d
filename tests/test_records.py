"""The record format: every encoding round-trips through serialize and parse."""
import numpy as np
import pytest

from dataprep import records


@pytest.mark.parametrize("encoding", records.ENCODINGS)
def test_round_trip(encoding):
    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(48), np.arange(48)) * 2 % 256
    img = np.clip(ramp + rng.integers(0, 8, ramp.shape), 0, 255).astype(np.uint8)
    labels = [0, 1] + [0] * 11 + [1]
    blob = records.serialize(records.encode_image(img, encoding), labels, "00000007_002.png",
                             "00000007", encoding, 48)
    image, parsed_labels, name, patient = records.parse(blob, 14)
    assert image.shape == (48, 48, 1) and image.dtype.name == "uint8"
    assert parsed_labels.numpy().tolist() == labels
    assert name.numpy() == b"00000007_002.png" and patient.numpy() == b"00000007"
    diff = np.abs(image.numpy()[..., 0].astype(int) - img.astype(int))
    if encoding == "jpeg":
        assert diff.mean() < 3          # lossy, but close
    else:
        assert diff.max() == 0          # lossless


def test_unknown_encoding_is_refused():
    with pytest.raises(ValueError, match="encoding must be one of"):
        records.encode_image(np.zeros((4, 4), np.uint8), "webp")
