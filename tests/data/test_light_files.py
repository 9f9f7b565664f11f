"""The light reader (``pipeline/data/files.py``) against MONAI's ``LoadImage`` with ``MedicalImageReader``:
the same array (values, dtype, axis order), affine and source format on real files that pip packages ship and
on files written here (a 16-bit PNG, a 2D NIfTI with an oblique affine, a NIfTI whose qform and sform differ);
formats it does not read come back from MONAI's readers."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medsr.pipeline.data.files import ImageReadError, read_image
from medsr.pipeline.data.readers import load_image
from medsr.transforms._utils import ImageTensor


def _shipped(package: str, *parts: str) -> Path:
    mod = pytest.importorskip(package)
    path = Path(mod.__file__).parent.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not installed")
    return path


REAL = [
    ("skimage", "data", "microaneurysms.png"),  # grey fundus
    ("skimage", "data", "ihc.png"),  # RGB histology
    ("skimage", "data", "retina.jpg"),  # RGB JPEG
    ("skimage", "data", "multipage.tif"),
    ("dipy", "data", "files", "aniso_vox.nii.gz"),  # real anisotropic EPI
    ("nibabel", "tests", "data", "anatomical.nii"),
    ("nibabel", "tests", "data", "reoriented_anat_moved.nii"),
    ("nibabel", "tests", "data", "resampled_anat_moved.nii"),  # big-endian float with NaNs
]


def _assert_same(ours, theirs):
    assert tuple(ours.shape) == tuple(theirs.shape)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours.as_tensor(), theirs.as_tensor(), rtol=0, atol=0, equal_nan=True)
    assert torch.equal(torch.as_tensor(ours.affine), torch.as_tensor(theirs.affine))
    assert ours.affine.dtype == torch.float64
    assert ours.meta["source_format"] == theirs.meta["source_format"]
    assert ours.meta["spacing_source"] == theirs.meta["spacing_source"]


@pytest.mark.parametrize("parts", REAL, ids=[p[-1] for p in REAL])
@pytest.mark.parametrize("luminance", [True, False])
def test_read_image_equals_load_image_on_real_files(parts, luminance):
    path = _shipped(*parts)
    ours = read_image(path, luminance=luminance)
    assert isinstance(ours, ImageTensor)
    _assert_same(ours, load_image(path, luminance=luminance))


def test_read_image_equals_load_image_on_written_files(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((30, 41)) * 60000).astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray((rng.random((30, 41, 4)) * 255).astype(np.uint8), "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray((rng.random((30, 41, 2)) * 255).astype(np.uint8), "LA").save(tmp_path / "grey_alpha.png")
    oblique = np.array([[0.7, 0.1, 0, -20], [0.05, -0.8, 0, 30], [0, 0, 3.0, 5], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image((rng.random((20, 18, 1)) * 900).astype(np.int16), oblique), tmp_path / "slice.nii.gz")
    img = nib.Nifti1Image(rng.random((9, 8, 7)).astype(np.float64), np.diag([2.0, 2.0, 3.0, 1.0]))
    img.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)  # sform (code 2) wins over a different qform
    img.header.set_slope_inter(2.5, -3.0)
    nib.save(img, tmp_path / "forms.nii")
    for name in ("deep.png", "alpha.png", "grey_alpha.png", "slice.nii.gz", "forms.nii"):
        ours = read_image(tmp_path / name, luminance=True)
        assert isinstance(ours, ImageTensor), name
        _assert_same(ours, load_image(tmp_path / name, luminance=True))


def test_other_formats_come_from_monai_readers():
    from monai.data import MetaTensor

    path = _shipped("nibabel", "tests", "data", "example4d.nii.gz")  # 4D: MONAI's reader and its channel axis
    ours = read_image(path)
    assert isinstance(ours, MetaTensor)
    _assert_same(ours, load_image(path))
    dicom = _shipped("pydicom", "data", "test_files", "CT_small.dcm")
    assert isinstance(read_image(dicom), MetaTensor)


def test_read_image_names_a_broken_or_missing_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageReadError, match="broken.png.*not a readable image file"):
        read_image(tmp_path / "broken.png")
    with pytest.raises(ImageReadError, match="nothing.nii.gz.*no such file"):
        read_image(tmp_path / "nothing.nii.gz")
