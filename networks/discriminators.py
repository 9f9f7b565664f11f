"""Discriminators for SR GANs, 2D and 3D. All return raw logits (no sigmoid), so standard, relativistic
and least-squares GAN losses can all use them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import PatchDiscriminator as _MonaiPatchDiscriminator
from torch import nn

from medsr.networks.blocks import conv_nd, layer_type, make_attention
from medsr.networks.generators import _norm

__all__ = ["VGGDiscriminator", "PatchDiscriminator", "FeatureFusionDiscriminator"]


def _check(x: torch.Tensor, spatial_dims: int, in_channels: int, min_size: int, name: str) -> None:
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    if x.ndim != spatial_dims + 2 or x.shape[1] != in_channels:
        raise ValueError(
            f"{name}: expected input (B, {in_channels}, *S) with {spatial_dims} spatial dims, got {tuple(x.shape)}"
        )
    if min(x.shape[2:]) < min_size:
        raise ValueError(
            f"{name}: every spatial size must be >= {min_size} for its downsampling stages, got {tuple(x.shape[2:])}"
        )


class VGGDiscriminator(nn.Module):
    """VGG-style discriminator of SRGAN (Ledig et al., CVPR 2017) and ESRGAN (BasicSR's VGGStyleDiscriminator).

    ``conv0_0`` 3x3 + LeakyReLU(0.2), ``conv0_1`` 4x4 stride 2 (+``bn0_1``); then for stage ``k`` = 1 ..
    ``num_stages - 1``: ``convk_0`` 3x3 and ``convk_1`` 4x4 stride 2, each with BN (``bnk_0``, ``bnk_1``)
    when ``norm="batch"`` and LeakyReLU; widths ``nf, 2nf, 4nf, 8nf, 8nf``. An adaptive average pool to
    ``pool_size`` per axis (instead of BasicSR's fixed 128-pixel input; identical at 128 px, 5 stages,
    pool 4) makes any patch size work, then ``linear1`` (100) + LeakyReLU + ``linear2`` (1).
    Input ``(B, C, *S)`` with every spatial size >= ``2 ** num_stages``; output logits ``(B, 1)``.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        num_features: width of the first stage.
        norm: ``"batch"`` (SRGAN/ESRGAN) or ``None`` (no normalisation, biases instead).
        input_size: the HR patch size training uses (int or per-axis); only checked to be large enough.
        num_stages: stride-2 stages (5 in ESRGAN, 4 in SRGAN).
        pool_size: adaptive pooling output size per axis.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        num_features: int = 64,
        norm: str | None = "batch",
        input_size: int | Sequence[int] | None = None,
        num_stages: int = 5,
        pool_size: int = 4,
    ) -> None:
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"VGGDiscriminator: num_stages must be >= 1, got {num_stages}")
        self.spatial_dims, self.in_channels = spatial_dims, in_channels
        self.min_size = 2**num_stages
        if input_size is not None:
            sizes = (input_size,) * spatial_dims if isinstance(input_size, int) else tuple(input_size)
            if len(sizes) != spatial_dims or min(sizes) < self.min_size:
                raise ValueError(
                    f"VGGDiscriminator: input_size {input_size} must give {spatial_dims} sizes >= {self.min_size} "
                    f"(num_stages={num_stages} stride-2 stages)"
                )
        nf = num_features
        widths = [nf * min(2**k, 8) for k in range(num_stages)]
        bias = norm is None
        self.conv0_0 = conv_nd(spatial_dims, in_channels, nf, 3, bias=True)
        self.conv0_1 = conv_nd(spatial_dims, nf, nf, 4, stride=2, padding=1, bias=bias)
        self.bn0_1 = _norm(norm, spatial_dims, nf)
        cin = nf
        for k in range(1, num_stages):
            w = widths[k]
            self.add_module(f"conv{k}_0", conv_nd(spatial_dims, cin, w, 3, bias=bias))
            self.add_module(f"bn{k}_0", _norm(norm, spatial_dims, w))
            self.add_module(f"conv{k}_1", conv_nd(spatial_dims, w, w, 4, stride=2, padding=1, bias=bias))
            self.add_module(f"bn{k}_1", _norm(norm, spatial_dims, w))
            cin = w
        self.num_stages = num_stages
        self.pool = layer_type("adaptiveavg", spatial_dims)(pool_size)
        self.linear1 = nn.Linear(cin * pool_size**spatial_dims, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1)`` for images ``(B, C, *S)``."""
        _check(x, self.spatial_dims, self.in_channels, self.min_size, "VGGDiscriminator")
        feat = self.lrelu(self.conv0_0(x))
        feat = self.lrelu(self.bn0_1(self.conv0_1(feat)))
        for k in range(1, self.num_stages):
            feat = self.lrelu(self.get_submodule(f"bn{k}_0")(self.get_submodule(f"conv{k}_0")(feat)))
            feat = self.lrelu(self.get_submodule(f"bn{k}_1")(self.get_submodule(f"conv{k}_1")(feat)))
        feat = self.pool(feat).flatten(1)
        return self.linear2(self.lrelu(self.linear1(feat)))


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al., CVPR 2017) wrapping MONAI's ``PatchDiscriminator``.

    MONAI's network returns a list of intermediate maps whose last item is the logits; this wrapper returns
    the logit map ``(B, 1, *S')`` (``S'`` about ``S / 2**num_layers``), or the whole list with
    ``return_features=True`` (for feature-matching losses). The MONAI network is ``self.net``.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        num_features: width of the first layer (MONAI's ``channels``).
        num_layers: downsampling layers (MONAI's ``num_layers_d``).
        norm: MONAI norm name (``"BATCH"``, ``"INSTANCE"``) or ``None``.
        kernel_size: convolution kernel size.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        num_features: int = 64,
        num_layers: int = 3,
        norm: str | None = "BATCH",
        kernel_size: int = 4,
    ) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels = spatial_dims, in_channels
        self.min_size = 2**num_layers
        self.net = _MonaiPatchDiscriminator(
            spatial_dims=spatial_dims,
            channels=num_features,
            in_channels=in_channels,
            out_channels=1,
            num_layers_d=num_layers,
            kernel_size=kernel_size,
            norm=norm if norm is not None else "",
            bias=norm is None,
        )

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logit map ``(B, 1, *S')``; with ``return_features`` the list of every layer's output."""
        _check(x, self.spatial_dims, self.in_channels, self.min_size, "PatchDiscriminator")
        outs = self.net(x)
        if return_features:
            return outs
        return outs[-1]


class _ConvAttBlock(nn.Module):
    def __init__(
        self, spatial_dims: int, cin: int, cout: int, stride: int, norm: str | None, attention, reduction
    ) -> None:
        super().__init__()
        self.conv = conv_nd(spatial_dims, cin, cout, 3, stride=stride, bias=norm is None)
        self.norm = _norm(norm, spatial_dims, cout)
        self.act = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        att = make_attention(attention, spatial_dims, cout, reduction)
        self.att = att if att is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.att(self.act(self.norm(self.conv(x))))


class FeatureFusionDiscriminator(nn.Module):
    """Feature-fusion discriminator with improved SE (Bing et al., "Medical Image Super-Resolution Using
    Improved Generative Adversarial Networks", IEEE Access 2019; the retinal study).

    ``conv_first`` 3x3 + LeakyReLU; ``num_blocks`` conv-BN-LeakyReLU-SE blocks (``blocks.N``) with widths
    ``nf, 2nf, 2nf, 4nf, 4nf, 8nf, 8nf, 8nf`` and stride 2 in the even-numbered blocks (4 downsamplings for 8
    blocks); the last ``num_fused`` block outputs are aligned to the smallest map by adaptive average
    pooling, concatenated and fused by a 1x1 conv (``fuse``) + LeakyReLU; global average pooling; 1x1 convs
    ``head.0`` (to ``2 * 8nf``) + LeakyReLU + ``head.2`` (to 1). Returns logits ``(B, 1)`` (the paper's sigmoid
    belongs to the loss). Input every spatial size >= ``2 ** ceil(num_blocks / 2)``.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        num_features: base width ``nf``.
        num_blocks: conv-SE blocks.
        num_fused: how many of the last block outputs are fused.
        attention: ``"ise"`` (paper), ``"se"`` or ``None``.
        norm: ``"batch"`` or ``None``.
        reduction: SE reduction ratio.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        num_features: int = 64,
        num_blocks: int = 8,
        num_fused: int = 3,
        attention: str | None = "ise",
        norm: str | None = "batch",
        reduction: int = 16,
    ) -> None:
        super().__init__()
        if not 1 <= num_fused <= num_blocks:
            raise ValueError(
                f"FeatureFusionDiscriminator: num_fused must be in [1, num_blocks={num_blocks}], got {num_fused}"
            )
        self.spatial_dims, self.in_channels = spatial_dims, in_channels
        nf = num_features
        self.conv_first = conv_nd(spatial_dims, in_channels, nf, 3)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        blocks, widths, cin = [], [], nf
        for i in range(num_blocks):
            w = nf * min(2 ** ((i + 1) // 2), 8)
            blocks.append(_ConvAttBlock(spatial_dims, cin, w, 2 if i % 2 == 0 else 1, norm, attention, reduction))
            widths.append(w)
            cin = w
        self.blocks = nn.ModuleList(blocks)
        self.num_fused = num_fused
        self.min_size = 2 ** ((num_blocks + 1) // 2)
        fused = sum(widths[-num_fused:])
        top = widths[-1]
        self.fuse = conv_nd(spatial_dims, fused, top, 1)
        self.pool = layer_type("adaptiveavg", spatial_dims)(1)
        self.head = nn.Sequential(
            conv_nd(spatial_dims, top, 2 * top, 1),
            nn.LeakyReLU(0.2, inplace=True),
            conv_nd(spatial_dims, 2 * top, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1)`` for images ``(B, C, *S)``."""
        _check(x, self.spatial_dims, self.in_channels, self.min_size, "FeatureFusionDiscriminator")
        feat = self.lrelu(self.conv_first(x))
        maps = []
        for block in self.blocks:
            feat = block(feat)
            maps.append(feat)
        last = maps[-self.num_fused :]
        target = last[-1].shape[2:]
        pool_fn = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[self.spatial_dims]
        aligned = [pool_fn(m, target) for m in last]
        fused = self.lrelu(self.fuse(torch.cat(aligned, 1)))
        return self.head(self.pool(fused)).flatten(1)
