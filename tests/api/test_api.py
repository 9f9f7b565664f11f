"""``medsr.upscale``: the Python API on numpy arrays and MetaTensors, with shipped models and your own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

import medsr
from medsr.networks import RDN
from medsr.pipeline.models import shipped_models

SHIPPED = shipped_models()
needs_x2 = pytest.mark.skipif(
    not any(m["spatial_dims"] == 2 and m["scale"] == [2, 2] and not m.get("gan") for m in SHIPPED),
    reason="no shipped 2D x2 model",
)


def _tiny(scale=2, dims=2):
    torch.manual_seed(0)
    return RDN(dims, 1, 1, scale, num_features=4, num_blocks=1, num_layers=1, growth_channels=2, residual_interp=True)


@needs_x2
def test_numpy_2d_with_the_shipped_model_keeps_units_and_halves_spacing():
    lr = (np.random.default_rng(0).random((40, 30)) * 300).astype("float32")
    hr, spacing = medsr.upscale(lr, scale=2, spacing=(0.8, 0.7))
    assert isinstance(hr, np.ndarray) and hr.shape == (80, 60)
    assert spacing == pytest.approx((0.4, 0.35))
    assert abs(float(hr.mean()) - float(lr.mean())) < 0.1 * float(lr.mean())  # input units, not 0..1


def test_own_network_on_a_metatensor_returns_the_hr_affine():
    affine = torch.tensor([[0.0, 0.9, 0, 10], [0.9, 0, 0, -5], [0, 0, 3.0, 2], [0, 0, 0, 1]], dtype=torch.float64)
    img = MetaTensor(torch.rand(1, 12, 10, 6) * 50, affine=affine)
    net = _tiny(scale=(1, 1, 3), dims=3)
    hr, spacing = medsr.upscale(img, model=net, roi_size=8, device="cpu")
    assert isinstance(hr, MetaTensor) and tuple(hr.shape) == (1, 12, 10, 18)
    assert spacing == pytest.approx((0.9, 0.9, 1.0))
    from medsr.transforms.geometry import sr_affine

    torch.testing.assert_close(torch.as_tensor(hr.affine, dtype=torch.float64), sr_affine(affine, (1, 1, 3)))


def test_a_2d_network_on_a_3d_array_runs_slice_by_slice_across_the_thickest_axis():
    vol = np.random.default_rng(1).random((10, 4, 12)).astype("float32")
    hr, spacing = medsr.upscale(vol, spacing=(1.0, 5.0, 1.0), model=_tiny(), device="cpu")
    assert hr.shape == (20, 4, 24) and spacing == pytest.approx((0.5, 5.0, 0.5))


@pytest.mark.parametrize(
    ("image", "kwargs", "match"),
    [
        (np.zeros((2, 3, 4, 5), "float32"), {}, "2D .* or 3D"),
        (np.zeros((8, 8), "float32"), {"spacing": (1.0, 1.0, 1.0)}, "spacing: expected 2 values"),
        (np.zeros((8, 8), "float32"), {"model": "no_such_model"}, "no such file or shipped model"),
    ],
)
def test_bad_arguments_are_one_line_errors(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        medsr.upscale(image, device="cpu", **kwargs)
