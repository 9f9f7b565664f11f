"""DICOM out that viewers open: a derived series from a clean dataset, read back with pydicom and ITK.

The input series is written here, as a scanner export might carry it: command-set elements (group 0000,
which ``dcmwrite`` refuses), private and retired elements, an oblique orientation, 0.86 mm pixels and 7 mm
slices (the shape of a clinical MR series, kept tiny).
"""

from __future__ import annotations

import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medsr.pipeline.inference import SRFileInference, SRSlidingWindowInferer

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ROW_DIR = np.array([0.9, 0.1, 0.0])  # oblique in-plane axes (LPS)
COL_DIR = np.array([-0.1, 0.9, 0.2])


def _unit(v):
    return v / np.linalg.norm(v)


def _command(element: int, value: bytes) -> bytes:
    """One command-set element: group 0000 is always implicit VR little endian (PS3.7)."""
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _insert_command_set(path: Path) -> None:
    """Splice group 0000 elements (as a DIMSE C-STORE carries them) in front of the dataset body."""
    raw = path.read_bytes()
    meta_len = struct.unpack("<I", raw[140:144])[0]  # (0002,0000) value, right after the preamble
    start = 144 + meta_len
    body = _command(0x0002, MR_STORAGE.encode()) + _command(0x0100, struct.pack("<H", 1))
    group = _command(0x0000, struct.pack("<I", len(body)))
    path.write_bytes(raw[:start] + group + body + raw[start:])


def write_clinical_like_series(folder: Path, n: int = 3, size: int = 12) -> None:
    row, col = _unit(ROW_DIR), _unit(np.cross(np.cross(ROW_DIR, COL_DIR), ROW_DIR))
    normal = np.cross(row, col)
    folder.mkdir()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    for k in range(n):
        ds = Dataset()
        ds.SOPClassUID = MR_STORAGE
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.Modality = "Test^Phantom", "P0001", "MR"
        ds.SeriesNumber, ds.InstanceNumber = 5, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.PixelSpacing = ["0.859375", "0.859375"]
        ds.SliceThickness, ds.SpacingBetweenSlices = "6", "7"
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row, *col)]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in (np.array([-100.0, -80.0, 20.0]) + 7.0 * k * normal)]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = "600", "1200"
        ds.PixelData = rng.integers(0, 1200, (size, size), dtype=np.uint16).tobytes()
        ds.add_new(0x00291010, "OB", b"\x01\x02\x03\x04")  # private (Siemens CSA-like) data
        ds.add_new(0x00291008, "CS", "IMAGE NUM 4")
        ds.add_new(0x00080040, "US", 0)  # retired: Data Set Type
        ds.add_new(0x00200070, "LO", "retired image geometry type")  # retired: Image Geometry Type
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MR_STORAGE
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{k:04d}"
        ds.save_as(str(path), enforce_file_format=True)
        _insert_command_set(path)


def _preprocessing(item):
    from medsr.pipeline.data.readers import load_image

    item["image"] = load_image(item["image"])
    return item


def _upscale(src: Path, out: Path) -> Path:
    job = SRFileInference(
        network=torch.nn.Upsample(scale_factor=(2, 2, 1), mode="nearest"),
        files=[str(src)],
        output_dir=out.parent,
        outputs=[out],
        preprocessing=_preprocessing,
        inferer=SRSlidingWindowInferer(roi_size=(8, 8, 3), scale=(2, 2, 1)),
        spatial_dims=3,
        progress=False,
        channels_last=False,
    )
    job.run()
    return out


def _itk_ras_affine(image) -> np.ndarray:
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    direction = np.asarray(image.GetDirection(), dtype=float)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(spacing)
    lps[:3, 3] = np.asarray(image.GetOrigin(), dtype=float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def test_dicom_with_command_set_private_and_retired_elements_gives_a_clean_derived_series(tmp_path):
    src = tmp_path / "mr_series"
    write_clinical_like_series(src)
    first = pydicom.dcmread(str(sorted(src.iterdir())[0]))
    assert (0x0000, 0x0100) in first and (0x0029, 0x1010) in first  # the input really carries them
    with pytest.raises(ValueError, match="Command Set"):  # what the old writer hit after the whole inference
        first.save_as(str(tmp_path / "copy.dcm"), enforce_file_format=True)

    nifti = _upscale(src, tmp_path / "sr.nii.gz")
    series = _upscale(src, tmp_path / "sr_series")
    files = sorted(series.iterdir())
    assert [f.name for f in files] == ["IM00001.dcm", "IM00002.dcm", "IM00003.dcm"]

    ref_aff = nib.load(str(nifti)).affine
    uids = set()
    for k, f in enumerate(files):
        ds = pydicom.dcmread(str(f))
        assert not [e for e in ds if e.tag.group == 0x0000], "command-set elements copied"
        assert not [e for e in ds if e.tag.is_private], "private elements copied"
        assert (0x0008, 0x0040) not in ds and (0x0020, 0x0070) not in ds, "retired elements copied"
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and "medsr" in ds.DerivationDescription
        assert ds.SeriesInstanceUID != first.SeriesInstanceUID and ds.StudyInstanceUID == first.StudyInstanceUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        uids.add(ds.SOPInstanceUID)
        assert (ds.Rows, ds.Columns) == (24, 24)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.4296875, 0.4296875], abs=1e-5)
        # per-slice geometry from the output affine (RAS -> LPS)
        pos_ras = ref_aff @ np.array([0.0, 0.0, k, 1.0])
        assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx(
            [-pos_ras[0], -pos_ras[1], pos_ras[2]], abs=1e-3
        )
        assert "WindowCenter" not in ds
    assert len(uids) == 3

    itk = pytest.importorskip("itk")
    image = itk.imread(str(series))
    assert tuple(image.GetLargestPossibleRegion().GetSize()) == (24, 24, 3)
    assert np.allclose(_itk_ras_affine(image), ref_aff, atol=1e-3)
    assert np.allclose(np.asarray(image.GetSpacing()), [0.4296875, 0.4296875, 7.0], atol=1e-4)
