"""The light helpers of the upscale path (``transforms/_utils.py``, ``transforms/geometry.py``) against the
MONAI transforms they stand in for: percentile normalisation and its inverse give the same values and
``meta["medsr_norm"]`` on an ImageTensor as ``PercentileNormalize`` on a MetaTensor (both percentile code
paths: ``torch.quantile`` and, above a million voxels, ``np.percentile``); geometry reads both kinds."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing as monai_affine_to_spacing
from monai.utils import ensure_tuple_rep as monai_ensure_tuple_rep

from medsr.transforms import NORM_KEY, PercentileNormalize, invert_normalization
from medsr.transforms._utils import ImageTensor, image_like, percentile_normalize
from medsr.transforms.geometry import affine_to_spacing, ensure_tuple_rep, spacing_of, squeeze_spatial

AFFINE = torch.tensor([[0.7, 0.1, 0, -20], [0.05, -0.8, 0, 30], [0, 0, 3.0, 5], [0, 0, 0, 1]], dtype=torch.float64)


@pytest.mark.parametrize("shape", [(1, 40, 30), (1, 12, 10, 6), (1, 1100, 1000)], ids=["2d", "3d", "over-1e6"])
def test_percentile_normalize_equals_monai_transform(shape):
    data = torch.rand(shape) * 1000 - 200
    theirs = PercentileNormalize(0.5, 99.5, clip=False)(MetaTensor(data.clone(), affine=AFFINE))
    ours = percentile_normalize(ImageTensor(data.clone(), affine=AFFINE), 0.5, 99.5, clip=False)
    assert isinstance(ours, ImageTensor)
    assert torch.equal(ours.as_tensor(), theirs.as_tensor())
    assert ours.meta[NORM_KEY] == theirs.meta[NORM_KEY]
    assert torch.equal(ours.affine, theirs.affine)
    back = invert_normalization(ours)
    assert isinstance(back, ImageTensor) and NORM_KEY not in back.meta
    assert torch.equal(back.as_tensor(), invert_normalization(theirs).as_tensor())


def test_percentile_normalize_of_a_metatensor_is_the_monai_transform():
    img = MetaTensor(torch.rand(1, 20, 16) * 50, affine=AFFINE)
    ours, theirs = percentile_normalize(img, clip=True), PercentileNormalize()(img)
    assert isinstance(ours, MetaTensor) and torch.equal(ours.as_tensor(), theirs.as_tensor())


def test_percentile_normalize_names_a_nan_image():
    data = torch.rand(1, 8, 8)
    data[0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="image: contains NaN"):
        percentile_normalize(ImageTensor(data))


def test_geometry_reads_imagetensors_and_metatensors_alike():
    data = torch.rand(1, 9, 7, 1)
    a, b = ImageTensor(data, affine=AFFINE), MetaTensor(data, affine=AFFINE)
    assert spacing_of(a) == spacing_of(b)
    sa, sb = squeeze_spatial(a, 2), squeeze_spatial(b, 2)
    assert isinstance(sa, ImageTensor) and isinstance(sb, MetaTensor)
    assert torch.equal(sa.affine, sb.affine) and sa.shape == sb.shape == (1, 9, 7)
    assert torch.equal(affine_to_spacing(AFFINE), monai_affine_to_spacing(AFFINE))
    for value in (2, (1, 1, 4), [3, 3, 3], None, torch.tensor([1, 2, 3])):
        assert ensure_tuple_rep(value, 3) == monai_ensure_tuple_rep(value, 3)
    with pytest.raises(ValueError):
        ensure_tuple_rep((1, 2), 3)


def test_imagetensor_operations_give_plain_tensors_and_image_like_keeps_the_kind():
    img = ImageTensor(torch.ones(1, 4, 4), affine=AFFINE, meta={"source_format": "image"})
    assert type(img * 2) is torch.Tensor and type(img.unsqueeze(0)) is torch.Tensor
    assert isinstance(image_like(img * 2, img), ImageTensor)
    assert isinstance(image_like(img * 2, MetaTensor(img.as_tensor())), MetaTensor)
    assert torch.equal(image_like(img * 2, img).affine, AFFINE)
