"""The torch-only sliding window (``pipeline/inferer.py``) against MONAI's ``sliding_window_inference``: the
same values to the last bit on 2D and 3D inputs, several window sizes, overlaps, batch sizes, blend modes and
(per-axis) scale factors; and MetaTensor in, MetaTensor out as MONAI's inferer gives it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from medsr.pipeline.inferer import SRSlidingWindowInferer, importance_map, sliding_window_sr
from medsr.transforms._utils import ImageTensor
from medsr.transforms.geometry import sr_affine


def _sr_net(spatial_dims: int, scale: tuple[int, ...]):
    """A small conv + nearest upsampling: outputs that differ per window position (edges) and per pixel."""
    conv = (torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d)(1, 2, 3, padding=1)

    def net(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(conv(x), scale_factor=scale, mode="nearest")

    return net


CASES = [  # shape (B, C, *S), roi, scale, overlap, mode, sw_batch_size
    ((1, 1, 50, 37), (16, 16), (2, 2), 0.25, "gaussian", 1),
    ((2, 1, 50, 37), (20, 13), (4, 4), 0.5, "constant", 3),
    ((1, 1, 33, 40), (33, 16), (3, 3), 0.7, "gaussian", 2),
    ((1, 1, 64, 64), (64, 64), (2, 2), 0.25, "gaussian", 1),
    ((1, 1, 20, 18, 9), (8, 8, 4), (1, 1, 4), 0.25, "gaussian", 1),
    ((1, 1, 12, 12, 12), (12, 5, 7), (2, 2, 2), 0.0, "gaussian", 1),
]


@pytest.mark.parametrize("shape, roi, scale, overlap, mode, batch", CASES)
def test_sliding_window_sr_equals_monai_bit_for_bit(shape, roi, scale, overlap, mode, batch):
    x = torch.rand(shape)
    net = _sr_net(len(shape) - 2, scale)
    with torch.no_grad():
        ours = sliding_window_sr(x, roi, batch, net, overlap=overlap, mode=mode, sw_device="cpu", device="cpu")
        theirs = sliding_window_inference(
            x, roi, batch, net, overlap=overlap, mode=mode, padding_mode="replicate", sw_device="cpu", device="cpu"
        )
    assert type(ours) is torch.Tensor
    assert ours.shape == theirs.shape == (shape[0], 2, *(s * f for s, f in zip(shape[2:], scale)))
    assert torch.equal(ours, torch.as_tensor(theirs))


@pytest.mark.parametrize("size, mode", [((16, 16), "gaussian"), ((7, 9, 4), "gaussian"), ((5, 6), "constant")])
def test_importance_map_equals_monai(size, mode):
    from monai.data.utils import compute_importance_map

    assert torch.equal(importance_map(size, mode), compute_importance_map(size, mode=mode))


def test_inferer_keeps_the_input_kind_and_sets_the_hr_affine():
    affine = torch.tensor([[0.8, 0, 0, 3.0], [0, 0.9, 0, -2.0], [0, 0, 2.0, 1.0], [0, 0, 0, 1.0]], dtype=torch.float64)
    data = torch.rand(1, 1, 30, 26)
    net = _sr_net(2, (2, 2))
    inferer = SRSlidingWindowInferer(16, (2, 2), overlap=0.25)
    meta_in = MetaTensor(data, affine=affine, meta={"source_format": "nifti"})
    with torch.no_grad():
        meta_out = inferer(meta_in, net)
        image_out = inferer(ImageTensor(data, affine=affine, meta={"source_format": "nifti"}), net)
        plain_out = inferer(data, net)
    assert isinstance(meta_out, MetaTensor) and isinstance(image_out, ImageTensor)
    assert type(plain_out) is torch.Tensor
    assert meta_out.meta["source_format"] == image_out.meta["source_format"] == "nifti"
    assert torch.equal(meta_out.affine, sr_affine(affine, (2, 2)))
    assert torch.equal(image_out.affine, meta_out.affine)
    assert torch.equal(meta_out.as_tensor(), image_out.as_tensor()) and torch.equal(plain_out, image_out.as_tensor())


def test_sliding_window_sr_refuses_a_window_larger_than_the_image():
    with pytest.raises(ValueError, match="larger than the image"):
        sliding_window_sr(torch.rand(1, 1, 8, 8), (16, 8), 1, lambda w: w)
