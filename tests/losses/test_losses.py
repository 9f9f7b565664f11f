"""Losses: values against direct computations, 2D and 3D, gradients, and error messages."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.layers import Conv
from torch import nn

from medsr.pipeline.losses import (
    CharbonnierLoss,
    DistillationLoss,
    FusionLoss,
    GANLoss,
    PerceptualLoss,
    SRGANLoss,
    SSIMLoss,
    TVLoss,
    get_pixel_loss,
)

DIMS = [2, 3]


def _pair(dims, c=1, s=8):
    x = torch.rand(2, c, *([s] * dims))
    return x, (x + 0.1 * torch.randn_like(x))


@pytest.mark.parametrize("dims", DIMS)
def test_charbonnier_tv_ssim_values(dims):
    x, y = _pair(dims)
    eps = 1e-3
    assert torch.allclose(CharbonnierLoss(eps)(x, y), torch.sqrt((x - y) ** 2 + eps**2).mean())
    expected_tv = sum(torch.diff(x, dim=a).abs().mean() for a in range(2, x.ndim))
    assert torch.allclose(TVLoss()(x), expected_tv)
    assert torch.allclose(TVLoss(p=2)(x), sum((torch.diff(x, dim=a) ** 2).mean() for a in range(2, x.ndim)))
    ssim = SSIMLoss(data_range=1.0)
    assert ssim(x, x).abs() < 1e-5
    assert 0.0 < ssim(x, y) < 1.0
    with pytest.raises(ValueError, match="does not match"):
        CharbonnierLoss()(x, y[..., :-1])
    with pytest.raises(ValueError, match="unknown pixel loss"):
        get_pixel_loss("l3")


def test_ragan_generator_equals_direct_computation_from_both_logits():
    real, fake = torch.randn(6, 1), torch.randn(6, 1)
    loss = GANLoss("ragan")
    # L_G = -E[log(1 - sigmoid(C(r) - E C(f)))] - E[log sigmoid(C(f) - E C(r))], averaged
    expected = 0.5 * (
        -torch.log(1 - torch.sigmoid(real - fake.mean())).mean() - torch.log(torch.sigmoid(fake - real.mean())).mean()
    )
    assert torch.allclose(loss.generator(fake, real), expected, atol=1e-6)
    expected_d = 0.5 * (
        -torch.log(torch.sigmoid(real - fake.mean())).mean() - torch.log(1 - torch.sigmoid(fake - real.mean())).mean()
    )
    assert torch.allclose(loss.discriminator(real, fake), expected_d, atol=1e-6)
    # the generator loss depends on the real logits (it is relativistic)
    assert not torch.allclose(loss.generator(fake, real + 1.0), loss.generator(fake, real))
    with pytest.raises(ValueError, match="needs real_logits"):
        loss.generator(fake)
    # MONAI PatchDiscriminator-style list outputs: the last item is the logits
    assert torch.allclose(loss.generator([torch.zeros(1), fake], [real]), expected, atol=1e-6)


def test_vanilla_and_lsgan_values():
    real, fake = torch.randn(4, 1), torch.randn(4, 1)
    v = GANLoss("vanilla")
    assert torch.allclose(v.generator(fake), -torch.log(torch.sigmoid(fake)).mean(), atol=1e-6)
    assert torch.allclose(
        v.discriminator(real, fake),
        0.5 * (-torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean()),
        atol=1e-6,
    )
    ls = GANLoss("lsgan")
    assert torch.allclose(ls.generator(fake), ((fake - 1) ** 2).mean())
    assert torch.allclose(ls.discriminator(real, fake), 0.5 * (((real - 1) ** 2).mean() + (fake**2).mean()))
    with pytest.raises(ValueError, match="kind must be one of"):
        GANLoss("wgan")


class _TinyExtractor(nn.Module):
    """A 2D 1-channel extractor returning two feature maps (what VGG19Features returns, smaller)."""

    in_channels = 1

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        fa = torch.relu(self.a(x))
        return {"a": fa, "b": self.b(fa)}


@pytest.mark.parametrize("dims", DIMS)
def test_perceptual_loss_2d_and_3d_slices(dims):
    ext = _TinyExtractor()
    loss = PerceptualLoss(ext, layer_weights=[1.0, 0.5], slices_3d=3, slice_axes=(0, 2))
    x, y = _pair(dims, c=2)
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-7)
    x.requires_grad_(True)
    value = loss(x, y)
    value.backward()
    assert value > 0 and x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in ext.parameters())  # frozen extractor
    if dims == 2:
        fx, fy = ext(x.detach().reshape(-1, 1, 8, 8)), ext(y.reshape(-1, 1, 8, 8))
        expected = F.l1_loss(fx["a"], fy["a"]) + 0.5 * F.l1_loss(fx["b"], fy["b"])
        assert torch.allclose(value, expected, atol=1e-6)
    else:
        # 3 slices per axis, 2 axes, every channel separately: (B * 3 * C, 1, 8, 8)
        assert (2 * 3 * 2, 1, 8, 8) in ext.calls


def test_missing_weights_errors_name_path_and_switch():
    with pytest.raises(FileNotFoundError, match=r"nope/vgg\.pt.*w_vgg=0"):
        FusionLoss(vgg_weights_path="nope/vgg.pt")
    with pytest.raises(FileNotFoundError, match=r"no weights_path.*w_vgg=0"):
        FusionLoss()
    with pytest.raises(FileNotFoundError, match=r"mnet\.pth.*content_weight=0"):
        SRGANLoss(content_extractor="mobilenetv2", content_weights_path="/tmp/none/mnet.pth")
    # switched off: no weights needed
    assert FusionLoss(w_vgg=0).perceptual is None
    assert SRGANLoss(content_weight=0).content is None


@pytest.mark.parametrize("dims", DIMS)
def test_fusion_loss_equals_weighted_sum(dims):
    x, y = _pair(dims)
    real, fake = torch.randn(2, 1), torch.randn(2, 1)
    ext = _TinyExtractor()
    loss = FusionLoss(perceptual=PerceptualLoss(ext), slices_3d=2)
    out = loss(x, y, fake, real)
    assert set(out) == {"loss", "vgg", "l1", "rg", "mse"}
    expected = (
        PerceptualLoss(ext)(x, y)
        + F.l1_loss(x, y)
        + 0.005 * GANLoss("ragan").generator(fake, real)
        + 0.5 * F.mse_loss(x, y)
    )
    assert torch.allclose(out["loss"], expected, atol=1e-6)
    assert loss.uses_adversarial and loss.needs_real_logits
    with pytest.raises(ValueError, match="needs fake_logits"):
        loss(x, y)
    assert not FusionLoss(w_vgg=0, w_rg=0).uses_adversarial


def test_srgan_loss_terms():
    x, y = _pair(2)
    fake = torch.randn(2, 1)
    loss = SRGANLoss(content=PerceptualLoss(_TinyExtractor(), criterion="mse"), tv_weight=1e-2)
    out = loss(x, y, fake)
    assert set(out) == {"loss", "mse", "content", "adv", "tv"}
    assert torch.allclose(out["mse"], F.mse_loss(x, y))
    assert torch.allclose(out["adv"], 1e-3 * GANLoss("vanilla").generator(fake))
    assert torch.allclose(out["tv"], 1e-2 * TVLoss()(x))
    assert torch.allclose(out["loss"], out["mse"] + out["content"] + out["adv"] + out["tv"])


@pytest.mark.parametrize("dims", DIMS)
def test_distillation_loss_adapters_and_value(dims):
    loss = DistillationLoss(dims, student_channels=(4, 4), teacher_channels=(8, 8, 4), w_gt=1.0, w_output=0.5)
    assert loss.feature_pairs == [(0, 1), (1, 2)]
    assert isinstance(loss.adapters[0], Conv[Conv.CONV, dims]) and isinstance(loss.adapters[1], nn.Identity)
    s_out, t_out, hr = (torch.rand(2, 1, *([8] * dims)) for _ in range(3))
    s_f = [torch.rand(2, 4, *([4] * dims)) for _ in range(2)]
    t_f = [torch.rand(2, 8, *([4] * dims)), torch.rand(2, 8, *([4] * dims)), torch.rand(2, 4, *([4] * dims))]
    out = loss(s_out, t_out, hr, s_f, t_f)
    feat = (F.l1_loss(loss.adapters[0](s_f[0]), t_f[1]) + F.l1_loss(s_f[1], t_f[2])) / 2
    assert torch.allclose(out["feature"], feat)
    assert torch.allclose(out["loss"], F.l1_loss(s_out, hr) + 0.5 * F.l1_loss(s_out, t_out) + feat)
    with pytest.raises(ValueError, match="w_feature=0"):
        DistillationLoss(dims)


@pytest.mark.parametrize("dims", DIMS)
def test_perceptual_loss_on_medsr_vgg19_features(dims):
    with pytest.warns(UserWarning, match="random weights"):
        loss = PerceptualLoss("vgg19", pretrained=False, layers=["relu2_2"], slices_3d=2)
    x = torch.rand(1, 1, *([16] * dims))
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-7)
    assert loss(x, torch.rand_like(x)).item() > 0
