"""Reconstruction: the 2D model along the slice axis in both orthogonal orientations, fused, on the output grid.

For each in-plane axis ``a`` the volume is cut into 2D slices ``(other in-plane axis, slice axis)`` (sagittal
and coronal views of an axial scan); the model upsamples the slice axis by ``s`` onto the working grid; the
two stacks are averaged (optionally with flips as test-time augmentation), resampled onto the output grid
(cubic B-spline, only when the target is not the working grid) and optionally corrected by back-projection
so that the output, degraded with the slice profile, matches the input.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from medsr.pipeline.selfsr.grid import SelfSRGrid, apply_axis, bspline_matrix, degrade_matrix, resample_axis

__all__ = ["predict_view", "reconstruct", "degrade_output", "back_project", "cubic_output", "lr_centres_on"]

_FLIPS = {0: [()], 1: [(), (-1,)], 2: [(), (-2,)], 4: [(), (-1,), (-2,), (-2, -1)]}


@torch.no_grad()
def predict_view(
    model: nn.Module,
    vol: torch.Tensor,
    grid: SelfSRGrid,
    view: int,
    tta: int = 1,
    chunk: int = 4,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The working-grid volume from one view: slices across in-plane axis ``grid.inplane_axes[view]``.

    Returns a tensor in the input's axis order with the slice axis of length ``n_lr · s``.
    """
    sa, ia = grid.slice_axis, grid.inplane_axes[view]
    other = grid.inplane_axes[1 - view]
    x = vol.permute(ia, other, sa).contiguous().float()  # (slices, rows, slice axis)
    flips = _FLIPS.get(int(tta) if tta else 0, _FLIPS[0]) if tta else [()]
    dev = next(model.parameters()).device
    outs = []
    for i in range(0, x.shape[0], chunk):
        b = x[i : i + chunk, None].to(dev).contiguous(memory_format=torch.channels_last)
        acc = None
        for f in flips:
            y = model(b.flip(f) if f else b)
            y = y.flip(f) if f else y
            acc = y if acc is None else acc + y
        outs.append((acc / len(flips))[:, 0].cpu())
        if progress is not None:
            progress(b.shape[0])
    y = torch.cat(outs)  # (slices, rows, n_lr * s)
    # back to the input's axis order
    order = [ia, other, sa]
    return y.permute(*np.argsort(order).tolist()).contiguous()


def lr_centres_on(grid: SelfSRGrid) -> np.ndarray:
    """Output-grid index coordinates of the LR slice centres."""
    j = np.arange(grid.shape[grid.slice_axis], dtype=np.float64)
    return (j + 0.5 - grid.offset) * grid.slice_spacing / grid.target_spacing - 0.5


def degrade_output(y: torch.Tensor, grid: SelfSRGrid, profile: str | np.ndarray) -> torch.Tensor:
    """``y`` on the output grid, degraded with the slice profile and sampled at the input's slices."""
    w = degrade_matrix(y.shape[grid.slice_axis], lr_centres_on(grid), grid.target_spacing, grid.thickness, profile)
    return apply_axis(y.double(), w, grid.slice_axis).to(y.dtype)


def cubic_output(vol: torch.Tensor, grid: SelfSRGrid) -> torch.Tensor:
    """The cubic B-spline baseline on the output grid (scipy ``map_coordinates(order=3, mode="nearest")``)."""
    return resample_axis(vol.double(), grid.slice_axis, grid.out_positions()).to(vol.dtype)


def back_project(
    y: torch.Tensor, vol: torch.Tensor, grid: SelfSRGrid, profile: str | np.ndarray, iters: int = 3, step: float = 1.0
) -> torch.Tensor:
    """Iterative back-projection: ``y += step · cubic(vol - D y)`` ``iters`` times (``D``: the slice profile)."""
    if iters <= 0:
        return y
    ax = grid.slice_axis
    w = degrade_matrix(y.shape[ax], lr_centres_on(grid), grid.target_spacing, grid.thickness, profile)
    up = bspline_matrix(vol.shape[ax], grid.out_positions())
    y = y.double()
    v = vol.double()
    for _ in range(iters):
        r = v - apply_axis(y, w, ax)
        y = y + step * apply_axis(r, up, ax)
    return y.to(vol.dtype)


def reconstruct(
    model: nn.Module,
    vol: torch.Tensor,
    grid: SelfSRGrid,
    profile: str | np.ndarray = "gaussian",
    tta: int = 1,
    bp_iters: int = 0,
    chunk: int = 4,
    views: tuple[int, ...] = (0, 1),
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The fused volume on the output grid (same intensity scale as ``vol``).

    Args:
        model: the trained generator (:func:`~medsr.pipeline.selfsr.model.build_model`; eval mode is set here).
        vol: the (normalised) scan, 3D.
        grid: its grid.
        profile: the slice profile (for back-projection).
        tta: flips per view as test-time augmentation (1, 2 or 4).
        bp_iters: back-projection iterations (0: off).
        chunk: slices per forward pass (small: the feature maps stay in the heap instead of fresh pages).
        views: which in-plane axes to cut across (both by default).
        progress: called with the number of slices done.
    """
    model.eval()
    acc = None
    for v in views:
        y = predict_view(model, vol, grid, v, tta=tta, chunk=chunk, progress=progress)
        acc = y if acc is None else acc + y
    y = acc / len(views)
    ax = grid.slice_axis
    n_work = vol.shape[ax] * grid.scale
    same = grid.n_out == n_work and abs(grid.target_spacing - grid.work_spacing) <= 1e-6 * grid.work_spacing
    if not same:  # working grid -> output grid (LR index u -> working index (u + 1/2) s - 1/2)
        pos = (grid.out_positions() + 0.5) * grid.scale - 0.5
        y = resample_axis(y.double(), ax, pos).float()
    return back_project(y, vol, grid, profile, iters=bp_iters)
