"""The self-supervised SR model: any registered 2D generator with scale ``(1, s)``, learning a residual over
cubic B-spline interpolation along the degraded (last) axis."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from medsr.networks import get_network
from medsr.pipeline.selfsr.grid import bspline_matrix

__all__ = ["ResidualOverCubic", "build_model", "resolve_precision", "DEFAULT_NETWORK"]

#: the default generator: ``slicenet`` in the :mod:`medsr.networks` registry, EDSR with a one-conv sub-pixel tail
#: (``EDSR(upsampler="subpixel")``; trains in minutes on a CPU)
DEFAULT_NETWORK: dict[str, Any] = {"name": "slicenet", "num_features": 32, "num_blocks": 4}


class ResidualOverCubic(nn.Module):
    """``net(x) + cubic(x)``, where ``cubic`` is B-spline interpolation by ``scale`` along the last axis.

    Input ``(B, C, H, L)``, output ``(B, C, H, L·scale)``; LR sample ``m`` sits at output index
    ``(m + 1/2)·scale - 1/2`` (as a pixel shuffle places it). The cubic part is always float32; with
    ``precision="bf16"`` the network runs under bfloat16 autocast (on CPUs with AVX-512 BF16 or AMX this
    about halves a training step; the residual it adds is small, so its rounding costs nothing measurable).
    The input is given channels-last, the faster layout for these convolutions on CPU and GPU.

    Args:
        net: a 2D generator with ``scale_factor=(1, scale)``.
        scale: integer factor along the last axis.
        precision: ``"fp32"`` or ``"bf16"``.
    """

    def __init__(self, net: nn.Module, scale: int, precision: str = "fp32") -> None:
        super().__init__()
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision: expected 'fp32' or 'bf16', got {precision!r}")
        self.net = net
        self.scale = int(scale)
        self.precision = precision
        self._mats: dict[int, torch.Tensor] = {}

    def cubic(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        w = self._mats.get(n)
        if w is None:
            pos = (np.arange(n * self.scale) + 0.5) / self.scale - 0.5
            w = self._mats[n] = bspline_matrix(n, pos).float()
        return x.float() @ w.to(device=x.device).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.cubic(x)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            res = self.net(x)
        return res.float() + base


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``"auto"``: ``"bf16"`` where it is native (a CPU with AVX-512 BF16 or AMX, a CUDA device with bf16),
    else ``"fp32"`` (emulated bf16 convolutions are ten times slower); other values are returned as given."""
    if precision != "auto":
        return precision
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if dev.type == "cpu" and _cpu_has_bf16() else "fp32"


def build_model(scale: int, network: dict[str, Any] | str | None = None, precision: str = "fp32") -> ResidualOverCubic:
    """A :class:`ResidualOverCubic` around ``medsr.networks.get_network(name, spatial_dims=2, scale_factor=(1, s))``.

    Args:
        scale: the integer scale ``s`` along the slice axis.
        network: a registered generator name, or ``{"name": ..., **kwargs}`` (default :data:`DEFAULT_NETWORK`).
        precision: ``"fp32"``, ``"bf16"`` (autocast for the network, see :class:`ResidualOverCubic`) or
            ``"auto"`` (:func:`resolve_precision` on the CPU).
    """
    spec = (
        dict(DEFAULT_NETWORK) if network is None else ({"name": network} if isinstance(network, str) else dict(network))
    )
    name = str(spec.pop("name"))
    kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "scale_factor": (1, int(scale)), **spec}
    net = get_network(name, **kwargs)
    net = net.to(memory_format=torch.channels_last)
    return ResidualOverCubic(net, scale, resolve_precision(precision))
