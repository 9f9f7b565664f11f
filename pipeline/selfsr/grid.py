"""Geometry of self-supervised thick-slice SR: the slice axis, the working and output grids, 1D operators.

Conventions (all along the slice axis, in index units of the grid named):

* LR slice ``j`` of spacing ``S`` covers ``[j - 1/2, j + 1/2]`` in LR index units; the scan's world extent
  along the slice axis is ``n_lr · S`` (from the outer edge of the first slice to that of the last), as
  :func:`medsr.transforms.lr_affine` says for a decimated grid.
* The network upsamples by an integer ``s = ceil(S / p)`` (``p``: the finest in-plane spacing) onto the
  *working grid* of spacing ``h = S / s``: working voxel ``k`` sits at LR index ``(k + 1/2) / s - 1/2``, i.e.
  the ``s`` working voxels of LR slice ``j`` tile that slice (pixel-shuffle convention). For an integer ratio
  ``S / p`` the working grid is the in-plane spacing; otherwise the training slices are resampled along the
  degraded axis from ``p`` to ``h`` (a slight upsampling) so that the network still learns an integer step.
* The *output grid* has exactly the target spacing ``t``: ``n_out = round(n_lr · S / t)`` voxels, centred on
  the scan's extent (voxel ``i`` at LR index ``-1/2 + o + (i + 1/2) t / S`` with ``o = (n_lr S - n_out t) /
  (2 S)``). When ``n_lr S / t`` is an integer (always for integer ratios) ``o = 0`` and the output has exactly
  the scan's world extent, with voxel 0 at the centre of the first output slice of the first LR slice; this
  is where ECLARE puts its grid too. Otherwise the extents differ by less than ``t`` and share their centre.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from scipy import ndimage

from medsr.transforms import profile_operator, spacing_of

__all__ = [
    "SelfSRGrid",
    "plan_grid",
    "bspline_matrix",
    "resample_axis",
    "degrade_matrix",
    "load_profile",
    "apply_axis",
]

#: relative tolerance under which two spacings count as equal
RTOL = 1e-3


@dataclass(frozen=True)
class SelfSRGrid:
    """Everything geometric about one self-supervised SR run (spacings in mm).

    Attributes:
        shape: input shape (3 axes).
        slice_axis: the thick-slice axis (largest spacing).
        inplane_axes: the two other axes, in order.
        spacing: input spacing per axis.
        inplane_spacing: per in-plane axis.
        slice_spacing: ``S``.
        thickness: slice thickness (profile FWHM / box width), mm.
        scale: integer network scale ``s``.
        work_spacing: ``h = S / s``.
        target_spacing: output spacing along the slice axis, ``t``.
        n_out: output slices.
        offset: ``o`` in LR index units (0 when the extents match exactly).
    """

    shape: tuple[int, int, int]
    slice_axis: int
    inplane_axes: tuple[int, int]
    spacing: tuple[float, float, float]
    inplane_spacing: tuple[float, float]
    slice_spacing: float
    thickness: float
    scale: int
    work_spacing: float
    target_spacing: float
    n_out: int
    offset: float

    @property
    def out_shape(self) -> tuple[int, int, int]:
        shape = list(self.shape)
        shape[self.slice_axis] = self.n_out
        return tuple(shape)

    def out_positions(self) -> np.ndarray:
        """LR index coordinates of the output slices."""
        i = np.arange(self.n_out, dtype=np.float64)
        return -0.5 + self.offset + (i + 0.5) * self.target_spacing / self.slice_spacing

    def work_positions(self) -> np.ndarray:
        """LR index coordinates of the working-grid slices (``n_lr · s`` of them)."""
        k = np.arange(self.shape[self.slice_axis] * self.scale, dtype=np.float64)
        return (k + 0.5) / self.scale - 0.5

    def out_affine(self, affine: np.ndarray | torch.Tensor) -> np.ndarray:
        """The output affine: the input's, with the slice column scaled by ``t / S`` and the origin moved to
        output voxel 0 (works for oblique affines)."""
        a = np.asarray(affine, dtype=np.float64).copy()
        ax = self.slice_axis
        u0 = float(self.out_positions()[0])
        a[:3, 3] = a[:3, 3] + a[:3, ax] * u0
        a[:3, ax] = a[:3, ax] * (self.target_spacing / self.slice_spacing)
        return a

    def to_dict(self) -> dict:
        return asdict(self)


def plan_grid(
    shape: Sequence[int],
    affine: np.ndarray | torch.Tensor,
    thickness: float | None = None,
    gap: float = 0.0,
    target_spacing: float | None = None,
    name: str = "image",
) -> SelfSRGrid:
    """Find the slice axis and the grids for a 3D scan; one-line errors for inputs with nothing to do.

    Args:
        shape: spatial shape (3 values).
        affine: 4×4 voxel-to-world affine.
        thickness: slice thickness in mm (profile FWHM / box width); default ``slice spacing - gap``.
        gap: slice gap in mm (used only when ``thickness`` is not given).
        target_spacing: output spacing along the slice axis (default: the finest in-plane spacing).
        name: used in error messages.

    Raises:
        ValueError: not 3D, isotropic ("nothing to do"), a thickness below the in-plane spacing, bad gap/target.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"{name}: expected a 3D volume, got {len(shape)}D shape {shape}")
    a = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    spacing = spacing_of(MetaTensor(torch.zeros((1, 1, 1, 1)), affine=a))
    ax = int(np.argmax(spacing))
    inplane = tuple(i for i in range(3) if i != ax)
    p = min(spacing[i] for i in inplane)
    big = spacing[ax]
    if big <= max(spacing[i] for i in inplane) * (1 + RTOL):
        sp = " x ".join(f"{s:g}" for s in spacing)
        raise ValueError(f"{name}: spacing {sp} mm is isotropic (no thick-slice axis): nothing to do")
    if shape[ax] < 2:
        raise ValueError(f"{name}: only {shape[ax]} slice along the slice axis {ax}; need at least 2")
    if gap < 0:
        raise ValueError(f"gap: must be >= 0 mm, got {gap}")
    if thickness is None:
        if gap >= big:
            raise ValueError(f"gap: {gap:g} mm must be smaller than the slice spacing {big:g} mm")
        thickness = big - gap
    thickness = float(thickness)
    if thickness < p * (1 - RTOL):
        raise ValueError(
            f"thickness: {thickness:g} mm is smaller than the in-plane spacing {p:g} mm; "
            "a slice thinner than a pixel cannot be learned from the in-plane resolution"
        )
    s = max(2, math.ceil(big / p - 1e-6))
    h = big / s
    t = float(p if target_spacing is None else target_spacing)
    if not t > 0:
        raise ValueError(f"target_spacing: must be > 0 mm, got {t}")
    if t > big * (1 + RTOL):
        raise ValueError(f"target_spacing: {t:g} mm is coarser than the slice spacing {big:g} mm: nothing to do")
    n_lr = shape[ax]
    n_out = max(1, int(round(n_lr * big / t)))
    offset = (n_lr * big - n_out * t) / (2 * big)
    return SelfSRGrid(
        shape=shape,
        slice_axis=ax,
        inplane_axes=inplane,  # type: ignore[arg-type]
        spacing=tuple(float(x) for x in spacing),  # type: ignore[arg-type]
        inplane_spacing=tuple(float(spacing[i]) for i in inplane),  # type: ignore[arg-type]
        slice_spacing=float(big),
        thickness=thickness,
        scale=int(s),
        work_spacing=float(h),
        target_spacing=t,
        n_out=n_out,
        offset=float(offset),
    )


@lru_cache(maxsize=64)
def _bspline_matrix(n_in: int, positions: tuple[float, ...]) -> np.ndarray:
    eye = np.eye(n_in, dtype=np.float64)
    coords = np.asarray(positions, dtype=np.float64)
    out = np.empty((len(coords), n_in), dtype=np.float64)
    for j in range(n_in):
        out[:, j] = ndimage.map_coordinates(eye[j], coords[None, :], order=3, mode="nearest", prefilter=True)
    return out


def bspline_matrix(n_in: int, positions: Sequence[float] | np.ndarray) -> torch.Tensor:
    """Cubic B-spline interpolation (scipy ``map_coordinates(order=3, mode="nearest")``) as a matrix.

    Row ``i`` holds the weights with which the ``n_in`` samples give the value at index ``positions[i]``.
    """
    return torch.from_numpy(_bspline_matrix(int(n_in), tuple(np.round(np.asarray(positions, float), 9).tolist())))


def apply_axis(x: torch.Tensor, w: torch.Tensor, dim: int) -> torch.Tensor:
    """Apply the ``(n_out, n_in)`` matrix ``w`` along dimension ``dim`` of ``x``."""
    w = w.to(dtype=x.dtype, device=x.device)
    if dim in (-1, x.ndim - 1):
        return x @ w.T
    return torch.movedim(torch.movedim(x, dim, -1) @ w.T, -1, dim).contiguous()


def resample_axis(x: torch.Tensor, dim: int, positions: Sequence[float] | np.ndarray) -> torch.Tensor:
    """Cubic B-spline resampling of ``x`` along ``dim`` at index ``positions`` (the baseline interpolator)."""
    return apply_axis(x, bspline_matrix(x.shape[dim], positions), dim)


def load_profile(profile: str) -> str | np.ndarray:
    """``"gaussian"``/``"box"`` as they are, or a profile file read as an array.

    A file (``.npy``, or text: ``.txt``/``.csv``) holds either one column of weights sampled every 0.1 mm and
    centred on the slice, or two columns ``position_mm, weight``. It is returned as a ``(m, 2)`` array.
    """
    if profile in ("gaussian", "box"):
        return profile
    path = Path(profile)
    if not path.is_file():
        raise ValueError(f"profile: expected 'gaussian', 'box' or a profile file, got {profile!r} (no such file)")
    arr = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 1:
        pos = (np.arange(arr.size) - (arr.size - 1) / 2) * 0.1
        arr = np.stack([pos, arr], axis=1)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 2 or not np.all(np.diff(arr[:, 0]) > 0):
        raise ValueError(f"profile {profile!r}: expected weights or increasing 'position_mm, weight' rows")
    if arr[:, 1].sum() <= 0:
        raise ValueError(f"profile {profile!r}: the weights sum to {arr[:, 1].sum():g}; expected a positive profile")
    return arr


def degrade_matrix(
    n: int, centres: np.ndarray, spacing: float, thickness: float, profile: str | np.ndarray
) -> torch.Tensor:
    """The slice-profile operator ``(len(centres), n)`` on a grid of ``spacing`` mm: each row is the profile of
    ``thickness`` mm (FWHM for ``"gaussian"``, width for ``"box"``; a table is used as given) centred at
    ``centres`` (index units), normalised to sum 1."""
    centres = np.asarray(centres, dtype=np.float64)
    if isinstance(profile, str):
        return profile_operator(n, centres, thickness / spacing, profile)
    d = (np.arange(n, dtype=np.float64)[None, :] - centres[:, None]) * spacing
    w = np.interp(d, profile[:, 0], profile[:, 1], left=0.0, right=0.0)
    total = w.sum(axis=1, keepdims=True)
    if np.any(total <= 1e-12):
        raise ValueError(f"profile table is narrower than one voxel of {spacing:g} mm")
    return torch.from_numpy(w / total)
