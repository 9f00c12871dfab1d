"""DICOM X-rays written with pydicom for the tests: one frame or several, MONOCHROME1 or 2, any tags.

    write_dicom(tmp_path / "a.dcm", pixels_uint16, "MONOCHROME1", WindowCenter=2048, WindowWidth=3000)
"""
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

NAME = "Doe^Jane"  # a PatientName planted in the written DICOMs: it must reach no record or manifest


def write_dicom(path, pixels, photometric="MONOCHROME2", patient="anon-7", **tags):
    """A one-file DICOM X-ray of ``pixels`` (uint16 or int16, (H, W) or (frames, H, W)) written with pydicom."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName, ds.Modality = patient, NAME, "DX"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = int(pixels.dtype == np.int16)
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds
