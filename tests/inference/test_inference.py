"""SR inference on files: HR geometry, sliding-window blending on a scaled grid, NIfTI and DICOM writers."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from medsr.pipeline.inference import (
    SRFileInference,
    SRSlidingWindowInferer,
    is_dicom,
    output_path_for,
    save_dicom,
    save_nifti,
)
from medsr.transforms.geometry import sr_affine

OBLIQUE = torch.tensor(
    [[0.0, -2.0, 0.1, 10.0], [1.5, 0.0, 0.0, -3.0], [0.0, 0.0, 4.0, 7.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64
)


def _corners(shape):
    import itertools

    return [torch.tensor([*c, 1.0], dtype=torch.float64) for c in itertools.product(*[(-0.5, n - 0.5) for n in shape])]


@pytest.mark.parametrize("scale", [(2, 2, 1), (1, 1, 4), (3, 2, 5)])
def test_sr_affine_keeps_physical_extent_and_divides_spacing(scale):
    lr_shape = (5, 6, 3)
    hr_shape = tuple(n * s for n, s in zip(lr_shape, scale))
    hr = sr_affine(OBLIQUE, scale)
    for lr_c, hr_c in zip(_corners(lr_shape), _corners(hr_shape)):
        assert torch.allclose(OBLIQUE @ lr_c, hr @ hr_c, atol=1e-9)
    lr_spacing = torch.linalg.norm(OBLIQUE[:3, :3], dim=0)
    hr_spacing = torch.linalg.norm(hr[:3, :3], dim=0)
    assert torch.allclose(hr_spacing, lr_spacing / torch.tensor(scale, dtype=torch.float64))


def test_sr_affine_matches_pairing_convention():
    """The HR voxels' mean centre equals the LR voxel centre (centres inside the footprint)."""
    hr = sr_affine(OBLIQUE, (1, 1, 4))
    centres = torch.stack([hr @ torch.tensor([0.0, 0.0, k, 1.0], dtype=torch.float64) for k in range(4)])
    assert torch.allclose(centres.mean(0), OBLIQUE @ torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64))


def test_sr_affine_rejects_bad_input():
    with pytest.raises(ValueError, match="affine"):
        sr_affine(torch.eye(3), 2)
    with pytest.raises(ValueError, match="scale"):
        sr_affine(torch.eye(4), (0, 1, 1))


@pytest.mark.parametrize(
    "spatial_dims,shape,scale,roi",
    [(2, (23, 17), (2, 2), (8, 8)), (3, (12, 10, 5), (1, 1, 4), (6, 6, 4))],
)
def test_sliding_window_equals_whole_image_forward(spatial_dims, shape, scale, roi):
    """Nearest upsampling is local, so gaussian-blended windows must reproduce the whole-image result."""
    affine = OBLIQUE.clone()
    x = MetaTensor(torch.rand(1, 2, *shape), affine=affine)
    net = torch.nn.Upsample(scale_factor=scale, mode="nearest")
    inferer = SRSlidingWindowInferer(roi_size=roi, scale=scale, overlap=0.5, mode="gaussian", device="cpu")
    y = inferer(x, net)
    assert y.shape == (1, 2, *(n * s for n, s in zip(shape, scale)))
    assert torch.allclose(y.as_tensor(), net(x.as_tensor()), atol=1e-5)
    assert torch.allclose(torch.as_tensor(y.affine, dtype=torch.float64), sr_affine(affine, scale, spatial_dims))


def test_sliding_window_rejects_bad_roi_and_overlap():
    with pytest.raises(ValueError, match="overlap"):
        SRSlidingWindowInferer(roi_size=8, scale=2, overlap=1.0)
    inferer = SRSlidingWindowInferer(roi_size=(8, 8, 8), scale=2)
    with pytest.raises(ValueError, match="roi_size"):
        inferer(torch.rand(1, 1, 8, 8), torch.nn.Identity())


@pytest.mark.parametrize("channels", [1, 3])
def test_save_nifti_atomic_round_trip(tmp_path, channels):
    img = MetaTensor(torch.rand(channels, 6, 5, 4), affine=OBLIQUE)
    out = save_nifti(img, tmp_path / "sub" / "x.nii.gz")
    back = nib.load(out)
    assert np.allclose(back.affine, OBLIQUE.numpy(), atol=1e-5)
    data = back.get_fdata()
    expected = img[0].numpy() if channels == 1 else np.moveaxis(img.numpy(), 0, -1)[:, :, :, None, :]
    assert np.allclose(data, expected, atol=1e-6)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.nii.gz"]  # no temp file left behind
    with pytest.raises(ValueError, match="x.png"):
        save_nifti(img, tmp_path / "x.png")


def _write_series(folder: Path, n: int = 3) -> None:
    """A real CT slice (pydicom test file) stacked into a short series with consistent geometry."""
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    ref = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder.mkdir()
    series = generate_uid()
    pos = [float(v) for v in ref.ImagePositionPatient]
    for k in range(n):
        ds = ref.copy()
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.SliceThickness = "5"
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 5.0 * k]
        ds.save_as(str(folder / f"s{k}.dcm"))


def _load(reader: str):
    return Compose([LoadImaged("image", reader=reader, image_only=True), EnsureChannelFirstd("image")])


def test_dicom_series_round_trip_geometry_and_units(tmp_path):
    src = tmp_path / "series"
    _write_series(src)
    assert is_dicom(src) and is_dicom(next(src.iterdir()))
    pre = _load("PydicomReader")
    img = pre({"image": str(src)})["image"]
    assert img.shape[1:] == (128, 128, 3)
    up = MetaTensor(torch.nn.functional.interpolate(img[None].float(), scale_factor=(2, 2, 1), mode="nearest")[0])
    up.affine = sr_affine(img.affine, (2, 2, 1))
    out = tmp_path / "series_sr"
    files = save_dicom(up, out, src)
    assert len(files) == 3 and out.is_dir()
    back = pre({"image": str(out)})["image"]
    assert back.shape == up.shape
    assert torch.allclose(torch.as_tensor(back.affine, dtype=torch.float64), up.affine.double(), atol=1e-3)
    assert torch.allclose(back.float(), up.float(), atol=0.5)  # stored values round-trip through the rescale
    ds = pydicom.dcmread(files[0])
    ref = pydicom.dcmread(str(src / "s0.dcm"))
    assert ds.Rows == 2 * ref.Rows and float(ds.PixelSpacing[0]) == pytest.approx(float(ref.PixelSpacing[0]) / 2)
    assert ds.SeriesInstanceUID != ref.SeriesInstanceUID and ds.StudyInstanceUID == ref.StudyInstanceUID


class _Scale:
    """Stand-in intensity map (x / 1000) and its inverse, to check units come back."""

    def __call__(self, item):
        item["image"] = item["image"].float() / 1000.0
        return item


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_file_inference_writes_hr_nifti_in_input_units(tmp_path, spatial_dims):
    shape = (14, 11) if spatial_dims == 2 else (10, 9, 4)
    scale = (2, 2) if spatial_dims == 2 else (1, 1, 4)
    data = np.random.rand(*shape).astype(np.float32) * 1000.0
    nib.save(nib.Nifti1Image(data, OBLIQUE.numpy()), str(tmp_path / "case.nii.gz"))
    pre = Compose([_load("NibabelReader"), _Scale()])
    net = torch.nn.Upsample(scale_factor=scale, mode="nearest")
    job = SRFileInference(
        network=net,
        files=[{"image": str(tmp_path / "case.nii.gz")}],
        output_dir=tmp_path / "out",
        preprocessing=pre,
        postprocessing=lambda out, item: out * 1000.0,
        inferer=SRSlidingWindowInferer(roi_size=8, scale=scale, overlap=0.25),
        spatial_dims=spatial_dims,
        progress=False,
    )
    (rec,) = job.run()
    assert Path(rec["output"]) == output_path_for(tmp_path / "case.nii.gz", tmp_path / "out")
    out = nib.load(rec["output"])
    assert out.shape == tuple(n * s for n, s in zip(shape, scale))
    lr_aff = OBLIQUE.numpy()
    if spatial_dims == 2:
        assert np.allclose(out.affine, sr_affine(OBLIQUE, (*scale, 1)).numpy(), atol=1e-5)
    else:
        assert np.allclose(out.affine, sr_affine(lr_aff, scale).numpy(), atol=1e-5)
    expected = net(torch.from_numpy(data)[None, None]).numpy()[0, 0]
    assert np.allclose(out.get_fdata(), expected, rtol=1e-4, atol=1e-2)
    assert rec["spacing"] == pytest.approx(
        tuple(np.linalg.norm(lr_aff[:3, :spatial_dims], axis=0) / np.array(scale)), rel=1e-5
    )


def test_file_inference_names_missing_input(tmp_path):
    with pytest.raises(ValueError, match="nope.nii.gz"):
        SRFileInference(torch.nn.Identity(), [str(tmp_path / "nope.nii.gz")], tmp_path, _Scale(), None)


def test_dihedral_tta_is_equivariant_and_exact_for_an_equivariant_network():
    """TTA over the 8 flips/rotations makes any 2D network equivariant to them; a network that already is
    (nearest upsampling) gives exactly its own output."""
    from medsr.networks import RDN
    from medsr.pipeline.inference import DihedralTTA

    net = RDN(2, 1, 1, 2, num_features=8, num_blocks=1, num_layers=1, growth_channels=4).eval()
    tta = DihedralTTA(net, 8)
    assert tta.spatial_dims == 2 and tuple(tta.scale_factor) == tuple(net.scale_factor)
    x = torch.rand(1, 1, 12, 12)
    with torch.no_grad():
        y = tta(x)
        assert y.shape == (1, 1, 24, 24)
        assert torch.allclose(tta(x.flip(-1)), y.flip(-1), atol=1e-5)
        assert torch.allclose(tta(torch.rot90(x, 1, (-2, -1))), torch.rot90(y, 1, (-2, -1)), atol=1e-5)
        assert not torch.allclose(net(x.flip(-1)), net(x).flip(-1), atol=1e-5)  # the plain network is not

    class Nearest(torch.nn.Module):
        spatial_dims, scale_factor = 2, (2, 2)

        def forward(self, z):
            return torch.nn.functional.interpolate(z, scale_factor=2, mode="nearest")

    assert torch.allclose(DihedralTTA(Nearest(), 8)(x), Nearest()(x), atol=1e-6)
    with pytest.raises(ValueError, match="--tta: expected 1, 2, 4 or 8"):
        DihedralTTA(net, 3)


def test_data_consistency_is_zero_for_the_true_hr_and_not_for_cubic():
    """``data_consistency``: the HR image the LR was made from reproduces the LR exactly; cubic does not."""
    from medsr.pipeline.evaluation import data_consistency
    from medsr.transforms import PairDegradation

    yy, xx = torch.meshgrid(torch.linspace(0, 6, 64), torch.linspace(0, 6, 64), indexing="ij")
    hr = (torch.sin(3 * xx) * torch.cos(2 * yy) + 2.0)[None]
    degrade = PairDegradation(scale_factor=(2, 2), mode="bicubic")
    lr = degrade(hr)
    rep = data_consistency(lr, hr, degrade, "test")
    assert rep["medsr_rmse"] < 1e-4 and rep["cubic_rmse"] > 100 * rep["medsr_rmse"]
    assert rep["cubic_relative"] == pytest.approx(rep["cubic_rmse"] / float(lr.square().mean().sqrt()), rel=0.2)
