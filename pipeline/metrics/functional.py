"""Image-quality metrics with an explicit ``data_range``: PSNR, MSE, NRMSE, SSIM, MS-SSIM and region scores.

Layouts: batched ``(B, C, *S)`` gives one value per sample (a ``(B,)`` tensor; channels averaged),
unbatched ``(C, *S)`` gives a 0-d tensor. See :func:`medsr.pipeline.metrics._core.resolve_layout` for how
an ambiguous 4D tensor is read (pass ``spatial_dims`` to be explicit).

SSIM uses a separable Gaussian window (11 taps, sigma 1.5, K1 0.01, K2 0.03, population covariance) and
equals ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=R)``: the map is averaged over the windows that lie fully inside
the image. Region SSIM averages the same map over the windows that lie fully inside a region (the region
eroded by the window radius, ``rule="inside"``) or whose centre lies in it (``rule="centre"``), so voxels
outside a region never influence its score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from medsr.pipeline.metrics._core import (
    as_plain,
    check_data_range,
    check_finite,
    check_pair,
    gaussian_taps,
    iter_ssim_chunks,
    resolve_layout,
    valid_indicator,
)

__all__ = [
    "MS_SSIM_WEIGHTS",
    "RegionScore",
    "mse",
    "ms_ssim",
    "nrmse",
    "psnr",
    "region_mse",
    "region_psnr",
    "region_ssim",
    "ssim",
    "ssim_map",
]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Wang, Simoncelli and Bovik (2003) scale weights for MS-SSIM."""


@dataclass(frozen=True)
class RegionScore:
    """A metric over one region.

    Attributes:
        value: the score, or ``None`` when the region is absent (never NaN).
        count: windows (SSIM) or voxels (PSNR/MSE) averaged over.
        voxels: voxels in the region.
        reason: why the region is absent (``None`` when present).
    """

    value: float | None
    count: int
    voxels: int
    reason: str | None = None

    @property
    def present(self) -> bool:
        """True when the region had something to average over."""
        return self.value is not None

    def as_dict(self) -> dict:
        """A JSON-friendly dict (``inf`` kept as a float; serialise with care)."""
        return asdict(self)


RegionsArg = Mapping[str, torch.Tensor] | torch.Tensor | np.ndarray | None


# --------------------------------------------------------------------------------------------- helpers
def _split(pred, target, spatial_dims, check: bool = True):
    check_pair(pred, target, check_finite_values=check)
    p, t = as_plain(pred).detach(), as_plain(target).detach()
    sd, batched = resolve_layout(pred, spatial_dims)
    if not batched:
        p, t = p.unsqueeze(0), t.unsqueeze(0)
    return p, t, sd, batched


def _finish(values: torch.Tensor, batched: bool) -> torch.Tensor:
    return values if batched else values[0]


def _normalise_regions(regions: RegionsArg, spatial_shape: Sequence[int], batch: int) -> dict[str, torch.Tensor]:
    """Regions as ``name -> bool tensor (B, *S)``; a bare mask means whole/inside/outside."""
    if regions is None:
        regions = {"whole": torch.ones(tuple(spatial_shape), dtype=torch.bool)}
    elif isinstance(regions, (torch.Tensor, np.ndarray)):
        m = as_plain(regions)
        check_finite(m, "regions")
        m = m != 0
        regions = {"whole": torch.ones_like(m), "inside": m, "outside": ~m}
    if not isinstance(regions, Mapping) or not regions:
        raise TypeError("regions must be a non-empty mapping of name -> mask tensor, a mask tensor, or None")
    out: dict[str, torch.Tensor] = {}
    sshape = tuple(int(s) for s in spatial_shape)
    nd = len(sshape)
    for name, m in regions.items():
        if not isinstance(m, (torch.Tensor, np.ndarray)):
            raise TypeError(f"regions[{name!r}] must be a tensor, got {type(m).__name__}")
        t = as_plain(m)
        if t.is_floating_point():
            check_finite(t, f"regions[{name!r}]")
        t = (t if t.dtype == torch.bool else t != 0).cpu()
        shape = tuple(t.shape)
        if shape == sshape:
            t = t.unsqueeze(0).expand(batch, *sshape)
        elif len(shape) == nd + 1 and shape[1:] == sshape and shape[0] in (1, batch):
            t = t.expand(batch, *sshape)  # (1, *S) channel or (B, *S)
        elif len(shape) == nd + 2 and shape[2:] == sshape and shape[1] == 1 and shape[0] in (1, batch):
            t = t[:, 0].expand(batch, *sshape)
        else:
            raise ValueError(
                f"regions[{name!r}] has shape {shape}; expected the image's spatial shape {sshape}, "
                f"(1, *S) or ({batch}, 1, *S)"
            )
        out[str(name)] = t
    return out


def _absent(name: str, voxels: int, metric: str, radius: int | None = None, rule: str = "inside") -> str:
    if voxels == 0:
        return f"region {name!r} is empty (no voxel); {metric} not computed"
    if rule == "inside":
        return (
            f"region {name!r} has {voxels} voxel(s) but no {2 * radius + 1}-voxel SSIM window lies fully inside it "
            f"(and inside the image); use rule='centre' or a larger region"
        )
    return (
        f"region {name!r} has {voxels} voxel(s) but none is a valid window centre (all within {radius} of the border)"
    )


# ------------------------------------------------------------------------------------------ pixel metrics
def mse(pred: torch.Tensor, target: torch.Tensor, *, spatial_dims: int | None = None) -> torch.Tensor:
    """Mean squared error per sample (float64 accumulation).

    Args:
        pred: prediction, ``(B, C, *S)`` or ``(C, *S)``.
        target: reference, same shape (and affine for MetaTensors).
        spatial_dims: 2 or 3; inferred when omitted (see module docstring).

    Returns:
        ``(B,)`` tensor for batched input, 0-d tensor otherwise (float64).
    """
    p, t, _, batched = _split(pred, target, spatial_dims)
    d = (p.to(torch.float64) - t.to(torch.float64)).square_()
    return _finish(d.flatten(1).mean(1), batched)


def psnr(
    pred: torch.Tensor, target: torch.Tensor, data_range: float, *, spatial_dims: int | None = None
) -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(R^2 / MSE)`` in dB (``inf`` for identical images).

    Equals ``skimage.metrics.peak_signal_noise_ratio(target, pred, data_range=R)``.
    """
    r = check_data_range(data_range)
    m = mse(pred, target, spatial_dims=spatial_dims)
    return 10.0 * torch.log10(r * r / m)


def nrmse(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    normalization: Literal["euclidean", "min-max", "mean"] = "euclidean",
    spatial_dims: int | None = None,
) -> torch.Tensor:
    """Normalised RMSE, as ``skimage.metrics.normalized_root_mse(target, pred, normalization=...)``.

    ``euclidean`` divides by ``sqrt(mean(target^2))``, ``min-max`` by the target's range, ``mean`` by its mean.
    """
    p, t, _, batched = _split(pred, target, spatial_dims)
    t64 = t.to(torch.float64).flatten(1)
    rmse = (p.to(torch.float64).flatten(1) - t64).square().mean(1).sqrt()
    if normalization == "euclidean":
        denom = t64.square().mean(1).sqrt()
    elif normalization == "min-max":
        denom = t64.amax(1) - t64.amin(1)
    elif normalization == "mean":
        denom = t64.mean(1)
    else:
        raise ValueError(f"normalization must be 'euclidean', 'min-max' or 'mean', got {normalization!r}")
    if bool((denom == 0).any()):
        raise ValueError(f"nrmse: target has zero {normalization} norm; the normalised error is undefined")
    return _finish(rmse / denom, batched)


# -------------------------------------------------------------------------------------------------- SSIM
def _region_ssim_sums(
    x: torch.Tensor,
    y: torch.Tensor,
    regions: list[torch.Tensor | None],
    data_range: float,
    taps: Sequence[float],
    k1: float,
    k2: float,
    chunk: int | None,
    rule: str = "inside",
    names: tuple[str, str] = ("pred", "target"),
) -> tuple[list[float], list[int]]:
    """Sum and count of the valid SSIM map over each region's windows (``None`` = every valid window)."""
    rad = len(taps) // 2
    sums = [0.0] * len(regions)
    counts = [0] * len(regions)
    regs = [None if reg is None else torch.as_tensor(reg) for reg in regions]
    for row, s in iter_ssim_chunks(x, y, data_range, taps, k1, k2, chunk):
        n = s.shape[0]
        numpy_slab = isinstance(s, np.ndarray)
        for i, reg in enumerate(regs):
            if reg is None:
                sums[i] += float(s.sum(dtype=np.float64 if numpy_slab else torch.float64))
                counts[i] += s.size if numpy_slab else s.numel()
                continue
            # the windows of this slab's output rows see region rows [row, row + n + 2r)
            sl = valid_indicator(reg[row : row + n + 2 * rad], rad, rule)
            if numpy_slab:
                sl = sl.numpy()
                c = int(np.count_nonzero(sl))
                if c:
                    sums[i] += float(np.sum(s, where=sl, dtype=np.float64))
            else:
                c = int(sl.sum())
                if c:
                    sums[i] += float(s[sl.to(s.device)].sum(dtype=torch.float64))
            counts[i] += c
    if not all(math.isfinite(v) for v in sums):
        # NaN/inf in the inputs propagate into the sums: find which input and say so
        check_finite(x, names[0])
        check_finite(y, names[1])
    return sums, counts


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float,
    *,
    spatial_dims: int | None = None,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    chunk: int | None = None,
) -> torch.Tensor:
    """Mean SSIM over the windows inside the image, per sample (channels averaged).

    Args:
        pred: prediction, ``(B, C, *S)`` or ``(C, *S)``, 2D or 3D.
        target: reference, same shape.
        data_range: intensity range R (required; ``C1 = (k1 R)^2``, ``C2 = (k2 R)^2``).
        spatial_dims: 2 or 3; inferred when omitted.
        win_size: Gaussian window length (odd); 11 matches scikit-image for sigma 1.5.
        sigma: Gaussian sigma in voxels.
        k1: luminance constant.
        k2: contrast constant.
        chunk: planes of the first spatial axis per slab (``None``: keep extra memory near 3x the image).

    Returns:
        ``(B,)`` float64 tensor for batched input, 0-d otherwise.
    """
    r = check_data_range(data_range)
    p, t, _, batched = _split(pred, target, spatial_dims, check=False)
    taps = gaussian_taps(win_size, sigma)
    vals = []
    for b in range(p.shape[0]):
        per_c = []
        for c in range(p.shape[1]):
            s, n = _region_ssim_sums(p[b, c], t[b, c], [None], r, taps, k1, k2, chunk)
            per_c.append(s[0] / n[0])
        vals.append(sum(per_c) / len(per_c))
    return _finish(torch.tensor(vals, dtype=torch.float64), batched)


def _sym_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    """Pad every dim by ``r`` with scipy's 'reflect' (half-sample symmetric) rule."""
    for d in range(x.ndim):
        n = x.shape[d]
        if n < r:
            raise ValueError(f"cannot pad an axis of length {n} by {r} (image smaller than the SSIM window radius)")
        x = torch.cat([x.narrow(d, 0, r).flip(d), x, x.narrow(d, n - r, r).flip(d)], dim=d)
    return x


def ssim_map(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float,
    *,
    spatial_dims: int | None = None,
    mode: Literal["same", "valid"] = "same",
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """The local SSIM map, float32, with the input's layout.

    ``mode="same"`` keeps the input's spatial shape, extending the image by half-sample symmetric
    reflection at the border as scikit-image's ``full=True`` map does; ``mode="valid"`` returns only the
    centres whose window lies inside the image (shape ``S - (win_size - 1)``).
    """
    r = check_data_range(data_range)
    if mode not in ("same", "valid"):
        raise ValueError(f"mode must be 'same' or 'valid', got {mode!r}")
    p, t, _, batched = _split(pred, target, spatial_dims)
    taps = gaussian_taps(win_size, sigma)
    rad = win_size // 2
    outs = []
    for b in range(p.shape[0]):
        chans = []
        for c in range(p.shape[1]):
            x, y = p[b, c], t[b, c]
            if mode == "same":
                x, y = _sym_pad(x.to(torch.float32), rad), _sym_pad(y.to(torch.float32), rad)
            shape = [s - 2 * rad for s in x.shape]
            out = torch.empty(shape, dtype=torch.float32)
            for row, s in iter_ssim_chunks(x, y, r, taps, k1, k2, None):
                out[row : row + s.shape[0]] = torch.as_tensor(s)
            chans.append(out)
        outs.append(torch.stack(chans))
    res = torch.stack(outs)
    return res if batched else res[0]


def _ms_ssim_2d(x: torch.Tensor, y: torch.Tensor, r: float, taps, k1, k2, weights) -> float:
    """MS-SSIM of two single-channel 2D images (plain torch; 2D images are small)."""
    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
    w1 = torch.tensor(taps, dtype=torch.float64)
    kern = (w1[:, None] * w1[None, :])[None, None]
    xs, ys = x.to(torch.float64)[None, None], y.to(torch.float64)[None, None]
    cs_vals, ssim_last = [], 0.0
    for j, _ in enumerate(weights):
        maps = F.conv2d(torch.cat([xs, ys, xs * xs, ys * ys, xs * ys], 0), kern)
        ux, uy, uxx, uyy, uxy = maps[:, 0]
        vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
        cs = (2 * vxy + c2) / (vx + vy + c2)
        if j < len(weights) - 1:
            cs_vals.append(float(cs.mean()))
            xs, ys = F.avg_pool2d(xs, 2), F.avg_pool2d(ys, 2)
        else:
            lum = (2 * ux * uy + c1) / (ux * ux + uy * uy + c1)
            ssim_last = float((lum * cs).mean())
    value = max(ssim_last, 0.0) ** weights[-1]
    for cs_j, w in zip(cs_vals, weights[:-1]):
        value *= max(cs_j, 0.0) ** w
    return value


def ms_ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float,
    *,
    spatial_dims: int | None = None,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003), 2D only.

    Contrast-structure terms at the first ``len(weights) - 1`` scales and full SSIM at the last, each
    averaged over valid windows; 2x2 average pooling between scales; negative terms clamp to 0. Needs each
    side ``>= (win_size - 1) * 2**(len(weights) - 1) + 1`` (161 with the defaults; pass fewer ``weights``
    for small images).
    """
    r = check_data_range(data_range)
    p, t, sd, batched = _split(pred, target, spatial_dims)
    if sd != 2:
        raise ValueError(f"ms_ssim is defined for 2D images; got spatial_dims={sd} (shape {tuple(pred.shape)})")
    if not weights:
        raise ValueError("weights must hold at least one scale weight")
    need = (win_size - 1) * 2 ** (len(weights) - 1) + 1
    if min(p.shape[2:]) < need:
        raise ValueError(
            f"ms_ssim with {len(weights)} scales needs each side >= {need}, got spatial shape {tuple(p.shape[2:])}; "
            "pass fewer weights"
        )
    taps = gaussian_taps(win_size, sigma)
    vals = [
        sum(_ms_ssim_2d(p[b, c], t[b, c], r, taps, k1, k2, tuple(weights)) for c in range(p.shape[1])) / p.shape[1]
        for b in range(p.shape[0])
    ]
    return _finish(torch.tensor(vals, dtype=torch.float64), batched)


# ------------------------------------------------------------------------------------------ region scores
def region_ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    regions: RegionsArg,
    data_range: float,
    *,
    spatial_dims: int | None = None,
    rule: Literal["inside", "centre"] = "inside",
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    chunk: int | None = None,
) -> dict[str, RegionScore] | list[dict[str, RegionScore]]:
    """SSIM averaged over the windows of each region.

    Args:
        pred: prediction, ``(B, C, *S)`` or ``(C, *S)``.
        target: reference, same shape.
        regions: ``name -> mask`` (each ``(*S)``, ``(1, *S)``, ``(B, *S)`` or ``(B, 1, *S)``, non-zero = in), a
            single mask (gives ``whole``/``inside``/``outside``), or ``None`` (``whole`` only). Build them with
            :func:`medsr.pipeline.metrics.make_regions`.
        data_range: intensity range R (required).
        spatial_dims: 2 or 3; inferred when omitted.
        rule: ``"inside"`` averages the windows lying fully inside the region (the region eroded by the window
            radius; voxels outside never count), ``"centre"`` the windows centred in it. Either way only
            windows inside the image count, so the ``whole`` region equals :func:`ssim`.
        win_size: Gaussian window length.
        sigma: Gaussian sigma in voxels.
        k1: luminance constant.
        k2: contrast constant.
        chunk: planes per slab (memory/speed trade-off).

    Returns:
        ``name -> RegionScore`` for unbatched input, a list of those per sample for batched input. A region
        with nothing to average over has ``value=None`` and a ``reason``.
    """
    if rule not in ("inside", "centre"):
        raise ValueError(f"rule must be 'inside' or 'centre', got {rule!r}")
    r = check_data_range(data_range)
    p, t, _, batched = _split(pred, target, spatial_dims, check=False)
    regs = _normalise_regions(regions, p.shape[2:], p.shape[0])
    taps = gaussian_taps(win_size, sigma)
    rad = win_size // 2
    results = []
    for b in range(p.shape[0]):
        names = list(regs)
        masks = [regs[n][b] for n in names]
        voxels = [int(m.sum()) for m in masks]
        full = [None if v == m.numel() else m for v, m in zip(voxels, masks)]
        per_region = dict.fromkeys(names, 0.0)
        counts = dict.fromkeys(names, 0)
        for c in range(p.shape[1]):
            sums, cnts = _region_ssim_sums(p[b, c], t[b, c], full, r, taps, k1, k2, chunk, rule)
            for n, s, k in zip(names, sums, cnts):
                if k:
                    per_region[n] += s / k / p.shape[1]
                counts[n] = k
        out = {}
        for n, v in zip(names, voxels):
            if counts[n]:
                out[n] = RegionScore(per_region[n], counts[n], v)
            else:
                out[n] = RegionScore(None, 0, v, _absent(n, v, "SSIM", rad, rule))
        results.append(out)
    return results if batched else results[0]


def region_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    regions: RegionsArg,
    *,
    spatial_dims: int | None = None,
) -> dict[str, RegionScore] | list[dict[str, RegionScore]]:
    """Mean squared error over the voxels of each region (all channels); absent regions give ``None``."""
    p, t, _, batched = _split(pred, target, spatial_dims)
    regs = _normalise_regions(regions, p.shape[2:], p.shape[0])
    results = []
    for b in range(p.shape[0]):
        d = (p[b].to(torch.float64) - t[b].to(torch.float64)).square_().sum(0)  # sum over channels
        out = {}
        for n, m in regs.items():
            mb = m[b]
            v = int(mb.sum())
            if v == 0:
                out[n] = RegionScore(None, 0, 0, _absent(n, 0, "MSE"))
            else:
                out[n] = RegionScore(float(d[mb].sum()) / (v * p.shape[1]), v, v)
        results.append(out)
    return results if batched else results[0]


def region_psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    regions: RegionsArg,
    data_range: float,
    *,
    spatial_dims: int | None = None,
) -> dict[str, RegionScore] | list[dict[str, RegionScore]]:
    """PSNR over the voxels of each region: ``10 log10(R^2 / MSE_region)``; ``inf`` when identical there."""
    r = check_data_range(data_range)
    res = region_mse(pred, target, regions, spatial_dims=spatial_dims)

    def conv(d: dict[str, RegionScore]) -> dict[str, RegionScore]:
        out = {}
        for n, s in d.items():
            if s.value is None:
                out[n] = RegionScore(None, 0, s.voxels, s.reason.replace("MSE", "PSNR") if s.reason else None)
            else:
                v = math.inf if s.value == 0 else 10.0 * math.log10(r * r / s.value)
                out[n] = RegionScore(v, s.count, s.voxels)
        return out

    return [conv(d) for d in res] if isinstance(res, list) else conv(res)
