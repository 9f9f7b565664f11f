"""Interpolation baselines: LR up-sampled to the HR grid (nearest, linear, cubic spline, bicubic).

Grid convention: voxel centres as in ``F.interpolate(align_corners=False)`` / ``scipy.ndimage.zoom(grid_mode=True)``:
an LR voxel covers ``s`` HR voxels along an axis with scale ``s`` (per-axis, e.g. ``(1, 1, 4)`` for 4 mm slices
over a 1 mm grid), which is how area/thick-slice degradations place it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medsr.pipeline.metrics._core import as_plain, check_finite
from medsr.transforms.geometry import per_axis

__all__ = ["BASELINE_MODES", "resolve_scale", "upsample"]

BASELINE_MODES = ("nearest", "linear", "cubic", "bicubic")


def resolve_scale(
    lr_shape: Sequence[int], hr_shape: Sequence[int], scale_factor: int | float | Sequence[float] | None
) -> tuple[float, ...]:
    """Per-axis scale factor; checks ``lr_shape * scale == hr_shape`` (rounded) when a scale is given."""
    lr_shape, hr_shape = tuple(int(s) for s in lr_shape), tuple(int(s) for s in hr_shape)
    if len(lr_shape) != len(hr_shape):
        raise ValueError(f"lr spatial shape {lr_shape} and hr spatial shape {hr_shape} differ in dimensions")
    if scale_factor is None:
        return tuple(h / lo for h, lo in zip(hr_shape, lr_shape))
    try:
        sf = tuple(float(s) for s in per_axis(scale_factor, len(lr_shape), "scale_factor"))
    except ValueError:
        n = len(tuple(scale_factor))
        raise ValueError(f"scale_factor {scale_factor} has {n} values for {len(lr_shape)} spatial dims") from None
    if any(s <= 0 for s in sf):
        raise ValueError(f"scale_factor must be positive, got {scale_factor}")
    expected = tuple(int(round(lo * s)) for lo, s in zip(lr_shape, sf))
    if expected != hr_shape:
        raise ValueError(
            f"scale_factor {scale_factor}: lr shape {lr_shape} x scale = {expected}, but hr shape is {hr_shape}"
        )
    return sf


def upsample(
    lr: torch.Tensor,
    out_shape: Sequence[int],
    mode: str = "cubic",
) -> torch.Tensor:
    """Up-sample a channel-first LR image ``(C, *S)`` to ``out_shape`` (spatial) on the HR grid.

    Args:
        lr: LR image, ``(C, H, W)`` or ``(C, D, H, W)``.
        out_shape: HR spatial shape.
        mode: ``nearest``, ``linear`` (bi/trilinear), ``cubic`` (cubic B-spline, 2D and 3D, per-axis factors)
            or ``bicubic`` (Keys cubic convolution, 2D only).

    Returns:
        A float32 tensor ``(C, *out_shape)`` (plain tensor).
    """
    x = as_plain(lr).detach().cpu()
    check_finite(x, "lr")
    sd = x.ndim - 1
    out_shape = tuple(int(s) for s in out_shape)
    if sd not in (2, 3) or len(out_shape) != sd:
        raise ValueError(f"lr must be (C, H, W) or (C, D, H, W) matching out_shape {out_shape}; got {tuple(x.shape)}")
    x = x.to(torch.float32)
    if mode == "nearest":
        return F.interpolate(x[None], size=out_shape, mode="nearest-exact")[0]
    if mode == "linear":
        return F.interpolate(x[None], size=out_shape, mode="bilinear" if sd == 2 else "trilinear", align_corners=False)[
            0
        ]
    if mode == "bicubic":
        if sd != 2:
            raise ValueError("mode 'bicubic' is 2D only; use 'cubic' (cubic B-spline) for 3D")
        return F.interpolate(x[None], size=out_shape, mode="bicubic", align_corners=False)[0]
    if mode == "cubic":
        zoom = [o / i for o, i in zip(out_shape, x.shape[1:])]
        chans = [ndimage.zoom(c.numpy(), zoom, order=3, mode="reflect", grid_mode=True, output=np.float32) for c in x]
        out = torch.from_numpy(np.stack(chans))
        if tuple(out.shape[1:]) != out_shape:  # zoom rounds the output shape; crop/pad by edge to be exact
            out = F.interpolate(out[None], size=out_shape, mode="nearest-exact")[0]
        return out
    raise ValueError(f"unknown baseline mode {mode!r}; choose from {BASELINE_MODES}")
