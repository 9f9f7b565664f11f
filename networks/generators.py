"""SR generators for 2D and 3D: LR ``(B, C, *S)`` in, HR ``(B, C_out, *(S * scale))`` out.

Every generator takes ``spatial_dims``, ``in_channels``, ``out_channels`` and ``scale_factor`` (an int or a
per-axis tuple such as ``(2, 2, 1)`` or ``(1, 1, 4)``) first; width and depth are arguments, so a
distillation student is the same class made smaller.

Intermediate features (for distillation): every generator has
``forward_features(x) -> (out, features)`` where ``features`` is a list of feature maps at LR resolution,
one per body block (documented per class), and ``forward(x, return_features=True)`` returns the same pair.
``forward(x)`` returns only the HR tensor.

Upsampling with per-axis factors follows :func:`medsr.networks.blocks.upsample_stages`: powers of two are
reached in factor-2 stages on the axes that need them; any other factor uses one stage with the full
per-axis factor (e.g. x3 or ``(1, 1, 3)``).

The forwards here are the published computations. Inference speed-ups (fused residuals, attention gates folded
into convolutions, channels-last propagation) live in :mod:`medsr.networks.optimize`, which swaps them in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medsr.networks.blocks import (
    PixelShuffle,
    ZeroMeanConv,
    conv_nd,
    ensure_scale,
    layer_type,
    make_attention,
    remove_biases,
    upsample_stages,
)

__all__ = [
    "SRCNN",
    "VDSR",
    "ESPCN",
    "SRResNet",
    "EDSR",
    "RDN",
    "SRDenseNet",
    "RRDBNet",
    "SRGenerator",
    "SliceWise",
]


def _check_input(x: torch.Tensor, spatial_dims: int, in_channels: int, name: str) -> None:
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    if x.ndim != spatial_dims + 2 or x.shape[1] != in_channels:
        raise ValueError(
            f"{name}: expected input (B, {in_channels}, *S) with {spatial_dims} spatial dims, got {tuple(x.shape)}"
        )


class SRGenerator(nn.Module):
    """Base class of every generator: the shared arguments, the residual over interpolation and ``forward``.

    Every generator is built as ``Cls(spatial_dims, in_channels, out_channels, scale_factor, *options,
    residual_interp, interp_mode)``, each argument by position or by keyword. Its ``__init__`` passes the shared
    arguments and its own options to ``SRGenerator.__init__``, creates its layers and ends with
    :meth:`_finish_generator`.

    * ``forward(x, return_features=False)`` on top of :meth:`forward_intermediates` (timm's name), which adds
      the interpolation residual to ``forward_features``.
    * ``residual_interp=True``: the network learns a residual over interpolation of its input (bicubic in 2D,
      trilinear in 3D; ``interp_mode``): ``out = interp(x) + f(x)``, with the output layer zero-initialised, so
      an untrained network starts exactly at interpolation and training only has to learn what it misses.
    * ``init_args``: the constructor's arguments as one flat dict, so a checkpoint can rebuild the network from
      the file alone (``Cls(**init_args)``).

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        out_channels: output channels.
        scale_factor: int or per-axis tuple such as ``(2, 2, 1)`` or ``(1, 1, 4)``.
        residual_interp: learn a residual over interpolation of the input (output layer zero-initialised); a
            command line's ``'true'``/``'false'`` is accepted and recorded as a bool.
        interp_mode: interpolation of that residual path, ``None`` for bicubic (2D) / trilinear (3D).
        options: the generator's own arguments, recorded in ``init_args`` between ``scale_factor`` and
            ``residual_interp`` (their order in its signature).
    """

    spatial_dims: int
    in_channels: int
    out_channels: int
    scale_factor: tuple[int, ...]
    residual_interp: bool = False
    interp_mode: str = "bicubic"
    #: attribute path of the layer that produces the output (zero-initialised with ``residual_interp``)
    output_layer: str = "conv_last"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        scale_factor: int | Sequence[int],
        residual_interp: bool,
        interp_mode: str | None,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.scale_factor = ensure_scale(scale_factor, spatial_dims)
        self.residual_interp = _flag(residual_interp, "residual_interp")
        self.interp_mode = _interp_mode(spatial_dims, interp_mode)
        if self.residual_interp and in_channels != out_channels:
            raise ValueError(
                f"{type(self).__name__}: residual_interp needs out_channels ({out_channels}) == in_channels "
                f"({in_channels})"
            )
        self.init_args = {
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "scale_factor": _plain(scale_factor),
            **{k: _plain(v) for k, v in (options or {}).items()},
            "residual_interp": self.residual_interp,
            "interp_mode": interp_mode,
        }

    def _finish_generator(self) -> None:
        """End of every generator's ``__init__``: zero-initialise the output layer when learning a residual."""
        if self.residual_interp:
            layer = self.get_submodule(self.output_layer)
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def upsample_input(self, x: torch.Tensor) -> torch.Tensor:
        """Interpolate the LR input to the HR grid (``interp_mode``)."""
        if all(f == 1 for f in self.scale_factor):
            return x
        scale = [float(f) for f in self.scale_factor]
        if self.interp_mode in ("nearest", "nearest-exact", "area"):
            return F.interpolate(x, scale_factor=scale, mode=self.interp_mode)
        return F.interpolate(x, scale_factor=scale, mode=self.interp_mode, align_corners=False)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The HR output (before the interpolation residual) and the list of intermediate feature maps."""
        raise NotImplementedError

    def forward_intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The HR output and the intermediate feature maps (documented per class)."""
        _check_input(x, self.spatial_dims, self.in_channels, type(self).__name__)
        out, feats = self.forward_features(x)
        if self.residual_interp:
            out = out + self.upsample_input(x)
        return out, feats

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Map LR ``(B, C_in, *S)`` to HR ``(B, C_out, *(S * scale))``; with ``return_features`` also the features."""
        out, feats = self.forward_intermediates(x)
        if return_features:
            return out, feats
        return out

    def hr_shape(self, lr_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial HR shape for a spatial LR shape."""
        return tuple(int(s) * f for s, f in zip(lr_shape, self.scale_factor))


def _plain(v):
    return [_plain(i) for i in v] if isinstance(v, (tuple, list)) else v


def _flag(value, name: str) -> bool:
    """A bool argument that may come from a command line as text (``'true'``/``'false'``)."""
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name}: expected true or false, got {value!r}")
        return value.strip().lower() in ("true", "1")
    return bool(value)


def _interp_mode(spatial_dims: int, mode: str | None) -> str:
    if mode is None:
        return {1: "linear", 2: "bicubic", 3: "trilinear"}.get(spatial_dims, "nearest")
    allowed = {1: {"linear"}, 2: {"bilinear", "bicubic"}, 3: {"trilinear"}}.get(spatial_dims, set()) | {
        "nearest",
        "nearest-exact",
        "area",
    }
    if mode not in allowed:
        raise ValueError(
            f"interp_mode: {mode!r} does not work with spatial_dims={spatial_dims}; use one of {sorted(allowed)}"
        )
    return mode


def upsample_layers(
    spatial_dims: int,
    channels: int,
    scale: Sequence[int],
    act: Callable[[int], nn.Module] | None = None,
    width: int | None = None,
) -> list[nn.Module]:
    """The shared upsampling-stage builder: per stage of :func:`upsample_stages`, a conv from the current
    width to ``width * prod(stage)``, a :class:`PixelShuffle` and, if given, ``act(width)``.
    ``width`` defaults to ``channels``."""
    width = channels if width is None else width
    layers: list[nn.Module] = []
    cin = channels
    for stage in upsample_stages(scale):
        layers += [conv_nd(spatial_dims, cin, width * math.prod(stage), 3), PixelShuffle(spatial_dims, stage)]
        if act is not None:
            layers.append(act(width))
        cin = width
    return layers


class SRCNN(SRGenerator):
    """SRCNN (Dong et al., "Image Super-Resolution Using Deep Convolutional Networks", TPAMI 2016).

    Interpolates the LR input to the HR grid (``interp_mode``, default bicubic in 2D, trilinear in 3D),
    then patch extraction (9), non-linear mapping (5 in the 9-5-5 setting; ``kernel_sizes``) and
    reconstruction. Input ``(B, C_in, *S)``, output ``(B, C_out, *(S * scale))``.
    Features: the outputs of ``conv1`` and ``conv2`` (HR grid).
    The shared arguments (``in_channels``, ``out_channels``, ``scale_factor``, ``residual_interp``,
    ``interp_mode``) are those of :class:`SRGenerator`.

    Args:
        num_features: widths of the first two layers (default ``(64, 32)``).
        kernel_sizes: kernel sizes of the three layers (default ``(9, 5, 5)``).
    """

    output_layer = "conv3"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        scale_factor: int | Sequence[int] = 2,
        num_features: Sequence[int] = (64, 32),
        kernel_sizes: Sequence[int] = (9, 5, 5),
        residual_interp: bool = False,
        interp_mode: str | None = None,
    ) -> None:
        options = {"num_features": num_features, "kernel_sizes": kernel_sizes}
        super().__init__(spatial_dims, in_channels, out_channels, scale_factor, residual_interp, interp_mode, options)
        dims = spatial_dims
        if len(num_features) != 2 or len(kernel_sizes) != 3:
            raise ValueError(
                f"SRCNN: num_features needs 2 values and kernel_sizes 3, got {num_features}, {kernel_sizes}"
            )
        f1, f2 = num_features
        k1, k2, k3 = kernel_sizes
        self.conv1 = conv_nd(dims, self.in_channels, f1, k1)
        self.conv2 = conv_nd(dims, f1, f2, k2)
        self.conv3 = conv_nd(dims, f2, self.out_channels, k3)
        self.act = nn.ReLU(inplace=True)
        self._finish_generator()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.upsample_input(x)
        f1 = self.act(self.conv1(x))
        f2 = self.act(self.conv2(f1))
        return self.conv3(f2), [f1, f2]


class VDSR(SRGenerator):
    """VDSR (Kim et al., "Accurate Image Super-Resolution Using Very Deep Convolutional Networks", CVPR 2016).

    Interpolates to the HR grid, then ``num_layers`` 3x3 convolutions (ReLU between) predict a residual
    added to the interpolated input. Published configuration: 20 layers, 64 features, 1 channel
    (0.665 M parameters). ``residual_interp`` defaults to, and must be, ``True``, so ``in_channels`` must equal
    ``out_channels``. Features: the output of every hidden layer.
    The shared arguments (``in_channels``, ``out_channels``, ``scale_factor``, ``residual_interp``,
    ``interp_mode``) are those of :class:`SRGenerator`.

    The hidden convolutions start with He (Kaiming normal, ReLU gain) weights and zero biases, as in the paper;
    the output layer starts at zero like every generator's. With PyTorch's default initialisation the input's
    signal fades through a plain stack this deep (the last hidden layer's spread is a tenth of the first's, mostly
    its biases), and under the zero output layer the last hidden layer's ReLUs died: on x2 corpus patches,
    16 layers x 48 features stayed at bicubic's L1 after 300 Adam steps (1e-3) with 0.1 % of those ReLUs
    active; with He weights 11 % stay active and the L1 falls 17 % below bicubic's.

    Args:
        num_features: hidden width.
        num_layers: total number of convolutions (>= 2).
        bias: use biases in the convolutions.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        scale_factor: int | Sequence[int] = 2,
        num_features: int = 64,
        num_layers: int = 20,
        bias: bool = True,
        residual_interp: bool = True,
        interp_mode: str | None = None,
    ) -> None:
        options = {"num_features": num_features, "num_layers": num_layers, "bias": bias}
        super().__init__(spatial_dims, in_channels, out_channels, scale_factor, residual_interp, interp_mode, options)
        if not self.residual_interp:  # (it also makes the base class check in_channels == out_channels)
            raise ValueError("VDSR: residual_interp=False is not VDSR (it learns a residual over interpolation)")
        if num_layers < 2:
            raise ValueError(f"VDSR: num_layers must be >= 2, got {num_layers}")
        dims = self.spatial_dims
        self.conv_first = conv_nd(dims, self.in_channels, num_features, 3, bias=bias)
        self.body = nn.ModuleList(
            [conv_nd(dims, num_features, num_features, 3, bias=bias) for _ in range(num_layers - 2)]
        )
        self.conv_last = conv_nd(dims, num_features, self.out_channels, 3, bias=bias)
        self.act = nn.ReLU(inplace=True)
        for conv in (self.conv_first, *self.body):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        self._finish_generator()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.upsample_input(x)
        feat = self.act(self.conv_first(x))
        feats = [feat]
        for conv in self.body:
            feat = self.act(conv(feat))
            feats.append(feat)
        return self.conv_last(feat), feats


class ESPCN(SRGenerator):
    """ESPCN (Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
    Convolutional Neural Network", CVPR 2016).

    conv 5 (64) - tanh - conv 3 (32) - tanh - conv 3 (``C_out * prod(scale)``) - one pixel shuffle with the
    full per-axis factor. Features: the two hidden activations (LR grid).
    The shared arguments (``in_channels``, ``out_channels``, ``scale_factor``, ``residual_interp``,
    ``interp_mode``) are those of :class:`SRGenerator`.

    Args:
        num_features: widths of the two hidden layers.
    """

    output_layer = "conv3"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        scale_factor: int | Sequence[int] = 2,
        num_features: Sequence[int] = (64, 32),
        residual_interp: bool = False,
        interp_mode: str | None = None,
    ) -> None:
        options = {"num_features": num_features}
        super().__init__(spatial_dims, in_channels, out_channels, scale_factor, residual_interp, interp_mode, options)
        dims = self.spatial_dims
        f1, f2 = num_features
        self.conv1 = conv_nd(dims, self.in_channels, f1, 5)
        self.conv2 = conv_nd(dims, f1, f2, 3)
        self.conv3 = conv_nd(dims, f2, self.out_channels * math.prod(self.scale_factor), 3)
        self.pixel_shuffle = PixelShuffle(dims, self.scale_factor)
        self._finish_generator()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        f1 = torch.tanh(self.conv1(x))
        f2 = torch.tanh(self.conv2(f1))
        return self.pixel_shuffle(self.conv3(f2)), [f1, f2]


def _norm(norm: str | None, spatial_dims: int, channels: int) -> nn.Module:
    if norm is None:
        return nn.Identity()
    if norm == "batch":
        return layer_type("batch", spatial_dims)(channels)
    if norm == "instance":
        return layer_type("instance", spatial_dims)(channels, affine=True)
    raise ValueError(f"norm: expected 'batch', 'instance' or None, got {norm!r}")


class _SRResBlock(nn.Module):
    def __init__(self, spatial_dims: int, nf: int, norm: str | None) -> None:
        super().__init__()
        self.conv1 = conv_nd(spatial_dims, nf, nf, 3, bias=norm is None)
        self.bn1 = _norm(norm, spatial_dims, nf)
        self.prelu = nn.PReLU(nf)
        self.conv2 = conv_nd(spatial_dims, nf, nf, 3, bias=norm is None)
        self.bn2 = _norm(norm, spatial_dims, nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))


class SRResNet(SRGenerator):
    """SRResNet, the SRGAN generator (Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a
    Generative Adversarial Network", CVPR 2017).

    conv 9 + PReLU; ``num_blocks`` residual blocks (conv-BN-PReLU-conv-BN); conv-BN and a global skip;
    upsampling stages (conv to ``nf * prod(stage)``, pixel shuffle, PReLU); conv 9. ``norm=None`` drops BN
    (as in SwiftSRGAN/ESRGAN practice). Features: the output of every residual block.
    The shared arguments (``in_channels``, ``out_channels``, ``scale_factor``, ``residual_interp``,
    ``interp_mode``) are those of :class:`SRGenerator`.

    Args:
        num_features: width (64 in the paper).
        num_blocks: residual blocks (16 in the paper).
        norm: ``"batch"`` (paper), ``"instance"`` or ``None``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        scale_factor: int | Sequence[int] = 4,
        num_features: int = 64,
        num_blocks: int = 16,
        norm: str | None = "batch",
        residual_interp: bool = False,
        interp_mode: str | None = None,
    ) -> None:
        options = {"num_features": num_features, "num_blocks": num_blocks, "norm": norm}
        super().__init__(spatial_dims, in_channels, out_channels, scale_factor, residual_interp, interp_mode, options)
        dims = self.spatial_dims
        nf = num_features
        self.conv_first = conv_nd(dims, self.in_channels, nf, 9)
        self.prelu_first = nn.PReLU(nf)
        self.body = nn.ModuleList([_SRResBlock(dims, nf, norm) for _ in range(num_blocks)])
        self.conv_body = conv_nd(dims, nf, nf, 3, bias=norm is None)
        self.bn_body = _norm(norm, dims, nf)
        self.upsample = nn.Sequential(*upsample_layers(dims, nf, self.scale_factor, act=nn.PReLU))
        self.conv_last = conv_nd(dims, nf, self.out_channels, 9)
        self._finish_generator()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        first = self.prelu_first(self.conv_first(x))
        feat = first
        feats = []
        for block in self.body:
            feat = block(feat)
            feats.append(feat)
        feat = first + self.bn_body(self.conv_body(feat))
        return self.conv_last(self.upsample(feat)), feats


class _EDSRResBlock(nn.Module):
    """Conv-ReLU-Conv[-attention] with residual scaling; ``body.0``/``body.2`` as in the EDSR code."""

    def __init__(self, spatial_dims: int, nf: int, res_scale: float, attention: str | None, reduction: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            conv_nd(spatial_dims, nf, nf, 3),
            nn.ReLU(inplace=True),
            conv_nd(spatial_dims, nf, nf, 3),
        ]
        att = make_attention(attention, spatial_dims, nf, reduction)
        if att is not None:
            layers.append(att)
        self.body = nn.Sequential(*layers)
        self.res_scale = float(res_scale)
        self.has_attention = att is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class EDSR(SRGenerator):
    """EDSR (Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPRW 2017),
    and EDSR-ISE with ``attention="ise"`` (Bing et al., "Medical Image Super-Resolution Using Improved
    Generative Adversarial Networks", IEEE Access 2019).

    ``head``: conv (+ attention); ``body``: ``num_blocks`` blocks Conv-ReLU-Conv(-attention) with residual
    scaling, then a conv, plus the global residual from the head; ``tail.0``: upsampling stages
    (conv to ``nf * prod(stage)``, pixel shuffle, + attention); ``tail.1``: conv to ``out_channels``.
    Parameter names follow the official EDSR code (``head.0``, ``body.N.body.0``, ``body.N.body.2``,
    ``body.{num_blocks}``, ``tail.0.*``, ``tail.1``; no MeanShift layers: medical intensities are normalised
    by the transforms). Baseline: 64 features, 16 blocks, ``res_scale=1`` (x2: 1.37 M parameters);
    large: 256 features, 32 blocks, ``res_scale=0.1`` (x2: 40.7 M). EDSR-ISE: ``attention="ise"``
    (improved SE after the head conv, in every block and after every pixel-shuffle stage).
    ``upsampler="subpixel"`` replaces that tail with ESPCN's (Shi et al., CVPR 2016): ``tail.0``, one conv from
    ``nf`` straight to ``C_out * prod(scale)`` sub-pixel channels, and ``tail.1``, one pixel shuffle with the
    full per-axis factor. With a large factor along one axis (``(1, 5)``: self-supervised thick-slice SR) EDSR's
    tail costs more than its body; this one costs about one body conv. Registered as ``slicenet`` (32
    features, 4 blocks, subpixel: the default of ``medsr selfsr``).
    Input ``(B, C_in, *S)``, output ``(B, C_out, *(S * scale))``. Features: every residual block's output.
    The shared arguments (``in_channels``, ``out_channels``, ``scale_factor``, ``residual_interp``,
    ``interp_mode``) are those of :class:`SRGenerator`.

    Args:
        num_features: width.
        num_blocks: residual blocks.
        res_scale: residual scaling in the blocks.
        upsampler: ``"pixelshuffle"`` (EDSR's tail) or ``"subpixel"`` (ESPCN's one-conv tail).
        attention: ``None``, ``"se"`` (squeeze-and-excitation) or ``"ise"`` (improved SE).
        reduction: SE reduction ratio.
    """

    output_layer = "tail.1"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        scale_factor: int | Sequence[int] = 2,
        num_features: int = 64,
        num_blocks: int = 16,
        res_scale: float = 1.0,
        upsampler: str = "pixelshuffle",
        attention: str | None = None,
        reduction: int = 16,
        residual_interp: bool = False,
        interp_mode: str | None = None,
    ) -> None:
        options = {
            "num_features": num_features,
            "num_blocks": num_blocks,
            "res_scale": res_scale,
            "upsampler": upsampler,
            "attention": attention,
            "reduction": reduction,
        }
        super().__init__(spatial_dims, in_channels, out_channels, scale_factor, residual_interp, interp_mode, options)
        if upsampler not in ("pixelshuffle", "subpixel"):
            raise ValueError(f"upsampler: expected 'pixelshuffle' or 'subpixel', got {upsampler!r}")
        self.upsampler, self.attention, self.reduction = upsampler, attention, reduction
        dims = spatial_dims
        nf = num_features
        head: list[nn.Module] = [conv_nd(dims, in_channels, nf, 3)]
        att = make_attention(attention, dims, nf, reduction)
        if att is not None:
            head.append(att)
        self.head = nn.Sequential(*head)
        blocks: list[nn.Module] = [_EDSRResBlock(dims, nf, res_scale, attention, reduction) for _ in range(num_blocks)]
        blocks.append(conv_nd(dims, nf, nf, 3))
        self.body = nn.Sequential(*blocks)
        if upsampler == "subpixel":
            self.tail = nn.Sequential(
                conv_nd(dims, nf, out_channels * math.prod(self.scale_factor), 3),
                PixelShuffle(dims, self.scale_factor),
            )
            self.output_layer = "tail.0"
        else:
            ups = upsample_layers(
                dims, nf, self.scale_factor, act=lambda c: make_attention(attention, dims, c, reduction)
            )
            self.tail = nn.Sequential(
                nn.Sequential(*[u for u in ups if u is not None]), conv_nd(dims, nf, out_channels, 3)
            )
        self._finish_generator()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feat, feats = self.forward_body(self.head(x))
        return self.tail(feat), feats

    def forward_body(self, head: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The residual blocks, the body's last conv and the global residual from ``head``; and every block's
        output."""
        feat = head
        feats = []
        for block in self.body[:-1]:
            feat = block(feat)
            feats.append(feat)
        return self.body[-1](feat) + head, feats


class _RDBConv(nn.Module):
    def __init__(self, spatial_dims: int, cin: int, growth: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv_nd(spatial_dims, cin, growth, 3), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(x)), 1)


class _RDB(nn.Module):
    def __init__(self, spatial_dims: int, nf: int, growth: int, num_layers: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[_RDBConv(spatial_dims, nf + c * growth, growth) for c in range(num_layers)])
        self.LFF = conv_nd(spatial_dims, nf + num_layers * growth, nf, 1)  # noqa: N815 (official name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LFF(self.convs(x)) + x


class RDN(SRGenerator):
    """RDN (Zhang et al., "Residual Dense Network for Image Super-Resolution", CVPR 2018).

    Shallow features (``SFENet1``, ``SFENet2``), ``num_blocks`` residual dense blocks of ``num_layers``
    conv-ReLU layers with growth ``growth_channels`` and 1x1 local fusion (``RDBs.N.convs.c.conv.0``,
    ``RDBs.N.LFF``), global feature fusion (``GFF.0`` 1x1, ``GFF.1`` 3x3) with a global residual, and
    ``UPNet`` (conv to ``G * prod(stage)`` + pixel shuffle per stage, final conv) as in the official code.
    Published configuration: G0 = 64, D = 16, C = 8, G = 64 (22.1 M parameters at x2, RGB).
    Features: every RDB output.
    The shared arguments (``in_channels``, ``out_channels``, ``scale_factor``, ``residual_interp``,
    ``interp_mode``) are those of :class:`SRGenerator`.

    Args:
        num_features: G0.
        num_blocks: D.
        num_layers: C.
        growth_channels: G.
        equivariant: intensity-equivariant: every convolution bias-free and the first one zero-mean with
            replicate padding (:class:`~medsr.networks.blocks.ZeroMeanConv`), so the learned residual ignores
            a constant offset and scales with the input. With ``residual_interp`` (required), the output
            follows any window or normalization: ``f(a * x + b) = a * f(x) + b`` for every ``a > 0``, ``b``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        scale_factor: int | Sequence[int] = 2,
        num_features: int = 64,
        num_blocks: int = 16,
        num_layers: int = 8,
        growth_channels: int = 64,
        equivariant: bool = False,
        residual_interp: bool = False,
        interp_mode: str | None = None,
    ) -> None:
        options = {
            "num_features": num_features,
            "num_blocks": num_blocks,
            "num_layers": num_layers,
            "growth_channels": growth_channels,
        }
        equivariant = _flag(equivariant, "equivariant")
        if equivariant:  # recorded only when set: files of plain RDNs describe them as before
            options["equivariant"] = True
        super().__init__(spatial_dims, in_channels, out_channels, scale_factor, residual_interp, interp_mode, options)
        self.equivariant = equivariant
        if self.equivariant and not self.residual_interp:
            raise ValueError("RDN: equivariant=True needs residual_interp=True (the interpolation carries the offset)")
        dims = self.spatial_dims
        g0, g = num_features, growth_channels
        first = ZeroMeanConv if self.equivariant else conv_nd
        self.SFENet1 = first(dims, self.in_channels, g0, 3)  # noqa: N815
        self.SFENet2 = conv_nd(dims, g0, g0, 3)  # noqa: N815
        self.RDBs = nn.ModuleList([_RDB(dims, g0, g, num_layers) for _ in range(num_blocks)])  # noqa: N815
        self.GFF = nn.Sequential(conv_nd(dims, num_blocks * g0, g0, 1), conv_nd(dims, g0, g0, 3))  # noqa: N815
        ups = upsample_layers(dims, g0, self.scale_factor, width=g)
        cin = g if ups else g0
        self.UPNet = nn.Sequential(*ups, conv_nd(dims, cin, self.out_channels, 3))  # noqa: N815
        self.output_layer = f"UPNet.{len(ups)}"
        if self.equivariant:
            remove_biases(self)
        self._finish_generator()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        f1 = self.SFENet1(x)
        feat = self.SFENet2(f1)
        feats = []
        for rdb in self.RDBs:
            feat = rdb(feat)
            feats.append(feat)
        feat = self.GFF(torch.cat(feats, 1)) + f1
        return self.UPNet(feat), feats


class _DenseBlock(nn.Module):
    """``num_layers`` conv-ReLU layers, each fed the concatenation of the block input and all previous
    outputs; the block outputs the concatenation of its layers' outputs (``num_layers * growth``)."""

    def __init__(self, spatial_dims: int, cin: int, growth: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.Sequential(conv_nd(spatial_dims, cin + i * growth, growth, 3), nn.ReLU(inplace=True))
                for i in range(num_layers)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        for layer in self.layers:
            outs.append(layer(torch.cat([x] + outs, 1)))
        return torch.cat(outs, 1)


class SRDenseNet(SRGenerator):
    """SRDenseNet (Tong et al., "Image Super-Resolution Using Dense Skip Connections", ICCV 2017), the
    dense SR net of the chest X-ray study (variant "All": dense skips from every block).

    Low-level conv 3x3 + ReLU (``num_features``); ``num_blocks`` dense blocks of ``num_layers`` layers with
    growth ``growth_channels``; the low-level features and every block output are concatenated, reduced by
    a 1x1 bottleneck to ``bottleneck_channels``; upsampling stages (conv, pixel shuffle, ReLU; the paper uses
    deconvolutions, pixel shuffle supports per-axis factors); reconstruction conv 3x3.
    Paper: 128 low-level features (= 8 x 16), 8 blocks x 8 layers, growth 16, bottleneck 256.
    Features: every dense block output.
    The shared arguments (``in_channels``, ``out_channels``, ``scale_factor``, ``residual_interp``,
    ``interp_mode``) are those of :class:`SRGenerator`.

    Args:
        num_features: low-level feature width.
        num_blocks: dense blocks.
        num_layers: layers per dense block.
        growth_channels: growth rate.
        bottleneck_channels: width after the bottleneck and in the upsampling stages.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        scale_factor: int | Sequence[int] = 4,
        num_features: int = 128,
        num_blocks: int = 8,
        num_layers: int = 8,
        growth_channels: int = 16,
        bottleneck_channels: int = 256,
        residual_interp: bool = False,
        interp_mode: str | None = None,
    ) -> None:
        options = {
            "num_features": num_features,
            "num_blocks": num_blocks,
            "num_layers": num_layers,
            "growth_channels": growth_channels,
            "bottleneck_channels": bottleneck_channels,
        }
        super().__init__(spatial_dims, in_channels, out_channels, scale_factor, residual_interp, interp_mode, options)
        dims = self.spatial_dims
        self.conv_first = conv_nd(dims, self.in_channels, num_features, 3)
        self.act = nn.ReLU(inplace=True)
        blocks = []
        cin = num_features
        for _ in range(num_blocks):
            blocks.append(_DenseBlock(dims, cin, growth_channels, num_layers))
            cin = num_layers * growth_channels
        self.blocks = nn.ModuleList(blocks)
        total = num_features + num_blocks * num_layers * growth_channels
        self.bottleneck = nn.Sequential(conv_nd(dims, total, bottleneck_channels, 1), nn.ReLU(inplace=True))
        relu = lambda _w: nn.ReLU(inplace=True)  # noqa: E731
        self.upsample = nn.Sequential(*upsample_layers(dims, bottleneck_channels, self.scale_factor, act=relu))
        self.conv_last = conv_nd(dims, bottleneck_channels, self.out_channels, 3)
        self._finish_generator()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feat = self.act(self.conv_first(x))
        skips = [feat]
        feats: list[torch.Tensor] = []
        for block in self.blocks:
            feat = block(feat)
            feats.append(feat)
            skips.append(feat)
        feat = self.bottleneck(torch.cat(skips, 1))
        return self.conv_last(self.upsample(feat)), feats


class ResidualDenseBlock(nn.Module):
    """ESRGAN residual dense block: five 3x3 convs (``conv1``..``conv5``) with dense connections,
    LeakyReLU(0.2), residual scaled by 0.2. ``(B, nf, *S)`` in and out. Initialised as BasicSR
    (Kaiming normal scaled by 0.1, zero bias), which ESRGAN needs to train a deep RRDB stack stably."""

    def __init__(self, spatial_dims: int, num_features: int = 64, growth_channels: int = 32) -> None:
        super().__init__()
        nf, gc = num_features, growth_channels
        self.conv1 = conv_nd(spatial_dims, nf, gc, 3)
        self.conv2 = conv_nd(spatial_dims, nf + gc, gc, 3)
        self.conv3 = conv_nd(spatial_dims, nf + 2 * gc, gc, 3)
        self.conv4 = conv_nd(spatial_dims, nf + 3 * gc, gc, 3)
        self.conv5 = conv_nd(spatial_dims, nf + 4 * gc, nf, 3)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):  # BasicSR: kaiming x 0.1
            nn.init.kaiming_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return torch.add(x, x5, alpha=0.2)


class RRDB(nn.Module):
    """Residual-in-residual dense block: three :class:`ResidualDenseBlock` (``rdb1``..``rdb3``), residual 0.2."""

    def __init__(self, spatial_dims: int, num_features: int = 64, growth_channels: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(spatial_dims, num_features, growth_channels)
        self.rdb2 = ResidualDenseBlock(spatial_dims, num_features, growth_channels)
        self.rdb3 = ResidualDenseBlock(spatial_dims, num_features, growth_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.add(x, self.rdb3(self.rdb2(self.rdb1(x))), alpha=0.2)


class RRDBNet(SRGenerator):
    """RRDBNet, the ESRGAN generator (Wang et al., "ESRGAN: Enhanced Super-Resolution Generative
    Adversarial Networks", ECCVW 2018), and ESRGAN-SE with ``attention="se"`` (USenhance 2023 ultrasound
    study: an SE block in place of the convolution after the upsampling layers, i.e. ``conv_hr``).

    ``conv_first``; ``body``: ``num_blocks`` RRDBs (no batch norm); ``conv_body`` + trunk residual;
    per upsampling stage nearest-neighbour interpolation (per-axis factor) + ``conv_upK`` + LeakyReLU;
    ``conv_hr`` (or ``se_hr``, an :class:`~medsr.networks.blocks.SEBlock`, when ``attention="se"``;
    ``"ise"`` uses the improved SE block) + LeakyReLU; ``conv_last``. Names match BasicSR's RRDBNet for x4
    (``conv_up1``, ``conv_up2``), so official weights load with
    :func:`medsr.networks.load_esrgan_state_dict`. Published configuration (64 features, 23 blocks,
    growth 32, x4, RGB): 16.70 M parameters. Input ``(B, C_in, *S)``, output ``(B, C_out, *(S * scale))``.
    Features: every RRDB output.
    The shared arguments (``in_channels``, ``out_channels``, ``scale_factor``, ``residual_interp``,
    ``interp_mode``) are those of :class:`SRGenerator`.

    Args:
        num_features: width.
        num_blocks: number of RRDBs.
        growth_channels: growth channels of the dense blocks.
        attention: ``None``, ``"se"`` (squeeze-and-excitation) or ``"ise"`` (improved SE).
        reduction: SE reduction ratio.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 3,
        out_channels: int = 3,
        scale_factor: int | Sequence[int] = 4,
        num_features: int = 64,
        num_blocks: int = 23,
        growth_channels: int = 32,
        attention: str | None = None,
        reduction: int = 16,
        residual_interp: bool = False,
        interp_mode: str | None = None,
    ) -> None:
        options = {
            "num_features": num_features,
            "num_blocks": num_blocks,
            "growth_channels": growth_channels,
            "attention": attention,
            "reduction": reduction,
        }
        super().__init__(spatial_dims, in_channels, out_channels, scale_factor, residual_interp, interp_mode, options)
        self.attention, self.reduction = attention, reduction
        dims = spatial_dims
        nf = num_features
        self.conv_first = conv_nd(dims, self.in_channels, nf, 3)
        self.body = nn.Sequential(*[RRDB(dims, nf, growth_channels) for _ in range(num_blocks)])
        self.conv_body = conv_nd(dims, nf, nf, 3)
        self.stages = upsample_stages(self.scale_factor)
        for i in range(len(self.stages)):
            self.add_module(f"conv_up{i + 1}", conv_nd(dims, nf, nf, 3))
        att = make_attention(attention, dims, nf, reduction)
        if att is None:
            self.conv_hr = conv_nd(dims, nf, nf, 3)
        else:
            self.se_hr = att
        self.conv_last = conv_nd(dims, nf, self.out_channels, 3)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        self._finish_generator()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feat, feats = self.forward_trunk(self.conv_first(x))
        hr = self.conv_hr(feat) if self.attention is None else self.se_hr(feat)
        return self.conv_last(self.lrelu(hr)), feats

    def forward_trunk(self, feat: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """From ``conv_first``'s output: the RRDBs, ``conv_body`` with the trunk residual and the upsampling stages
        (the HR feature map before ``conv_hr``/``se_hr``); and every RRDB's output."""
        body = feat
        feats = []
        for block in self.body:
            body = block(body)
            feats.append(body)
        feat = feat + self.conv_body(body)
        for i, stage in enumerate(self.stages):
            up = F.interpolate(feat, scale_factor=[float(f) for f in stage], mode="nearest")
            feat = self.lrelu(self.get_submodule(f"conv_up{i + 1}")(up))
        return feat, feats


class SliceWise(nn.Module):
    """Run a 2D generator on a 3D volume slice by slice across ``slice_axis``: ``(B, C, *S)`` in,
    ``(B, C_out, *(S * scale))`` out with ``scale`` the 2D factors on the other two axes and 1 on
    ``slice_axis`` (for thick-slice volumes: in-plane SR of every slice, as the MONAI Label app does).

    Args:
        network: a 2D medsr generator.
        slice_axis: spatial axis (0, 1 or 2) along which the volume is cut into 2D slices.
    """

    def __init__(self, network: SRGenerator, slice_axis: int = 2) -> None:
        super().__init__()
        if getattr(network, "spatial_dims", None) != 2:
            raise ValueError(f"SliceWise: needs a 2D generator, got {type(network).__name__}")
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"SliceWise: slice_axis must be 0, 1 or 2, got {slice_axis}")
        self.network, self.slice_axis = network, int(slice_axis)
        self.spatial_dims, self.in_channels = 3, network.in_channels
        factors = list(network.scale_factor)
        factors.insert(self.slice_axis, 1)
        self.scale_factor = tuple(factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Z)`` to the SR volume; slices go through the 2D network as one batch."""
        _check_input(x, 3, self.in_channels, "SliceWise")
        axis = 2 + self.slice_axis
        b, c = x.shape[:2]
        slices = x.movedim(axis, 1)  # (B, S, C, in-plane...)
        n = slices.shape[1]
        out = self.network(slices.reshape(b * n, c, *slices.shape[3:]))
        return out.reshape(b, n, *out.shape[1:]).movedim(1, axis)
