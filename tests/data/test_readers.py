"""Readers: every format from small files written here, pixel values, shapes, spacing and bad-file errors."""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from monai.transforms import LoadImaged
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, MRImageStorage, generate_uid

from medsr.pipeline.data import (
    DicomReader,
    DicomSeriesReader,
    FigshareMatReader,
    ImageReadError,
    MedicalImageReader,
    NiftiReader,
    PhotoReader,
    load_image,
    read_figshare_mat,
)


# ------------------------------------------------------------------------------------------ file makers
def _dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    series_uid: str,
    instance: int,
    position: tuple[float, float, float],
    spacing: tuple[float, float] = (0.7, 0.8),
    patient: str = "P001",
    pixel_data: bytes | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    bits: int = 16,
) -> Path:
    """A minimal MR image file; ``pixels`` is (rows, cols) uint16."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = "MR", patient, "Test^Patient"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), series_uid, generate_uid()
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    ds.SliceThickness = 2.5
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if pixel_data is None:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    else:
        ds.PixelData = pixel_data
        ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def _series(folder: Path, n: int = 3, z_step: float = 2.5, uid: str | None = None, start: int = 0) -> np.ndarray:
    """``n`` slices (rows 4, cols 5) at z = 10 + k * z_step; returns the volume as (rows, cols, slices)."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    vol = np.arange(4 * 5 * n, dtype=np.uint16).reshape(n, 4, 5).transpose(1, 2, 0) * 7 + 3
    for k in range(n):
        _dicom(
            folder / f"s{start + k}.dcm",
            vol[..., k],
            series_uid=uid,
            instance=k + 1,
            position=(-5.0, 3.0, 10.0 + k * z_step),
        )
    return vol


def _figshare_mat(
    path: Path, image_rc: np.ndarray, mask_rc: np.ndarray, *, label: int = 2, pid: str = "100360"
) -> Path:
    """MATLAB v7.3 layout: an HDF5 file with a 512-byte user block, arrays stored transposed (column-major)."""
    with h5py.File(path, "w", userblock_size=512) as fh:
        cj = fh.create_group("cjdata")
        cj.create_dataset("image", data=image_rc.T.astype(np.int16))  # MATLAB int16 (rows, cols) -> (cols, rows)
        cj.create_dataset("tumorMask", data=mask_rc.T.astype(np.uint8))
        cj.create_dataset("tumorBorder", data=np.array([[1.0, 2.0, 3.0, 4.0]]).T)
        cj.create_dataset("label", data=np.array([[float(label)]]))
        cj.create_dataset("PID", data=np.array([[ord(c)] for c in pid], dtype=np.uint16))
        for name in ("image", "tumorMask", "tumorBorder", "label", "PID"):
            cj[name].attrs["MATLAB_class"] = {"image": b"int16", "tumorMask": b"logical", "PID": b"char"}.get(
                name, b"double"
            )
        cj.attrs["MATLAB_class"] = b"struct"
    with open(path, "r+b") as fh:
        fh.write(
            b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .".ljust(
                116
            )
        )
    return path


# ------------------------------------------------------------------------------------------------ NIfTI
@pytest.mark.parametrize("ndim", [2, 3])
def test_nifti_values_shape_and_non_identity_affine(tmp_path, ndim):
    shape = (6, 5, 4)[:ndim]
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    affine = np.array([[0.0, -0.9, 0.0, 12.0], [1.2, 0.0, 0.0, -7.0], [0.0, 0.0, 3.0, 4.5], [0, 0, 0, 1]])
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)

    img = load_image(path)
    assert img.shape == (1, *shape)
    np.testing.assert_array_equal(img[0].numpy(), data)
    np.testing.assert_allclose(img.affine.numpy(), affine, atol=1e-5)
    np.testing.assert_allclose(img.pixdim[:ndim].numpy(), [1.2, 0.9, 3.0][:ndim], atol=1e-5)
    assert img.meta["spacing_source"] == "header" and img.meta["source_format"] == "nifti"
    assert NiftiReader().verify_suffix(path)


def test_truncated_nifti_names_file(tmp_path):
    path = tmp_path / "cut.nii"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ImageReadError, match=r"cut\.nii.*truncated or corrupt"):
        load_image(path)
    gz = tmp_path / "cut.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(20, 20, 20).astype(np.float32), np.eye(4)), gz)
    gz.write_bytes(gz.read_bytes()[:3000])
    with pytest.raises(ImageReadError, match=r"cut\.nii\.gz"):
        load_image(gz)


# ------------------------------------------------------------------------------------------------ DICOM
def test_single_dicom_values_and_spacing(tmp_path):
    pixels = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 100) + 5
    path = _dicom(tmp_path / "one.dcm", pixels, series_uid=generate_uid(), instance=1, position=(1.0, 2.0, 3.0))
    img = load_image(path)
    assert img.shape == (1, 4, 3)  # (cols, rows): axis 0 runs along columns
    np.testing.assert_array_equal(img[0].numpy(), pixels.T)
    np.testing.assert_allclose(img.pixdim[:2].numpy(), [0.8, 0.7], atol=1e-6)  # column spacing, row spacing
    np.testing.assert_allclose(img.affine[:3, 3].numpy(), [-1.0, -2.0, 3.0], atol=1e-6)  # LPS -> RAS
    assert img.meta["modality"] == "MR" and img.meta["patient_id"] == "P001"
    assert img.meta["spacing_source"] == "ImagePositionPatient"


def test_jpeg2000_dicom_written_with_pillow(tmp_path):
    pydicom_encaps = pytest.importorskip("pydicom.encaps")
    pixels = (np.arange(16 * 12, dtype=np.uint16).reshape(16, 12) * 13 % 251).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="JPEG2000", irreversible=False, no_jp2=True)  # lossless
    frames = pydicom_encaps.encapsulate([buf.getvalue()])
    path = tmp_path / "j2k.dcm"
    _dicom(
        path,
        pixels,
        series_uid=generate_uid(),
        instance=1,
        position=(0, 0, 0),
        pixel_data=frames,
        transfer_syntax=JPEG2000Lossless,
        bits=8,
    )
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == JPEG2000Lossless

    img = load_image(path)
    np.testing.assert_array_equal(img[0].numpy(), pixels.T)
    np.testing.assert_allclose(img.pixdim[:2].numpy(), [0.8, 0.7], atol=1e-6)


def test_pydicom_jpeg2000_and_jpeg_ls_test_files():
    """pydicom's own JPEG-2000 and JPEG-LS lossless files decode to the same pixels as the uncompressed one."""
    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    ref = load_image(folder / "MR_small.dcm")
    j2k = load_image(folder / "MR_small_jp2klossless.dcm")
    jls = load_image(folder / "MR_small_jpeg_ls_lossless.dcm")  # pydicom has no decoder here: ITK/GDCM reads it
    for img in (j2k, jls):
        np.testing.assert_array_equal(img.numpy(), ref.numpy())
        np.testing.assert_allclose(img.pixdim[:2].numpy(), [0.3125, 0.3125])
    assert jls.meta["dicom_decoder"] == "itk"


def test_dicom_series_spacing_and_order(tmp_path):
    vol = _series(tmp_path / "series", n=3, z_step=2.5)
    img = load_image(tmp_path / "series")
    assert img.shape == (1, 5, 4, 3)
    np.testing.assert_array_equal(img[0].numpy(), vol.transpose(1, 0, 2))
    np.testing.assert_allclose(img.pixdim[:3].numpy(), [0.8, 0.7, 2.5], atol=1e-5)
    np.testing.assert_allclose(img.affine[:3, 3].numpy(), [5.0, -3.0, 10.0], atol=1e-5)
    assert img.meta["num_files"] == 3 and img.meta["source_format"] == "dicom-series"
    assert DicomSeriesReader().verify_suffix(tmp_path / "series")


def test_folder_with_two_series_is_an_error(tmp_path):
    _series(tmp_path / "mixed", n=2, uid="1.2.3.1")
    _series(tmp_path / "mixed", n=2, uid="1.2.3.2", start=10)
    with pytest.raises(ImageReadError, match=r"mixed.*2 DICOM series.*1\.2\.3\.1.*1\.2\.3\.2"):
        load_image(tmp_path / "mixed")
    assert load_image(tmp_path / "mixed", series_uid="1.2.3.2").shape == (1, 5, 4, 2)


def test_bytes_that_are_not_dicom(tmp_path):
    path = tmp_path / "fake.dcm"
    path.write_bytes(b"this is not a dicom file" * 20)
    with pytest.raises(ImageReadError, match=r"fake\.dcm.*not a DICOM file"):
        load_image(path)
    with pytest.raises(ImageReadError, match=r"fake\.dcm"):
        DicomReader().read(path)


# ------------------------------------------------------------------------------------------ PNG / JPEG
def test_png_grey_and_rgb_luminance(tmp_path):
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, np.arange(4, dtype=np.uint8)[None] * 50, 10
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    colour = load_image(tmp_path / "rgb.png")
    assert colour.shape == (3, 4, 3)  # channels, cols, rows
    np.testing.assert_array_equal(colour[1].numpy(), rgb[..., 1].T)
    lum = load_image(tmp_path / "rgb.png", luminance=True)
    assert lum.shape == (1, 4, 3)
    expected = 0.299 * 200 + 0.587 * rgb[..., 1].astype(np.float32) + 0.114 * 10
    np.testing.assert_allclose(lum[0].numpy(), expected.T, rtol=1e-5)
    assert lum.meta["spacing_source"] == "default"
    np.testing.assert_allclose(lum.pixdim[:2].numpy(), [1.0, 1.0])

    grey = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 3000).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    img = load_image(tmp_path / "grey16.png")
    np.testing.assert_array_equal(img[0].numpy(), grey.T)
    assert PhotoReader().verify_suffix(tmp_path / "grey16.png")


def test_truncated_png_names_file(tmp_path):
    Image.fromarray(np.random.randint(0, 255, (64, 64), np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "x.png").write_bytes((tmp_path / "x.png").read_bytes()[:200])
    with pytest.raises(ImageReadError, match=r"x\.png"):
        load_image(tmp_path / "x.png")


# ------------------------------------------------------------------------------------------ figshare .mat
def test_figshare_mat_v73_pair_label_and_pid(tmp_path):
    image_rc = (np.arange(6 * 7, dtype=np.int16).reshape(6, 7) * 11) - 50  # MATLAB (rows, cols)
    mask_rc = np.zeros((6, 7), np.uint8)
    mask_rc[1:3, 2:6] = 1
    path = _figshare_mat(tmp_path / "1.mat", image_rc, mask_rc, label=3, pid="MRN 42")

    pair = read_figshare_mat(path)
    assert pair["image"].shape == pair["mask"].shape == (1, 7, 6)
    np.testing.assert_array_equal(pair["image"][0].numpy(), image_rc.T)
    np.testing.assert_array_equal(pair["mask"][0].numpy(), mask_rc.T)
    assert pair["label"] == 3 and pair["PID"] == "MRN 42"
    np.testing.assert_allclose(pair["tumor_border"], [1, 2, 3, 4])

    image = load_image(path)
    mask = load_image(f"{path}#tumorMask")
    np.testing.assert_array_equal(image[0].numpy(), image_rc.T)
    np.testing.assert_array_equal(mask[0].numpy(), mask_rc.T)
    assert image.meta["label"] == 3 and image.meta["PID"] == "MRN 42" and image.meta["spacing_source"] == "default"
    assert load_image(path, mat_field="mask").sum() == mask_rc.sum()
    assert FigshareMatReader().verify_suffix(f"{path}#tumorMask")


def test_mat_without_cjdata(tmp_path):
    path = tmp_path / "other.mat"
    with h5py.File(path, "w", userblock_size=512) as fh:
        fh.create_dataset("img", data=np.zeros((4, 4)))
    with pytest.raises(ImageReadError, match=r"other\.mat.*no struct 'cjdata'.*img"):
        load_image(path)


# ------------------------------------------------------------------------------------------ LoadImaged
@pytest.mark.parametrize("ndim", [2, 3])
def test_loadimaged_with_dispatching_reader(tmp_path, ndim):
    """One reader instance serves every key and format of a datalist entry, as bundles use it."""
    shape = (8, 6, 4)[:ndim]
    affine = np.diag([0.5, 0.6, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.random.rand(*shape).astype(np.float32), affine), tmp_path / "i.nii.gz")
    nib.save(nib.Nifti1Image((np.random.rand(*shape) > 0.5).astype(np.uint8), affine), tmp_path / "m.nii.gz")
    image_rc = np.arange(30, dtype=np.int16).reshape(5, 6)
    _figshare_mat(tmp_path / "t.mat", image_rc, (image_rc > 10).astype(np.uint8))
    load = LoadImaged(keys=["image", "mask"], reader=MedicalImageReader(luminance=True), ensure_channel_first=True)

    out = load({"image": str(tmp_path / "i.nii.gz"), "mask": str(tmp_path / "m.nii.gz")})
    assert out["image"].shape == out["mask"].shape == (1, *shape)
    np.testing.assert_allclose(out["mask"].pixdim[:ndim].numpy(), [0.5, 0.6, 2.0][:ndim])
    out = load({"image": str(tmp_path / "t.mat"), "mask": f"{tmp_path / 't.mat'}#tumorMask"})
    np.testing.assert_array_equal(out["mask"][0].numpy(), (image_rc > 10).T)


def test_unsupported_and_missing_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageReadError, match=r"notes\.txt.*unsupported file type"):
        load_image(tmp_path / "notes.txt")
    with pytest.raises(ImageReadError, match=r"absent\.nii\.gz.*no such file"):
        load_image(tmp_path / "absent.nii.gz")
    with pytest.raises(ValueError, match="mat_field 'border'"):
        MedicalImageReader(mat_field="border")


def test_nifti_prefers_the_sform_and_warns_when_qform_disagrees(tmp_path, caplog):
    """As nibabel and FSL: the sform when its code is set, else the qform; a warning when both are set and differ."""
    import logging

    import nibabel as nib

    from medsr.pipeline.data.readers import load_image

    data = np.random.rand(6, 5, 4).astype(np.float32)
    qform = np.diag([1.0, 1.0, 1.0, 1.0])
    sform = np.diag([2.0, 2.0, 3.0, 1.0])
    sform[:3, 3] = [10.0, 20.0, 30.0]

    img = nib.Nifti1Image(data, None)
    img.set_qform(qform, code=1)
    img.set_sform(sform, code=2)
    nib.save(img, str(tmp_path / "both.nii.gz"))
    with caplog.at_level(logging.WARNING):
        out = load_image(tmp_path / "both.nii.gz")
    assert np.allclose(np.asarray(out.affine), sform) and np.allclose(
        np.asarray(out.affine), nib.load(str(tmp_path / "both.nii.gz")).affine
    )
    assert "qform and sform disagree" in caplog.text and "both.nii.gz" in caplog.text
    assert out.meta["affine_source"] == "sform"

    img = nib.Nifti1Image(data, None)
    img.set_qform(sform, code=1)
    img.set_sform(np.eye(4), code=0)  # sform not set: the qform counts
    nib.save(img, str(tmp_path / "qonly.nii.gz"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        out = load_image(tmp_path / "qonly.nii.gz")
    assert np.allclose(np.asarray(out.affine), sform) and out.meta["affine_source"] == "qform"
    assert "disagree" not in caplog.text
