"""A user's own folder, no masks: ``medsr datalist`` -> ``medsr train`` -> ``medsr upscale`` on PNGs, on 2D
NIfTI stored as (X, Y, 1) and on one DICOM series written here (pydicom's test files are reserved)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsr.pipeline.cli import main as medsr_main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, own_logging):  # own_logging: no handler left on a closed stream
    monkeypatch.chdir(REPO)  # bundles reference bundles/common/*.json relative to the working directory
    yield


def _picture(k: int, shape=(40, 36)) -> np.ndarray:
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (g[0] ** 2 + g[1] ** 2 < 0.6) * (120 + 40 * np.sin(5 * g[0] + k))
    return (body + 10 * np.random.default_rng(k).random(shape)).astype(np.float32)


def png_folder(root: Path) -> tuple[Path, Path]:
    from PIL import Image

    root.mkdir()
    for k in range(3):
        Image.fromarray(_picture(k).astype(np.uint8).T).save(root / f"photo{k}.png")
    return root, root / "photo0.png"


def nifti_folder(root: Path) -> tuple[Path, Path]:
    root.mkdir()
    aff = np.diag([0.8, 0.7, 3.0, 1.0])
    aff[:3, 3] = (-12.0, 4.0, 30.0)
    for k in range(3):
        nib.save(nib.Nifti1Image(_picture(k)[:, :, None], aff), str(root / f"slice{k}.nii.gz"))
    return root, root / "slice0.nii.gz"


def dicom_folder(root: Path) -> tuple[Path, Path]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    series = root / "series"
    series.mkdir(parents=True)
    vol = np.stack([_picture(k, (16, 16)) for k in range(12)], -1)
    uid = generate_uid()
    for k in range(vol.shape[2]):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", uid
        ds.Modality, ds.PatientID, ds.InstanceNumber = "MR", "P1", k + 1
        ds.PixelSpacing, ds.SliceThickness = ["0.8", "0.8"], "3"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, 3.0 * k]
        ds.Rows = ds.Columns = 16
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(vol[:, :, k].T).astype(np.uint16).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(str(series / f"IM{k:03d}.dcm"), enforce_file_format=True)
    return root, series


CASES = {
    "png": (png_folder, ["--scale", "2", "--patch-size", "8"], "uniformly", ".nii.gz"),
    "nifti-xy1": (nifti_folder, ["--scale", "2", "--patch-size", "8"], "Otsu", ".nii.gz"),
    "dicom-series": (dicom_folder, ["--spatial-dims", "3", "--scale", "(1,1,2)", "--patch-size", "(8,8,4)"], "Otsu", ""),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CASES))
def test_datalist_train_upscale_without_masks(kind, tmp_path, capsys):
    make, geometry, sampling, out_suffix = CASES[kind]
    folder, probe = make(tmp_path / "data")
    datalist = tmp_path / "dl.json"
    assert medsr_main(["datalist", str(folder), "-o", str(datalist)]) == 0
    items = [i for s in ("training", "validation", "test") for i in json.loads(datalist.read_text())[s]]
    assert items and all("mask" not in i for i in items)
    runs = tmp_path / "runs"
    argv = ["train", "espcn", "--datalist", str(datalist), "--output-dir", str(runs), "--epochs", "1",
            "--epoch-length", "2", "--batch-size", "2", *geometry, "--set", "num_features=[8, 8]",
            "--set", "samples_per_image=1", "--tracking", "none"]  # fmt: skip
    assert medsr_main(argv) == 0, capsys.readouterr().err[-3000:]
    log = "".join(capsys.readouterr())
    assert f"patch centres drawn {'uniformly' if sampling == 'uniformly' else 'in the foreground'}" in log
    assert sampling in log and "no mask" in log  # the sampling and the region metric say why
    best = next(runs.glob("*/checkpoints/best_network.pt"))

    out = tmp_path / f"sr{out_suffix or '_series'}"
    argv = ["upscale", str(probe), str(out), "--bundle", "espcn", "--checkpoint", str(best), "--quiet"]
    assert medsr_main(argv) == 0, capsys.readouterr().err[-3000:]
    if kind == "dicom-series":
        import pydicom

        files = sorted(out.glob("*.dcm"))
        assert len(files) == 24
        ds = pydicom.dcmread(str(files[0]))
        assert (ds.Rows, ds.Columns) == (16, 16) and float(ds.SliceThickness) == pytest.approx(1.5)
    else:
        img = nib.load(str(out))
        assert img.shape == (80, 72)
        src_zooms = (0.8, 0.7) if kind == "nifti-xy1" else (1.0, 1.0)
        np.testing.assert_allclose(img.header.get_zooms()[:2], np.asarray(src_zooms) / 2, rtol=1e-5)


# ------------------------------------------------------------------------------------------- units
def test_squeeze_spatial_keeps_the_geometry_of_the_kept_axes():
    import torch
    from monai.data import MetaTensor

    from medsr.transforms import spacing_of, squeeze_spatial

    aff = torch.tensor([[0.0, 0.0, 2.5, 40.0], [0.0, 1.2, 0.0, -3.0], [0.8, 0.0, 0.0, 12.0], [0, 0, 0, 1]])
    for shape, kept in (((1, 6, 5, 1), (0, 1)), ((1, 6, 1, 5), (0, 2))):
        img = MetaTensor(torch.rand(shape), affine=aff)
        out = squeeze_spatial(img, 2)
        assert out.shape == (1, 6, 5)
        torch.testing.assert_close(out.affine[:3, :2], aff[:3, list(kept)].double())
        torch.testing.assert_close(out.affine[:3, 3], aff[:3, 3].double())
        assert spacing_of(out) == pytest.approx([(0.8, 1.2, 2.5)[a] for a in kept])
    vol = MetaTensor(torch.rand(1, 4, 4, 3), affine=aff)
    assert squeeze_spatial(vol, 2).shape == vol.shape  # nothing to squeeze: the dimension check names it


def test_crop_without_mask_samples_the_otsu_foreground_or_a_photo_uniformly(caplog):
    import torch
    from monai.data import MetaTensor

    from medsr.transforms import MaskAwareCropd

    img = torch.zeros(1, 64, 64)
    img[0, 40:60, 40:60] = 100.0  # the body; the rest is air
    crop = MaskAwareCropd(("image", "mask"), "mask", patch_size=4, num_samples=20, allow_missing_keys=True)
    crop.set_random_state(0)
    with caplog.at_level(logging.INFO):
        patches = crop({"image": MetaTensor(img.clone(), meta={"source_format": "nifti"})})
        assert all(p["image"].max() > 0 for p in patches)  # every centre in the foreground
        assert "Otsu" in caplog.text
        patches = crop({"image": MetaTensor(img.clone(), meta={"source_format": "image"})})
    assert any(p["image"].max() == 0 for p in patches) and "uniformly" in caplog.text
    with pytest.raises(KeyError, match="mask_key"):  # without allow_missing_keys a missing mask is an error
        MaskAwareCropd(("image",), "mask", patch_size=4)({"image": img})


def test_datalist_items_checked_before_loading(tmp_path):
    from medsr.pipeline.data.datalist import resolve_datalist
    from medsr.pipeline.errors import MedsrError

    folder, _ = nifti_folder(tmp_path / "d")
    vol = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 5), np.float32), np.eye(4)), str(vol))
    items = [{"image": str(p)} for p in sorted(folder.glob("*.nii.gz"))]
    items += [{"image": str(tmp_path / "gone.nii.gz")}, {"image": str(vol)}]
    small = tmp_path / "small_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.uint8), np.eye(4)), str(small))
    items[0]["mask"] = str(small)
    dl = tmp_path / "dl.json"
    dl.write_text(json.dumps({"training": items}))
    with pytest.raises(MedsrError) as err:
        resolve_datalist(str(dl), spatial_dims=2)
    msg = str(err.value)
    assert "(3 bad items)" in msg and "gone.nii.gz': no such file" in msg and "vol.nii.gz'" in msg
    assert "--spatial-dims 3" in msg and "slice1" not in msg
    assert "mask '" in msg and "small_mask.nii.gz': shape (8, 8) does not match its image" in msg


@pytest.mark.slow
def test_dataset_dir_of_pngs_trains_without_masks(tmp_path, capsys):
    folder, _ = png_folder(tmp_path / "photos")
    runs = tmp_path / "runs"
    argv = ["train", "espcn", "--dataset-dir", str(folder), "--output-dir", str(runs), "--epochs", "1",
            "--epoch-length", "2", "--batch-size", "2", "--scale", "2", "--patch-size", "8",
            "--set", "num_features=[8, 8]", "--tracking", "none"]  # fmt: skip
    assert medsr_main(argv) == 0, capsys.readouterr().err[-3000:]
    assert list(runs.glob("*/checkpoints/checkpoint_*.pt")) and (runs / "latest").exists()
