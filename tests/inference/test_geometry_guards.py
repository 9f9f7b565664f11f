"""Geometry that cannot be silently wrong: the thick axis is the one upscaled, a named model's scale is not
overridden in silence, DICOM keeps its SliceThickness for in-plane SR, outputs stay in the input's range."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsr.pipeline.cli import main as medsr_main


def _edges(affine: np.ndarray, shape) -> np.ndarray:
    """World coordinates of the outer voxel corners: the field of view."""
    lo, hi = np.full(3, -0.5), np.asarray(shape, float) - 0.5
    return (affine[:3, :3] @ np.stack([lo, hi], 1) + affine[:3, 3:4]).T


def _phantom(shape) -> np.ndarray:
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return ((sum(x**2 for x in g) < 0.5) * 100.0 + 20.0 * (g[1] > 0)).astype(np.float32)


def test_per_axis_scale_upscales_the_thick_axis(tmp_path, capsys):
    aff = np.diag([4.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = (10.0, -20.0, 5.0)
    src = tmp_path / "thick_axis0.nii.gz"
    nib.save(nib.Nifti1Image(_phantom((5, 12, 12)), aff), str(src))
    out = tmp_path / "out.nii.gz"
    assert medsr_main(["upscale", str(src), str(out), "--scale", "(1,1,4)", "--roi-size", "(8,8,4)"]) == 0
    captured = capsys.readouterr()
    img = nib.load(str(out))
    assert img.shape == (20, 12, 12)  # axis 0 (4 mm) upscaled, not axis 2 (1 mm)
    np.testing.assert_allclose(img.header.get_zooms()[:3], (1.0, 1.0, 1.0), rtol=1e-5)
    np.testing.assert_allclose(_edges(img.affine, img.shape), _edges(aff, (5, 12, 12)), atol=1e-4)
    assert "reoriented: --scale (1, 1, 4) applied to axis 0 (4 mm, the thick one), not axis 2" in captured.out


def test_per_axis_scale_with_two_thick_axes_is_refused(tmp_path, capsys):
    src = tmp_path / "two_thick.nii.gz"
    nib.save(nib.Nifti1Image(_phantom((5, 5, 12)), np.diag([4.0, 4.0, 1.0, 1.0])), str(src))
    assert medsr_main(["upscale", str(src), str(tmp_path / "o.nii.gz"), "--scale", "(1,1,4)"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("medsr")]
    assert len(err) == 1 and "upscales axis 2" in err[0] and "[0, 1]" in err[0]
    assert not (tmp_path / "o.nii.gz").exists()


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["--model", "rdn_x2", "--scale", "4"], "--model rdn_x2 upscales by 2x2, but --scale 4 asks for 4x4"),
        (["--model", "rdn_3d_x1x1x4"], "a 3D model cannot upscale the 2D image"),
    ],
    ids=["scale-contradicts-model", "3d-model-on-png"],
)
def test_named_model_that_cannot_do_it_is_refused(argv, expect, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(_phantom((24, 24)).astype(np.uint8)).save(tmp_path / "a.png")
    assert medsr_main(["upscale", str(tmp_path / "a.png"), str(tmp_path / "b.png"), *argv]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and expect in err[0], err
    assert not (tmp_path / "b.png").exists()


def _dicom(path: Path, thickness: str = "3") -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", generate_uid()
    ds.Modality, ds.PatientID, ds.InstanceNumber = "MR", "P1", 1
    ds.PixelSpacing, ds.SliceThickness = ["0.8", "0.8"], thickness
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 12.0]
    ds.Rows = ds.Columns = 24
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = (_phantom((24, 24)) * 8).astype(np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = MRImageStorage, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_dicom_in_plane_sr_keeps_slice_thickness(tmp_path):
    import pydicom

    src = _dicom(tmp_path / "slice.dcm", thickness="3")
    out = tmp_path / "sr.dcm"
    assert medsr_main(["upscale", str(src), str(out), "--model", "rdn_x2"]) == 0
    ds = pydicom.dcmread(str(out))
    assert float(ds.SliceThickness) == 3.0
    assert [float(v) for v in ds.PixelSpacing] == [0.4, 0.4] and (ds.Rows, ds.Columns) == (48, 48)
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient][2], 12.0)


def test_outputs_are_clipped_to_the_input_range_unless_raw(tmp_path):
    src = tmp_path / "edges.nii.gz"
    data = np.zeros((32, 32), np.float32)
    data[::4] = 100.0  # sharp stripes: an SR network over- and undershoots them
    data[:, ::5] = 100.0
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 1.0, 1.0])), str(src))
    clipped, raw = tmp_path / "clipped.nii.gz", tmp_path / "raw.nii.gz"
    assert medsr_main(["upscale", str(src), str(clipped), "--model", "rdn_x2"]) == 0
    assert medsr_main(["upscale", str(src), str(raw), "--model", "rdn_x2", "--raw-values"]) == 0
    c, r = nib.load(str(clipped)).get_fdata(), nib.load(str(raw)).get_fdata()
    assert r.min() < 0.0 or r.max() > 100.0  # the network's own values leave the range
    assert c.min() >= 0.0 and c.max() <= 100.0 + 1e-3
    np.testing.assert_allclose(c, np.clip(r, 0.0, 100.0), atol=1e-3)
    np.testing.assert_allclose(nib.load(str(clipped)).affine, nib.load(str(raw)).affine)


def test_dicom_series_in_plane_keeps_thickness_spacing_and_range(tmp_path):
    """A PD-like series (SliceThickness 5 mm, slices 7 mm apart) upscaled x2 in-plane: thickness 5, spacing 7,
    and no value outside the input's range (a magnitude image gains no negative values)."""
    import pydicom

    series = tmp_path / "series"
    series.mkdir()
    uid = "1.2.3.4.77"
    for k in range(3):
        path = _dicom(series / f"s{k}.dcm", thickness="5")
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.InstanceNumber, ds.ImagePositionPatient = uid, k + 1, [0, 0, 7.0 * k]
        ds.save_as(path)
    src = np.stack([pydicom.dcmread(series / f"s{k}.dcm").pixel_array for k in range(3)])
    out = tmp_path / "sr_series"
    assert medsr_main(["upscale", str(series), str(out), "--scale", "2", "--quiet"]) == 0
    files = sorted(out.glob("*.dcm"))
    assert len(files) == 3
    for f in files:
        ds = pydicom.dcmread(f)
        assert float(ds.SliceThickness) == 5.0 and float(ds.SpacingBetweenSlices) == pytest.approx(7.0)
        assert (ds.Rows, ds.Columns) == (48, 48) and [float(v) for v in ds.PixelSpacing] == [0.4, 0.4]
        values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert values.min() >= src.min() and values.max() <= src.max()
