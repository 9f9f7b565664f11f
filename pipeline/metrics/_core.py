"""Internal engine: input checks and a chunked, separable-Gaussian SSIM map.

The SSIM map follows scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)``: five Gaussian-filtered maps (means, second moments) give the map, and the
score averages it over the windows that lie fully inside the image (the ``(win_size - 1) // 2`` crop).
Here only those "valid" windows are ever computed, one slab of the first spatial axis at a time, so the
extra memory stays a few times the volume's float32 size however large the volume is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "as_plain",
    "centre_valid",
    "check_finite",
    "valid_indicator",
    "check_data_range",
    "check_pair",
    "gaussian_taps",
    "iter_ssim_chunks",
    "resolve_layout",
]


def as_plain(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Return ``x`` as a plain ``torch.Tensor`` (MetaTensor metadata dropped, numpy wrapped without copy)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if hasattr(x, "as_tensor"):
        return x.as_tensor()
    return x


def check_data_range(data_range: float | None, name: str = "data_range") -> float:
    """Validate ``data_range`` (required, finite, > 0) and return it as a float."""
    if data_range is None:
        raise ValueError(
            f"{name} is required (the difference between the largest and smallest possible intensity, "
            "e.g. 1.0 for images scaled to [0, 1]); it is never inferred from the data"
        )
    try:
        value = float(data_range)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a positive number, got {data_range!r}") from err
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {data_range!r}")
    return value


def _affine(x: object) -> torch.Tensor | None:
    affine = getattr(x, "affine", None)
    if isinstance(affine, torch.Tensor):
        return affine.detach().cpu().to(torch.float64)
    return None


def check_pair(
    pred: torch.Tensor,
    target: torch.Tensor,
    pred_name: str = "pred",
    target_name: str = "target",
    check_affine: bool = True,
    check_finite_values: bool = True,
) -> None:
    """Raise ``ValueError`` when ``pred`` and ``target`` differ in shape or affine, or hold NaN/inf.

    ``check_finite_values=False`` skips the NaN scan (callers that detect NaN from their result instead).
    """
    for name, x in ((pred_name, pred), (target_name, target)):
        if not isinstance(x, (torch.Tensor, np.ndarray)):
            raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(
            f"{pred_name} shape {tuple(pred.shape)} does not match {target_name} shape {tuple(target.shape)}"
        )
    if check_affine:
        a, b = _affine(pred), _affine(target)
        if a is not None and b is not None and a.shape == b.shape and not torch.allclose(a, b, atol=1e-4):
            raise ValueError(
                f"{pred_name} affine does not match {target_name} affine (different grids):\n{a.numpy()}\nvs\n{b.numpy()}"
            )
    if check_finite_values:
        for name, x in ((pred_name, pred), (target_name, target)):
            check_finite(x, name)


def check_finite(x: torch.Tensor | np.ndarray, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` when ``x`` holds NaN or infinite values."""
    t = as_plain(x)
    if t.is_floating_point() or t.is_complex():
        n_bad = int((~torch.isfinite(t)).sum())
        if n_bad:
            n_nan = int(torch.isnan(t).sum())
            raise ValueError(
                f"{name} holds {n_nan} NaN and {n_bad - n_nan} infinite value(s); metrics need finite images"
            )


def resolve_layout(x: torch.Tensor, spatial_dims: int | None, name: str = "pred") -> tuple[int, bool]:
    """Return ``(spatial_dims, batched)`` for ``x``.

    With ``spatial_dims`` given, ``x.ndim == spatial_dims + 2`` is batched ``(B, C, *S)`` and
    ``spatial_dims + 1`` is unbatched ``(C, *S)``. Without it a MetaTensor's ``is_batch`` flag decides;
    otherwise 4D/5D tensors are batched 2D/3D and a 3D tensor is an unbatched 2D image ``(C, H, W)``
    (pass ``spatial_dims=3`` for an unbatched ``(C, D, H, W)`` volume).
    """
    ndim = x.ndim
    if spatial_dims is not None:
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if ndim == spatial_dims + 2:
            return spatial_dims, True
        if ndim == spatial_dims + 1:
            return spatial_dims, False
        raise ValueError(
            f"{name} has {ndim} dims {tuple(x.shape)}; with spatial_dims={spatial_dims} expected "
            f"{spatial_dims + 2} (B, C, *S) or {spatial_dims + 1} (C, *S)"
        )
    is_batch = getattr(x, "is_batch", None)
    if is_batch is True and ndim in (4, 5):
        return ndim - 2, True
    if is_batch is False and hasattr(x, "affine") and ndim in (3, 4):
        return ndim - 1, False
    if ndim in (4, 5):
        return ndim - 2, True
    if ndim == 3:
        return 2, False
    raise ValueError(
        f"{name} has shape {tuple(x.shape)}: expected (B, C, H, W), (B, C, D, H, W) or (C, H, W); "
        "pass spatial_dims for other layouts"
    )


def gaussian_taps(win_size: int = 11, sigma: float = 1.5) -> list[float]:
    """Normalised 1D Gaussian weights of length ``win_size`` (scipy.ndimage's kernel for that radius)."""
    if win_size < 1 or win_size % 2 != 1:
        raise ValueError(f"win_size must be a positive odd integer, got {win_size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = win_size // 2
    x = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).tolist()


def default_chunk(shape: Sequence[int], radius: int) -> int:
    """Planes of the first spatial axis per slab: the two slab buffers of 5 maps stay near 1.5x the image size
    (``benchmarks/bench_ssim.py`` measures the peak memory)."""
    depth = int(shape[0])
    return max(2 * radius, min(depth, (depth - 8 * radius) // 8))


def _ssim_from_maps(m: torch.Tensor, c1: float, c2: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """SSIM from the five filtered maps ``(ux, uy, uxx, uyy, uxy)`` along dim 0, in place (result in ``out``)."""
    ux, uy, uxx, uyy, uxy = m.unbind(0)
    uxuy = torch.mul(ux, uy, out=out) if out is not None else ux * uy
    ux.square_()
    uy.square_()
    uxx.sub_(ux)
    uyy.sub_(uy)
    uxy.sub_(uxuy)
    uxuy.mul_(2).add_(c1)
    uxy.mul_(2).add_(c2)
    uxuy.mul_(uxy)
    ux.add_(uy).add_(c1)
    uxx.add_(uyy).add_(c2)
    ux.mul_(uxx)
    return uxuy.div_(ux)


def _iter_torch(x, y, scale, taps, c1, c2, step) -> Iterator[tuple[int, torch.Tensor]]:
    """Portable path (any device): separable narrow-and-add filters on two preallocated slab buffers.

    ``a`` holds ``2r`` carried planes plus ``step`` new ones of the five maps; the in-plane filters ping-pong
    between ``a`` and ``b`` (only the interior each window fits in is written), the first-axis filter writes
    to ``b`` and SSIM is computed in place there. No allocation per slab, so memory stays flat.
    """
    r = len(taps) // 2
    depth, plane = x.shape[0], tuple(x.shape[1:])
    step = max(step, 2 * r)
    a = torch.empty((5, step + 2 * r, *plane), dtype=torch.float32, device=x.device)
    b = torch.empty_like(a)
    tmp = torch.empty((step, *(s - 2 * r for s in plane)), dtype=torch.float32, device=x.device)

    def filt(src: torch.Tensor, dst: torch.Tensor, dim: int) -> None:
        n = src.shape[dim] - 2 * r
        out = dst.narrow(dim, r, n)
        torch.mul(src.narrow(dim, 0, n), taps[0], out=out)
        for k in range(1, 2 * r + 1):
            out.add_(src.narrow(dim, k, n), alpha=taps[k])

    filled, out_row, i0 = 0, 0, 0
    while i0 < depth:
        i1 = min(depth, i0 + (step + 2 * r if filled == 0 else step))
        n_new = i1 - i0
        new = a[:, filled : filled + n_new]
        torch.mul(x[i0:i1], scale, out=new[0])
        torch.mul(y[i0:i1], scale, out=new[1])
        torch.mul(new[0], new[0], out=new[2])
        torch.mul(new[1], new[1], out=new[3])
        torch.mul(new[0], new[1], out=new[4])
        # in-plane passes ping-pong a -> b -> a ...; after filtering along an axis only its interior is valid
        region = [slice(None), slice(filled, filled + n_new), *(slice(None) for _ in plane)]
        src, dst = a, b
        for dim in range(2, x.ndim + 1):
            filt(src[tuple(region)], dst[tuple(region)], dim)
            region[dim] = slice(r, plane[dim - 2] - r)
            src, dst = dst, src
        if src is b:  # an odd number of passes (2D) leaves the result in b
            a[tuple(region)] = b[tuple(region)]
        filled += n_new
        i0 = i1
        n_out = filled - 2 * r
        if n_out < 1:
            continue
        inner = (slice(None), slice(0, filled), *(slice(r, s - r) for s in plane))
        filt(a[inner], b[inner], 1)
        m = b[(slice(None), slice(r, r + n_out), *(slice(r, s - r) for s in plane))]
        yield out_row, _ssim_from_maps(m, c1, c2, tmp[:n_out])
        out_row += n_out
        a[:, : 2 * r] = a[:, filled - 2 * r : filled]
        filled = 2 * r


def iter_ssim_chunks(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float,
    taps: Sequence[float],
    k1: float = 0.01,
    k2: float = 0.03,
    chunk: int | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(first_row, ssim_slab)`` over the valid SSIM map of two single-channel images.

    ``x`` and ``y`` are spatial-only tensors ``(*S)``. The valid map has shape ``S - 2r`` (``r`` the window
    radius); each slab covers consecutive rows of its first axis, starting at ``first_row``, and is only
    valid until the next slab is produced. Images are scaled by ``1 / data_range`` in float32 (SSIM is
    invariant to that with ``C = (K * R)^2``), which keeps the variance differences accurate.

    Args:
        x: first image.
        y: second image.
        data_range: intensity range.
        taps: 1D Gaussian weights.
        k1: luminance constant.
        k2: contrast constant.
        chunk: new planes per slab (``None``: about a quarter of the first axis).
    """
    r = len(taps) // 2
    if any(s < 2 * r + 1 for s in x.shape):
        raise ValueError(
            f"image shape {tuple(x.shape)} is smaller than the {2 * r + 1}-voxel SSIM window along some axis"
        )
    c1, c2 = k1**2, k2**2
    step = chunk or default_chunk(x.shape, r)
    yield from _iter_torch(x, y, 1.0 / data_range, taps, c1, c2, step)


def valid_indicator(region: torch.Tensor | np.ndarray, radius: int, rule: str = "inside") -> torch.Tensor:
    """Boolean map over the valid window centres (shape ``region.shape - 2r``) for a whole region.

    ``rule="inside"``: the whole ``(2r+1)^d`` window lies in ``region`` (windows crossing the image border are
    excluded too); ``rule="centre"``: the window's centre voxel lies in it. The inside rule counts region
    voxels per window with cumulative sums along each axis (a few passes whatever the window size), which is
    much cheaper than a min-filter over the window.
    """
    region = torch.as_tensor(region)
    if rule == "centre":
        return centre_valid(region, radius)
    size = 2 * radius + 1
    counts = region.to(torch.int32)
    for d in range(counts.ndim):
        n = counts.shape[d] - 2 * radius
        if n < 1:
            return torch.zeros([max(0, s - 2 * radius) for s in region.shape], dtype=torch.bool)
        csum = torch.cumsum(counts, dim=d, dtype=torch.int32)
        del counts
        counts = csum.narrow(d, 2 * radius, n).clone()  # window sum at k = csum[k + 2r] - csum[k - 1]
        counts.narrow(d, 1, n - 1).sub_(csum.narrow(d, 0, n - 1))
        del csum
    return counts == size**region.ndim


def centre_valid(region: torch.Tensor, radius: int) -> torch.Tensor:
    """Boolean map over the valid window centres: True where the window's centre voxel lies in ``region``."""
    sl = tuple(slice(radius, s - radius) for s in region.shape)
    return region.to(torch.bool)[sl]
