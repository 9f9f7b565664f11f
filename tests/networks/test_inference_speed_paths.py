"""The fast inference paths give the same values as the plain ones: channels-last pixel shuffle, SE gates
folded into the next convolution, channels-last propagation after a 1-channel first conv, and
``optimize_for_inference`` (channels-last, compiled with frozen weights)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from medsr.networks import (
    PixelShuffle,
    SEBlock,
    channels_last_format,
    conv_nd,
    get_network,
    optimize_for_inference,
)
from medsr.networks.blocks import conv_pixel_shuffle, follow_format, scaled_conv
from medsr.networks.optimize import FAST_FORWARDS, use_fast_forwards

TINY = {
    "rrdbnet": {"num_features": 8, "num_blocks": 1, "growth_channels": 4},
    "esrgan_se": {"num_features": 8, "num_blocks": 1, "growth_channels": 4, "reduction": 4},
    "edsr_ise": {"num_features": 8, "num_blocks": 2, "reduction": 4},
    "edsr": {"num_features": 8, "num_blocks": 2},
    "slicenet": {"num_features": 8, "num_blocks": 2},
    "espcn": {"num_features": (8, 4)},
}


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=channels_last_format(t.ndim - 2)) and not t.is_contiguous()


@pytest.mark.parametrize("dims,factor", [(2, (2, 2)), (2, (3, 1)), (3, (2, 2, 1)), (3, (1, 1, 4)), (3, 2)])
def test_pixel_shuffle_channels_last_same_values_and_format(dims, factor):
    shuffle = PixelShuffle(dims, factor)
    x = torch.rand(2, 3 * math.prod(shuffle.scale_factor), *([5] * dims))
    plain = shuffle(x)
    cl = shuffle(x.contiguous(memory_format=channels_last_format(dims)))
    assert torch.equal(plain, cl)
    assert plain.is_contiguous()
    assert _is_channels_last(cl), "a channels-last input must give a channels-last output (no second copy)"


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dims", [2, 3])
def test_scaled_conv_equals_conv_of_scaled_input(dims, batch):
    torch.manual_seed(0)
    conv = conv_nd(dims, 6, 2, 3)
    x = torch.randn(batch, 6, *([7] * dims))
    gate = SEBlock(dims, 6, reduction=2)
    scale = gate.gate(gate.pool(x))
    torch.testing.assert_close(scaled_conv(conv, x, scale), conv(x * scale), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("dims,factor", [(2, 2), (2, (1, 3)), (3, (2, 2, 1)), (3, (1, 1, 4))])
def test_conv_pixel_shuffle_offset_major_matches_plain(dims, factor, batch):
    torch.manual_seed(0)
    shuffle = PixelShuffle(dims, factor)
    conv = conv_nd(dims, 4, 3 * shuffle.factor, 3)
    x = torch.randn(batch, 4, *([5] * dims))
    gate = torch.rand(batch, 4, *([1] * dims)) * 2
    ref = shuffle(conv(x * gate))
    cl = x.contiguous(memory_format=channels_last_format(dims))
    out = conv_pixel_shuffle(conv, shuffle, cl, gate)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert _is_channels_last(out)
    torch.testing.assert_close(conv_pixel_shuffle(conv, shuffle, x, gate), ref, rtol=1e-5, atol=1e-5)


def test_scaled_conv_gradients_match():
    torch.manual_seed(0)
    conv = conv_nd(2, 4, 3, 3)
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    s = torch.rand(1, 4, 1, 1, requires_grad=True)
    g1 = torch.autograd.grad(scaled_conv(conv, x, s).sum(), (x, s, conv.weight))
    g2 = torch.autograd.grad(conv(x * s).sum(), (x, s, conv.weight))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_follow_format_only_converts_for_a_channels_last_weight():
    w = conv_nd(3, 4, 4, 3).weight
    x = torch.rand(1, 4, 3, 3, 3)
    assert follow_format(x, w) is x
    w_cl = w.detach().contiguous(memory_format=torch.channels_last_3d)
    y = follow_format(x, w_cl)
    assert _is_channels_last(y) and torch.equal(x, y)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", sorted(TINY))
def test_optimize_for_inference_same_values(name, dims):
    torch.manual_seed(0)
    net = get_network(name, spatial_dims=dims, in_channels=1, out_channels=1, scale_factor=2, **TINY[name]).eval()
    x = torch.rand(2, 1, *([6] * dims))
    with torch.no_grad():
        ref, ref_feats = net(x, return_features=True)  # the reference forward (class methods)
        fast = optimize_for_inference(net)  # in place: net now has the fast forwards and is channels-last
        out = torch.cat([fast(x[:1]), fast(x[1:])])  # batch 1 takes the folded-gate path
        out_batch, feats_batch = fast(x, return_features=True)  # batch 2 multiplies by the gate
        _, feats = fast(x[:1], return_features=True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_batch, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(feats_batch, ref_feats, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not fast.training
    if name != "espcn":
        # in 3D the 1-channel first conv returns a contiguous tensor; the body must still run channels-last
        assert _is_channels_last(feats[0]), f"{name} {dims}D body features are not channels-last"


@pytest.mark.parametrize("name", ["edsr_ise", "esrgan_se", "slicenet"])
def test_fast_forwards_equal_the_reference_contiguous_and_with_gradients(name):
    """The fast forwards alone (no channels-last) give the reference values and the reference gradients."""
    torch.manual_seed(0)
    net = get_network(name, spatial_dims=2, in_channels=1, out_channels=1, scale_factor=2, **TINY[name])
    x = torch.rand(1, 1, 6, 6)
    ref = net(x)
    ref_grads = torch.autograd.grad(ref.square().sum(), list(net.parameters()))
    fast = use_fast_forwards(net)
    assert set(FAST_FORWARDS) & {type(m) for m in fast.modules()}
    out = fast(x)
    grads = torch.autograd.grad(out.square().sum(), list(fast.parameters()))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_optimize_for_inference_needs_spatial_dims():
    with pytest.raises(ValueError, match="spatial_dims"):
        optimize_for_inference(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3)))
    seq = optimize_for_inference(torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3)), spatial_dims=2)
    assert _is_channels_last(seq[0].weight)


@pytest.mark.slow
def test_optimize_for_inference_compiled_matches_eager():
    torch.manual_seed(0)
    net = get_network("edsr_ise", spatial_dims=2, in_channels=1, out_channels=1, scale_factor=2, **TINY["edsr_ise"])
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        ref = net.eval()(x)
        compiled = optimize_for_inference(net, compile=True)
        out = compiled(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


_PAGE_FAULTS = """
import resource, sys
import torch
from medsr.networks import reuse_freed_memory
assert reuse_freed_memory(sys.argv[1] == "reuse")
def step():  # like a forward pass: two 256 MiB maps, far above glibc's 32 MiB mmap threshold
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = torch.ones(64, 1024, 1024)
    b = a + 1
    del a, b
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(min([step() for _ in range(12)][-6:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_reuse_freed_memory_avoids_page_faults_on_later_passes():
    # in a child process: the setting is process-wide. The heap settles after a few passes.
    def faults(mode):
        out = subprocess.run(
            [sys.executable, "-c", _PAGE_FAULTS, mode], capture_output=True, text=True, check=True, timeout=120
        )
        return int(out.stdout.strip().splitlines()[-1])

    pages = 64 * 1024 * 1024 * 4 // 4096  # one map
    default, reused = faults("default"), faults("reuse")  # the fewest faults of one of the last 6 passes
    assert default > pages, f"glibc default should fault both maps on every pass ({default} faults)"
    assert reused < pages // 10, f"reused heap memory should not fault again once settled ({reused} faults)"
