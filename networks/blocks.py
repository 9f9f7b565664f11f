"""Dimension-agnostic building blocks: N-D pixel shuffle with per-axis factors, SE and improved SE.

Every block takes ``spatial_dims`` first and works for 1D, 2D and 3D inputs ``(B, C, *S)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "layer_type",
    "PixelShuffle",
    "SEBlock",
    "ImprovedSEBlock",
    "ensure_scale",
    "upsample_stages",
    "make_attention",
    "channels_last_format",
    "conv_nd",
    "ZeroMeanConv",
    "remove_biases",
    "conv_pixel_shuffle",
    "follow_format",
    "scaled_conv",
]


#: torch.nn layer classes by kind, one per spatial dimension (1, 2, 3): what ``monai.networks.layers.Conv``,
#: ``Norm`` and ``Pool`` return for those kinds, without importing MONAI (see :func:`layer_type`)
_LAYERS = {
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
    "convtrans": (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
    "batch": (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d),
    "instance": (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d),
    "max": (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d),
    "avg": (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d),
    "adaptivemax": (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d),
    "adaptiveavg": (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d),
}


def layer_type(kind: str, spatial_dims: int) -> type[nn.Module]:
    """The ``torch.nn`` layer class of ``kind`` for ``spatial_dims`` (1, 2 or 3).

    The same classes as MONAI's factories (``layer_type("conv", 3)`` is ``Conv[Conv.CONV, 3]``, i.e.
    ``nn.Conv3d``; ``"batch"``/``"instance"`` as ``Norm[Norm.BATCH/INSTANCE, d]``; ``"adaptiveavg"`` as
    ``Pool[Pool.ADAPTIVEAVG, d]``), so layer names and state-dict keys are unchanged. The networks use this
    instead of ``monai.networks.layers`` so that building a shipped model does not import MONAI (~430 modules,
    several seconds of ``medsr upscale`` start-up).

    Args:
        kind: ``"conv"``, ``"convtrans"``, ``"batch"``, ``"instance"``, ``"max"``, ``"avg"``, ``"adaptivemax"``
            or ``"adaptiveavg"``.
        spatial_dims: 1, 2 or 3.
    """
    if kind not in _LAYERS:
        raise ValueError(f"layer kind: expected one of {sorted(_LAYERS)}, got {kind!r}")
    if int(spatial_dims) not in (1, 2, 3):
        raise ValueError(f"spatial_dims: expected 1, 2 or 3, got {spatial_dims!r}")
    return _LAYERS[kind][int(spatial_dims) - 1]


def ensure_scale(scale_factor: int | Sequence[int], spatial_dims: int, name: str = "scale_factor") -> tuple[int, ...]:
    """Return ``scale_factor`` as a tuple of positive ints, one per spatial axis.

    The one scale parser is :func:`medsr.transforms.geometry.parse_scale`; this is its network-side name.

    Args:
        scale_factor: one int for every axis, or one int per axis (e.g. ``(2, 2, 1)`` or ``(1, 1, 4)``).
        spatial_dims: number of spatial dimensions.
        name: argument name used in error messages.

    Raises:
        ValueError: when the length does not match ``spatial_dims`` or a factor is not a positive integer.
    """
    from medsr.transforms.geometry import parse_scale

    return parse_scale(scale_factor, spatial_dims, name, allowed_dims=None)


def _is_pow2(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def upsample_stages(scale: Sequence[int]) -> list[tuple[int, ...]]:
    """Split a per-axis scale into upsampling stages.

    When every factor is a power of two, the scale is reached in ``log2(max(scale))`` stages of factor 2 on
    the axes that still need it (``(4, 4, 1)`` -> ``[(2, 2, 1), (2, 2, 1)]``, ``(1, 1, 4)`` ->
    ``[(1, 1, 2), (1, 1, 2)]``, ``(4, 2)`` -> ``[(2, 2), (2, 1)]``), as EDSR/ESRGAN do for x4. Otherwise
    (a factor of 3, 6, ...) a single stage with the full per-axis factor is used (``(3, 3)`` -> ``[(3, 3)]``).
    A scale of all ones gives no stage.
    """
    scale = tuple(int(s) for s in scale)
    if all(_is_pow2(s) for s in scale):
        n = max(int(math.log2(s)) for s in scale)
        return [tuple(2 if int(math.log2(s)) > i else 1 for s in scale) for i in range(n)]
    return [scale]


def conv_nd(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    bias: bool = True,
    padding: int | None = None,
    groups: int = 1,
) -> nn.Module:
    """A ``Conv[Conv.CONV, spatial_dims]`` layer (:func:`layer_type`) with "same" padding (``kernel_size // 2``)
    by default."""
    conv_type = layer_type("conv", spatial_dims)
    pad = kernel_size // 2 if padding is None else padding
    return conv_type(in_channels, out_channels, kernel_size, stride=stride, padding=pad, bias=bias, groups=groups)


class ZeroMeanConv(nn.Module):
    """A bias-free "same" convolution whose kernels are used minus their mean (per output channel), with
    replicate padding: blind to a constant offset of its input, borders included.

    ``weight`` is stored as learned (initialised as :func:`conv_nd`'s); the forward pass subtracts each output
    channel's mean over its input channels and taps. The first layer of an intensity-equivariant generator
    (``RDN(equivariant=True)``).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.spatial_dims, self.padding = spatial_dims, kernel_size // 2
        self.weight = conv_nd(spatial_dims, in_channels, out_channels, kernel_size, bias=False).weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight - self.weight.mean(dim=tuple(range(1, self.weight.ndim)), keepdim=True)
        if self.padding:
            x = nn.functional.pad(x, (self.padding,) * (2 * self.spatial_dims), mode="replicate")
        conv = (nn.functional.conv1d, nn.functional.conv2d, nn.functional.conv3d)[self.spatial_dims - 1]
        return conv(x, w)


def remove_biases(module: nn.Module) -> nn.Module:
    """Drop the bias of every convolution in ``module`` (in place; returns it)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.bias is not None:
            m.register_parameter("bias", None)
    return module


def channels_last_format(spatial_dims: int) -> torch.memory_format | None:
    """``torch.channels_last`` in 2D, ``torch.channels_last_3d`` in 3D, ``None`` otherwise."""
    return {2: torch.channels_last, 3: torch.channels_last_3d}.get(int(spatial_dims))


def _channels_last(x: torch.Tensor, spatial_dims: int) -> bool:
    """True when ``x`` is stored channels-last (and not also plain contiguous, as when ``C == 1``)."""
    fmt = channels_last_format(spatial_dims)
    return fmt is not None and x.is_contiguous(memory_format=fmt) and not x.is_contiguous()


def follow_format(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last order when ``weight`` (of a convolution with several input channels) is.

    A convolution with one input channel runs PyTorch's slow path, whose 3D version returns a contiguous
    tensor even for a channels-last model; every later convolution would then convert its input again.
    """
    d = x.ndim - 2
    if _channels_last(weight, d) and not _channels_last(x, d):
        return x.contiguous(memory_format=channels_last_format(d))
    return x


def scaled_conv(conv: nn.Module, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``conv(x * scale)`` for a per-channel ``scale`` of shape ``(B, C, 1, ...)``, such as an SE gate.

    For one image the scale is folded into the convolution weights (``C_out x C_in x k^d`` numbers) instead
    of multiplying the whole feature map, which on an HR grid is a full pass over memory.
    """
    x, w = _fold_scale(conv, x, scale)
    return conv._conv_forward(x, w, conv.bias)


def _fold_scale(conv: nn.Module, x: torch.Tensor, scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input, weight)`` for ``conv(x * scale)``: the scale folded into the weight for one image."""
    if scale is None:
        return x, conv.weight
    if x.shape[0] != 1:
        return x * scale, conv.weight
    return x, conv.weight * scale.reshape([1, -1] + [1] * (conv.weight.ndim - 2))


def conv_pixel_shuffle(
    conv: nn.Module, shuffle: PixelShuffle, x: torch.Tensor, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """``shuffle(conv(x * scale))`` (``scale``: an optional per-channel gate, as in :func:`scaled_conv`).

    On a channels-last input the convolution's output channels are produced in sub-pixel-offset-major order
    (weights reordered, ``C_out x C_in x k^d`` numbers), so the shuffle moves whole runs of ``C`` channels
    instead of gathering every ``prod(r)``-th value: the same values at about half the copy time.
    """
    x, w = _fold_scale(conv, x, scale)
    d = shuffle.spatial_dims
    if not _channels_last(x, d):
        return shuffle(conv._conv_forward(x, w, conv.bias))
    c = w.shape[0] // shuffle.factor
    order = torch.arange(w.shape[0], device=w.device).reshape(c, shuffle.factor).t().reshape(-1)
    bias = conv.bias.index_select(0, order) if conv.bias is not None else None
    return shuffle.from_offset_major(conv._conv_forward(x, w.index_select(0, order), bias))


class PixelShuffle(nn.Module):
    """N-D pixel shuffle (sub-pixel convolution rearrangement) with per-axis factors.

    Rearranges ``(B, C * prod(r), *S)`` into ``(B, C, *(S * r))``. The channel order matches
    :func:`torch.nn.functional.pixel_shuffle` in 2D (channel ``c * r1 * r2 + i * r2 + j`` goes to
    ``(c, h * r1 + i, w * r2 + j)``) and MONAI's ``pixelshuffle`` for isotropic factors, generalised to
    any number of axes and to a different factor per axis (MONAI's ``UpSample(mode="pixelshuffle")`` uses
    only the first factor). Reference: Shi et al., "Real-Time Single Image and Video Super-Resolution Using
    an Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016.

    Args:
        spatial_dims: number of spatial dimensions.
        scale_factor: int or per-axis tuple, e.g. ``(2, 2, 1)``.
    """

    def __init__(self, spatial_dims: int, scale_factor: int | Sequence[int]) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.scale_factor = ensure_scale(scale_factor, spatial_dims)
        self.factor = math.prod(self.scale_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.spatial_dims
        if not torch.jit.is_tracing() and x.ndim != d + 2:
            raise ValueError(f"PixelShuffle: expected a (B, C, *S) tensor with {d} spatial dims, got {tuple(x.shape)}")
        b, c = x.shape[0], x.shape[1]
        if not torch.jit.is_tracing() and c % self.factor != 0:
            raise ValueError(
                f"PixelShuffle: channels {c} are not divisible by the product of scale_factor {self.scale_factor}"
            )
        spatial = list(x.shape[2:])
        out_c = c // self.factor
        hr = [s * r for s, r in zip(spatial, self.scale_factor)]
        if _channels_last(x, d):
            # channels-last input gives a channels-last output in one copy; converting a contiguous shuffle
            # result back to channels-last for the next convolution would cost a second full HR pass
            return self._shuffle_channels_last(x, offset_major=False)
        x = x.reshape([b, out_c] + list(self.scale_factor) + spatial)
        # (B, C, r1..rd, s1..sd) -> (B, C, s1, r1, s2, r2, ...)
        perm = [0, 1]
        for i in range(d):
            perm += [2 + d + i, 2 + i]
        x = x.permute(perm)
        return x.reshape([b, out_c] + hr)

    def from_offset_major(self, x: torch.Tensor) -> torch.Tensor:
        """Shuffle a channels-last ``x`` whose channels are ordered ``offset * C + c`` (offset-major) instead of
        ``c * prod(r) + offset``; returns channels-last ``(B, C, *(S * r))``. See :func:`conv_pixel_shuffle`."""
        return self._shuffle_channels_last(x, offset_major=True)

    def _shuffle_channels_last(self, x: torch.Tensor, offset_major: bool) -> torch.Tensor:
        """One copy from channels-last ``(B, C*prod(r), *S)`` to channels-last ``(B, C, *(S * r))``."""
        d = self.spatial_dims
        b, spatial = x.shape[0], list(x.shape[2:])
        out_c = x.shape[1] // self.factor
        r = list(self.scale_factor)
        y = x.permute([0] + list(range(2, d + 2)) + [1])  # (B, *S, channels), contiguous
        # split the channels into (r1..rd, C) when offset-major, else (C, r1..rd); then interleave s_i, r_i
        y = y.reshape([b] + spatial + (r + [out_c] if offset_major else [out_c] + r))
        first_r, c_axis = (1 + d, 1 + 2 * d) if offset_major else (2 + d, 1 + d)
        perm = [0]
        for i in range(d):
            perm += [1 + i, first_r + i]
        y = y.permute(perm + [c_axis]).reshape([b] + [s * f for s, f in zip(spatial, r)] + [out_c])
        return y.permute([0, d + 1] + list(range(1, d + 1)))

    def extra_repr(self) -> str:
        return f"spatial_dims={self.spatial_dims}, scale_factor={self.scale_factor}"


class SEBlock(nn.Module):
    """Squeeze-and-excitation channel attention for any ``spatial_dims`` (Hu et al., CVPR 2018).

    ``y = mean_S(x)``; ``s = sigmoid(W2 relu(W1 y))``; returns ``x * s``. Shape ``(B, C, *S)`` in and out.
    ``W1``/``W2`` are 1x1 convolutions named ``fc1``/``fc2``.

    Args:
        spatial_dims: number of spatial dimensions.
        channels: number of channels ``C``.
        reduction: channel reduction ratio of the bottleneck (hidden width ``max(1, C // reduction)``).
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"SEBlock: channels ({channels}) and reduction ({reduction}) must be positive")
        hidden = max(1, channels // reduction)
        self.pool = layer_type("adaptiveavg", spatial_dims)(1)
        self.fc1 = conv_nd(spatial_dims, channels, hidden, 1)
        self.fc2 = conv_nd(spatial_dims, hidden, channels, 1)
        self.act = nn.ReLU(inplace=True)

    def gate(self, y: torch.Tensor) -> torch.Tensor:
        """The per-channel scale in (0, 1) for pooled features ``y`` of shape ``(B, C, 1, ...)``."""
        return torch.sigmoid(self.fc2(self.act(self.fc1(y))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.pool(x))


class ImprovedSEBlock(SEBlock):
    """Improved SE block of Bing et al. (IEEE Access 2019): per-channel scale in (0, 2).

    ``s = 2 * [k1 * sigmoid(W2 relu(W1 y)) + k2 * sigmoid(y)]`` with ``y`` the channel means,
    ``k1 = 0.8``, ``k2 = 0.2``; returns ``x * s``. The ``k2 * sigmoid(y)`` term is a residual path that
    keeps channels alive when many blocks are stacked. Shape ``(B, C, *S)`` in and out.

    Args:
        spatial_dims: number of spatial dimensions.
        channels: number of channels ``C``.
        reduction: channel reduction ratio of the bottleneck.
        k1: weight of the excitation path.
        k2: weight of the residual ``sigmoid(y)`` path.
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16, k1: float = 0.8, k2: float = 0.2) -> None:
        super().__init__(spatial_dims, channels, reduction)
        self.k1 = float(k1)
        self.k2 = float(k2)

    def gate(self, y: torch.Tensor) -> torch.Tensor:
        """The per-channel scale in (0, 2) for pooled features ``y``."""
        return 2.0 * (self.k1 * torch.sigmoid(self.fc2(self.act(self.fc1(y)))) + self.k2 * torch.sigmoid(y))


def make_attention(attention: str | None, spatial_dims: int, channels: int, reduction: int = 16) -> nn.Module | None:
    """Build ``SEBlock`` (``"se"``), ``ImprovedSEBlock`` (``"ise"``) or nothing (``None``).

    Raises:
        ValueError: for any other value, naming the ``attention`` argument.
    """
    if attention is None or attention == "none":
        return None
    if attention == "se":
        return SEBlock(spatial_dims, channels, reduction)
    if attention == "ise":
        return ImprovedSEBlock(spatial_dims, channels, reduction)
    raise ValueError(f"attention: expected 'se', 'ise' or None, got {attention!r}")
