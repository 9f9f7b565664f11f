"""One table lists every generator and discriminator; each row gets shape / backward / eval / jit tests in 2D and 3D."""

from __future__ import annotations

import math

import pytest
import torch

from medsr.networks import get_network, list_networks

# name -> (kwargs at tiny size, jit mode). jit: "trace" = torch.jit.trace (TorchScript), "export" = torch.export.
# Scripting (torch.jit.script) is not supported by the generators: forward(x, return_features) returns a
# tensor or a tuple; trace and export both work.
GEN = {
    "srcnn": ({"num_features": (8, 4), "kernel_sizes": (5, 1, 3)}, "trace"),
    "vdsr": ({"num_features": 8, "num_layers": 3}, "trace"),
    "espcn": ({"num_features": (8, 4)}, "export"),
    "srresnet": ({"num_features": 8, "num_blocks": 1}, "trace"),
    "edsr": ({"num_features": 8, "num_blocks": 1}, "trace"),
    "edsr_ise": ({"num_features": 8, "num_blocks": 1, "reduction": 4}, "trace"),
    "slicenet": ({"num_features": 8, "num_blocks": 1}, "trace"),
    "rdn": ({"num_features": 8, "num_blocks": 2, "num_layers": 2, "growth_channels": 4}, "trace"),
    "srdensenet": (
        {"num_features": 8, "num_blocks": 2, "num_layers": 2, "growth_channels": 4, "bottleneck_channels": 8},
        "trace",
    ),
    "rrdbnet": ({"num_features": 8, "num_blocks": 1, "growth_channels": 4}, "trace"),
    "esrgan_se": ({"num_features": 8, "num_blocks": 1, "growth_channels": 4, "reduction": 4}, "trace"),
}
DISC = {
    "vgg_discriminator": ({"num_features": 8, "num_stages": 3, "pool_size": 2}, "trace", (1,)),
    "vgg_discriminator_nobn": ({"num_features": 8, "num_stages": 3, "norm": None}, "trace", (1,)),
    "patch_discriminator": ({"num_features": 8, "num_layers": 2}, "trace", None),
    "fusion_discriminator": ({"num_features": 4, "reduction": 2}, "trace", (1,)),
}
# per spatial_dims: LR input size and scale factors (anisotropic, power-of-two multi-stage and non-power-of-two)
SCALES = {2: [(4, 2), 3], 3: [(1, 1, 3), (2, 2, 1)]}
LR = {2: (6, 5), 3: (4, 4, 3)}
HR = {2: (16, 16), 3: (16, 16, 16)}
C_IN, C_OUT = 1, 1


def test_table_lists_every_registered_network():
    names = set(GEN) | {n.replace("_nobn", "") for n in DISC}
    assert names == set(list_networks("generator")) | set(list_networks("discriminator"))


def _gen(name, dims, scale):
    kwargs, _ = GEN[name]
    return get_network(name, spatial_dims=dims, in_channels=C_IN, out_channels=C_OUT, scale_factor=scale, **kwargs)


def _disc(name, dims):
    kwargs, _, _ = DISC[name]
    return get_network(name.replace("_nobn", ""), spatial_dims=dims, in_channels=C_IN, **kwargs)


def _check_backward(net, out):
    (out.float() ** 2).mean().backward()
    # every parameter is used (a grad exists; tiny SE bottlenecks may have dead ReLUs, so zeros are allowed)
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    assert sum(float(p.grad.abs().sum()) for p in net.parameters() if p.grad is not None) > 0


def _check_eval_and_jit(net, x, mode):
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
        assert torch.equal(a, b)  # deterministic
        # batch independence in eval mode (BN uses running stats)
        torch.testing.assert_close(net(x[:1]), a[:1], rtol=1e-4, atol=1e-5)
        x2 = torch.rand_like(x)
        if mode == "trace":
            jitted = torch.jit.trace(net, (x,), check_trace=False)
        else:
            jitted = torch.export.export(net, (x,)).module()
        with torch.jit.optimized_execution(False):  # skip the profiling executor's warm-up passes (test time)
            torch.testing.assert_close(jitted(x), a, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(jitted(x2), net(x2), rtol=1e-4, atol=1e-5)  # not constant-folded


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", sorted(GEN))
def test_generator(name, dims):
    for i, scale in enumerate(SCALES[dims]):
        net = _gen(name, dims, scale)
        factors = (scale,) * dims if isinstance(scale, int) else scale
        x = torch.rand(2, C_IN, *LR[dims])
        out, feats = net(x, return_features=True)
        assert out.shape == (2, C_OUT, *(s * f for s, f in zip(LR[dims], factors)))
        assert feats and all(f.shape[0] == 2 and f.ndim == dims + 2 for f in feats)
        if i == 0:
            _check_backward(net, out)
            _check_eval_and_jit(net, x, GEN[name][1])


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", sorted(DISC))
def test_discriminator(name, dims):
    net = _disc(name, dims)
    x = torch.rand(2, C_IN, *HR[dims])
    out = net(x)
    expected = DISC[name][2]
    if expected is None:  # patch map: (B, 1, *S') with S' = S / 2**num_layers (+1 from the 4x4 kernels)
        assert out.shape[:2] == (2, 1) and out.ndim == dims + 2 and 1 < math.prod(out.shape[2:]) < math.prod(HR[dims])
    else:
        assert out.shape == (2, *expected)
    # raw logits, not probabilities: an untrained net on a scaled input leaves [0, 1]
    _check_backward(net, out)
    _check_eval_and_jit(net, x, DISC[name][1])


@pytest.mark.parametrize("name", ["vgg_discriminator", "fusion_discriminator", "patch_discriminator"])
def test_discriminator_too_small_input_names_the_sizes(name):
    net = _disc(name, 2)
    with pytest.raises(ValueError, match="spatial size must be >="):
        net(torch.rand(1, 1, 2, 2))


def test_discriminator_accepts_other_patch_sizes():
    net = get_network("vgg_discriminator", spatial_dims=2, in_channels=1, num_features=8, input_size=64)
    net.eval()
    for size in (32, 48, 64):
        assert net(torch.rand(1, 1, size, size)).shape == (1, 1)
    with pytest.raises(ValueError, match="input_size"):
        get_network("vgg_discriminator", spatial_dims=3, input_size=16)  # 5 stride-2 stages need >= 32


def test_wrong_input_channels_names_the_network():
    net = _gen("rrdbnet", 2, 2)
    with pytest.raises(ValueError, match=r"RRDBNet: expected input \(B, 1"):
        net(torch.rand(1, 3, 8, 8))
