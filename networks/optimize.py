"""Prepare a trained network for fast inference: eval mode, fast forwards, channels-last memory format, optional
compile.

The generators' own forwards are the published computations. The fast forwards here give the same values (to
float rounding) with fewer passes over memory; :func:`optimize_for_inference` swaps them in:

* EDSR's residual block runs scale, attention and residual as one fused pass (``addcmul``/``add(alpha=)``);
* an attention gate before a convolution is folded into that convolution's weights for one image
  (:func:`~medsr.networks.blocks.scaled_conv`) instead of multiplying the HR feature map, and a conv + pixel
  shuffle pair runs as one :func:`~medsr.networks.blocks.conv_pixel_shuffle` (a cheaper channels-last shuffle);
* after a first convolution with one input channel the features are put back in channels-last order
  (:func:`~medsr.networks.blocks.follow_format`), so the body does not convert again in every layer.

On CPU (oneDNN) and on GPU (cuDNN) a 3x3 convolution runs fastest on channels-last tensors; contiguous
(NCHW/NCDHW) tensors are reordered inside every convolution call. ``torch.compile`` with inductor weight
freezing additionally pre-packs the convolution weights once and fuses element-wise ops (activations,
residual additions, concatenations) into the convolutions. ``benchmarks/bench_networks.py`` measures both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import types

import torch
import torch.nn.functional as F
from torch import nn

from medsr.networks.blocks import (
    PixelShuffle,
    SEBlock,
    channels_last_format,
    conv_pixel_shuffle,
    follow_format,
    scaled_conv,
)
from medsr.networks.generators import EDSR, RRDBNet, _EDSRResBlock

__all__ = ["optimize_for_inference", "reuse_freed_memory", "use_fast_forwards", "FAST_FORWARDS"]

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_GLIBC_MMAP_MAX_DEFAULT = 65536
_GLIBC_TRIM_THRESHOLD_DEFAULT = 128 * 1024


def reuse_freed_memory(enable: bool = True) -> bool:
    """Let freed large CPU tensors be reused by the next forward pass instead of going back to the OS.

    glibc serves every allocation above 32 MiB with fresh ``mmap`` pages and unmaps them on free, so each
    HR-grid feature map (a 512x512x64 float map is 64 MiB, a 128^3x64 one 512 MiB) is page-faulted and zeroed
    by the kernel again on every forward pass. This sets ``M_MMAP_MAX=0`` and ``M_TRIM_THRESHOLD=-1`` (no
    trimming; see ``man mallopt``), so large blocks come from the heap and stay there. The effect is measured
    by ``benchmarks/bench_networks.py --allocator default``.

    It is process-wide and keeps the resident memory at its peak until the process ends: use it in an
    inference or benchmark process, not in a long-lived process that must give memory back.
    ``enable=False`` restores glibc's default values for later allocations.

    Returns:
        True when the setting was applied, False when the C library is not glibc (nothing changes).
    """
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if enable:
        ok = mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, -1)
    else:
        ok = mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX_DEFAULT) and mallopt(_M_TRIM_THRESHOLD, _GLIBC_TRIM_THRESHOLD_DEFAULT)
    return bool(ok)


def _edsr_block_forward(block: _EDSRResBlock, x: torch.Tensor) -> torch.Tensor:
    """``x + res_scale * body(x)`` in one fused pass for scale, attention and residual: ``x + res_scale * h * gate``
    (addcmul) or ``x + res_scale * h`` (add with alpha); three separate element-wise passes cost a tenth of the
    block."""
    if not block.has_attention:
        return torch.add(x, block.body(x), alpha=block.res_scale)
    h = block.body[2](block.body[1](block.body[0](x)))
    att = block.body[3]
    return torch.addcmul(x, h, att.gate(att.pool(h)), value=block.res_scale)


def _edsr_forward_features(net: EDSR, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """:meth:`EDSR.forward_features` with channels-last features after the head, the tail's attention gates
    folded into the convolution after them and every conv + pixel shuffle pair as one ``conv_pixel_shuffle``."""
    head = follow_format(net.head[0](x), net.body[-1].weight)
    if len(net.head) > 1:
        head = net.head[1](head)
    h, feats = net.forward_body(head)
    gate: torch.Tensor | None = None
    layers = list(net.tail) if net.upsampler == "subpixel" else list(net.tail[0]) + [net.tail[1]]
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, SEBlock):
            gate = layer.gate(layer.pool(h))
        elif isinstance(layer, nn.modules.conv._ConvNd) and isinstance(nxt, PixelShuffle):
            h, gate = conv_pixel_shuffle(layer, nxt, h, gate), None
            i += 1
        elif gate is not None and isinstance(layer, nn.modules.conv._ConvNd):
            h, gate = scaled_conv(layer, h, gate), None
        else:
            h = layer(h)
        i += 1
    return h, feats


def _rrdbnet_forward_features(net: RRDBNet, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """:meth:`RRDBNet.forward_features` with channels-last features after ``conv_first`` and the ``se_hr`` gate
    folded into ``conv_last``."""
    feat, feats = net.forward_trunk(follow_format(net.conv_first(x), net.conv_body.weight))
    if net.attention is None:
        return net.conv_last(net.lrelu(net.conv_hr(feat))), feats
    # lrelu(feat * gate) == lrelu(feat) * gate for a positive gate (SE: (0, 1), improved SE: (0, 2)), and the gate
    # is folded into conv_last: no multiplication pass over the HR feature map
    gate = net.se_hr.gate(net.se_hr.pool(feat))
    feat = F.leaky_relu(feat, 0.2, inplace=not torch.is_grad_enabled())  # autograd needs feat kept
    return scaled_conv(net.conv_last, feat, gate), feats


#: module type -> (method it replaces, fast version); the reference method stays on the class
FAST_FORWARDS = {
    _EDSRResBlock: ("forward", _edsr_block_forward),
    EDSR: ("forward_features", _edsr_forward_features),
    RRDBNet: ("forward_features", _rrdbnet_forward_features),
}


def use_fast_forwards(model: nn.Module) -> nn.Module:
    """Swap the fast forwards of :data:`FAST_FORWARDS` into ``model`` and its submodules, in place (an instance
    attribute over the class's method; ``del module.forward_features`` restores the reference). Same values to
    float rounding, with or without gradients."""
    for module in model.modules():
        entry = FAST_FORWARDS.get(type(module))
        if entry is not None:
            name, fast = entry
            setattr(module, name, types.MethodType(fast, module))
    return model


def optimize_for_inference(
    model: nn.Module,
    spatial_dims: int | None = None,
    compile: bool = False,
    channels_last: bool = True,
) -> nn.Module:
    """Return ``model`` ready for inference: eval mode, the fast forwards (:func:`use_fast_forwards`),
    channels-last weights and, with ``compile``, compiled.

    The returned module accepts contiguous or channels-last inputs of shape ``(B, C, *S)`` and gives the same
    values as the original model (to float rounding). A channels-last model makes every convolution run in
    channels-last order even on a contiguous input (PyTorch follows the weight's format), and its outputs
    are channels-last tensors.

    With ``compile=True`` the model is wrapped in ``torch.compile`` with inductor ``freezing``: weights are
    treated as constants, so call the result under ``torch.no_grad()`` or ``torch.inference_mode()`` and do
    not change the weights afterwards (compile again instead). Each new input shape compiles once (tens of
    seconds on a CPU), so use it for many inputs of one shape, such as sliding windows.

    Args:
        model: the network; given the fast forwards and moved to channels-last in place (``nn.Module.to`` works in place).
        spatial_dims: 2 or 3; read from ``model.spatial_dims`` when not given. Other values keep the format.
        compile: wrap in ``torch.compile(options={"freezing": True})``.
        channels_last: convert the weights to channels-last.

    Raises:
        ValueError: when ``spatial_dims`` is neither given nor an attribute of ``model``.
    """
    if spatial_dims is None:
        spatial_dims = getattr(model, "spatial_dims", None)
        if spatial_dims is None:
            raise ValueError(
                f"spatial_dims: {type(model).__name__} has no 'spatial_dims' attribute; pass spatial_dims=2 or 3"
            )
    model = use_fast_forwards(model.eval())
    fmt = channels_last_format(spatial_dims) if channels_last else None
    if fmt is not None:
        model = model.to(memory_format=fmt)
    if compile:
        return torch.compile(model, options={"freezing": True})
    return model
