"""The self-supervised SR network: any registered 2D generator with scale ``(1, s)`` and ``residual_interp=True``
(it learns a residual over cubic interpolation along the degraded, last, axis), channels-last, and optionally
run under bfloat16 autocast."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medsr.networks import get_network

__all__ = ["Autocast", "build_model", "with_precision", "resolve_precision", "generator_of", "DEFAULT_NETWORK"]

#: the default generator: ``slicenet`` in the :mod:`medsr.networks` registry, EDSR with a one-conv sub-pixel tail
#: (``EDSR(upsampler="subpixel")``; trains in minutes on a CPU)
DEFAULT_NETWORK: dict[str, Any] = {"name": "slicenet", "num_features": 32, "num_blocks": 4}


class Autocast(nn.Module):
    """Runs ``net`` under bfloat16 autocast and returns float32 (the interpolation it adds stays float32).

    On CPUs with AVX-512 BF16 or AMX this about halves a training step; the residual the network adds is
    small, so its rounding costs nothing measurable. Only a precision switch: the weights are ``net``'s.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.net(x).float()


def generator_of(model: nn.Module) -> nn.Module:
    """The generator inside ``model`` (without :class:`Autocast`)."""
    return model.net if isinstance(model, Autocast) else model


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
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision: expected 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision != "auto":
        return precision
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if dev.type == "cpu" and _cpu_has_bf16() else "fp32"


def with_precision(net: nn.Module, precision: str = "fp32", device: str | torch.device = "cpu") -> nn.Module:
    """``net`` channels-last, wrapped in :class:`Autocast` for ``"bf16"`` (``"auto"``: :func:`resolve_precision`)."""
    net = net.to(memory_format=torch.channels_last)
    return Autocast(net) if resolve_precision(precision, device) == "bf16" else net


def build_model(
    scale: int,
    network: dict[str, Any] | str | None = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
) -> nn.Module:
    """``medsr.networks.get_network(name, spatial_dims=2, scale_factor=(1, s), residual_interp=True)``.

    Args:
        scale: the integer scale ``s`` along the slice axis.
        network: a registered generator name, or ``{"name": ..., **kwargs}`` (default :data:`DEFAULT_NETWORK`).
        precision: ``"fp32"``, ``"bf16"`` (autocast, :class:`Autocast`) or ``"auto"`` (:func:`resolve_precision`).
        device: where it will run (for ``"auto"``).
    """
    spec = (
        dict(DEFAULT_NETWORK) if network is None else ({"name": network} if isinstance(network, str) else dict(network))
    )
    name = str(spec.pop("name"))
    kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "scale_factor": (1, int(scale)), **spec}
    net = get_network(name, **kwargs, residual_interp=True)
    return with_precision(net, precision, device)
