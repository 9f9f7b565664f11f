"""The geometry module: per-axis arguments, scale parsing, spacing, and LR/SR affines as inverses."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from medsr.transforms.geometry import expand_size, lr_affine, parse_scale, per_axis, spacing_of, sr_affine

OBLIQUE = torch.tensor(
    [[0.0, -2.0, 0.1, 10.0], [1.5, 0.0, 0.0, -3.0], [0.0, 0.0, 4.0, 7.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64
)


def test_per_axis_broadcasts_and_names_the_argument():
    assert per_axis(2, 3, "x") == (2, 2, 2)
    assert per_axis(None, 2, "x") == (None, None)
    assert per_axis(torch.tensor([1.0, 2.0]), 2, "x") == (1.0, 2.0)
    with pytest.raises(ValueError, match="target_spacing: expected 3 values"):
        per_axis((1.0, 2.0), 3, "target_spacing")
    with pytest.raises(ValueError, match="patch_size: must be given"):
        per_axis(None, 2, "patch_size", allow_none=False)


def test_parse_scale_and_expand_size():
    assert parse_scale("(1,1,4)", 3) == (1, 1, 4) and parse_scale(2.0, 2) == (2, 2)
    assert expand_size("16", 3) == (16, 16, 16) and expand_size((8, 4), 2) == (8, 4)
    for bad in ((1, 4), "x", 0, 2.5, True):
        with pytest.raises(ValueError, match="scale"):
            parse_scale(bad, 3)
    with pytest.raises(ValueError, match="roi_size"):
        expand_size((8, 0), 2, "roi_size")


@pytest.mark.parametrize("factors", [(2, 2, 1), (1, 1, 4), (3, 2, 2)])
def test_sr_affine_inverts_lr_affine(factors):
    assert torch.allclose(sr_affine(lr_affine(OBLIQUE, factors), factors), OBLIQUE, atol=1e-12)


@pytest.mark.parametrize("sd", [2, 3])
def test_spacing_of_reads_the_affine_and_defaults_for_plain_tensors(sd):
    img = MetaTensor(torch.zeros(1, *([4] * sd)), affine=OBLIQUE)
    assert spacing_of(img) == pytest.approx((1.5, 2.0, 4.0)[:sd], rel=1e-3)
    assert spacing_of(img[None], spatial_dims=sd) == spacing_of(img)  # batched: the first item's
    assert spacing_of(torch.zeros(1, *([4] * sd))) == (1.0,) * sd
    assert spacing_of(torch.zeros(1, *([4] * sd)), default=None) is None
