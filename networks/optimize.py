"""Prepare a trained network for fast inference: eval mode, channels-last memory format, optional compile.

On CPU (oneDNN) and on GPU (cuDNN) a 3x3 convolution runs fastest on channels-last tensors; contiguous
(NCHW/NCDHW) tensors are reordered inside every convolution call. ``torch.compile`` with inductor weight
freezing additionally pre-packs the convolution weights once and fuses element-wise ops (activations,
residual additions, concatenations) into the convolutions. ``benchmarks/bench_networks.py`` measures both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import torch
from torch import nn

from medsr.networks.blocks import channels_last_format

__all__ = ["optimize_for_inference", "reuse_freed_memory"]

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


def optimize_for_inference(
    model: nn.Module,
    spatial_dims: int | None = None,
    compile: bool = False,
    channels_last: bool = True,
) -> nn.Module:
    """Return ``model`` ready for inference: eval mode, channels-last weights and, with ``compile``, compiled.

    The returned module accepts contiguous or channels-last inputs of shape ``(B, C, *S)`` and gives the same
    values as the original model (to float rounding). A channels-last model makes every convolution run in
    channels-last order even on a contiguous input (PyTorch follows the weight's format), and its outputs
    are channels-last tensors.

    With ``compile=True`` the model is wrapped in ``torch.compile`` with inductor ``freezing``: weights are
    treated as constants, so call the result under ``torch.no_grad()`` or ``torch.inference_mode()`` and do
    not change the weights afterwards (compile again instead). Each new input shape compiles once (tens of
    seconds on a CPU), so use it for many inputs of one shape, such as sliding windows.

    Args:
        model: the network; moved to channels-last in place (``nn.Module.to`` works in place).
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
    model = model.eval()
    fmt = channels_last_format(spatial_dims) if channels_last else None
    if fmt is not None:
        model = model.to(memory_format=fmt)
    if compile:
        return torch.compile(model, options={"freezing": True})
    return model
