"""The one geometry module of medsr: per-axis arguments, scale factors, voxel spacing, LR and SR affines.

Convention (shared by the degradation and pairing transforms, inference, metrics and the label app): along
an axis with integer factor ``f``, LR voxel ``j`` is the centre of the HR block ``[j f - 1/2, (j + 1) f - 1/2]``
(HR index units), so HR and LR cover the same physical extent. :func:`lr_affine` maps an HR affine to the
LR one; :func:`sr_affine` is its inverse (LR -> HR, ``spacing / f`` with the shift ``(1/f - 1) / 2``).

Light (torch and numpy, no MONAI import), so the upscale path imports it; the functions take MONAI
MetaTensors and the upscale path's :class:`~medsr.transforms._utils.ImageTensor` alike.
:class:`SqueezeSpatiald`, a MONAI ``MapTransform``, is built on first use.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from medsr.transforms._utils import ImageTensor, is_image, is_meta_tensor

__all__ = [
    "affine_of",
    "expand_size",
    "lr_affine",
    "lr_centres",
    "lr_size",
    "parse_scale",
    "per_axis",
    "spacing_of",
    "squeeze_spatial",
    "SqueezeSpatiald",  # noqa: F822 - built on first use (module __getattr__)
    "sr_affine",
]


def ensure_tuple_rep(tup: Any, dim: int) -> tuple[Any, ...]:
    """MONAI's ``ensure_tuple_rep``: a scalar repeated ``dim`` times, or a sequence of length ``dim`` as a tuple.

    Raises:
        ValueError: a sequence of another length.
    """
    if isinstance(tup, torch.Tensor):
        tup = tup.detach().cpu().numpy()
    if isinstance(tup, np.ndarray):
        tup = tup.tolist()
    if (hasattr(tup, "ndim") and tup.ndim == 0) or not isinstance(tup, Iterable) or isinstance(tup, (str, bytes)):
        return (tup,) * dim
    if len(tup) == dim:
        return tuple(tup)
    raise ValueError(f"Sequence must have length {dim}, got {len(tup)}.")


def affine_to_spacing(affine: torch.Tensor, r: int = 3) -> torch.Tensor:
    """MONAI's ``affine_to_spacing`` of a float64 tensor: the column norms of ``affine[:r, :r]``, zeros as 1."""
    a = torch.as_tensor(affine[:r, :r], dtype=torch.float64)
    spacing = torch.sqrt(torch.sum(a * a, dim=0))
    spacing[spacing == 0] = 1.0
    return spacing


def per_axis(value: Any, spatial_dims: int, name: str, allow_none: bool = True) -> tuple:
    """Broadcast a scalar to one value per spatial axis, or check that a sequence has one per axis.

    Built on :func:`ensure_tuple_rep` (MONAI's, without MONAI), with errors that name the argument.

    Args:
        value: a scalar (``None`` included unless ``allow_none`` is false) or a sequence of ``spatial_dims``.
        spatial_dims: the number of spatial axes.
        name: the argument's name for error messages.
        allow_none: accept ``None`` (broadcast as ``(None,) * spatial_dims``).

    Raises:
        ValueError: when ``value`` is ``None`` and not allowed, or a sequence of the wrong length.
    """
    if value is None and not allow_none:
        raise ValueError(f"{name}: must be given")
    try:
        return ensure_tuple_rep(value, spatial_dims)
    except ValueError:
        seq = tuple(value)
        raise ValueError(
            f"{name}: expected {spatial_dims} values (one per spatial axis), got {len(seq)}: {seq}"
        ) from None


def parse_scale(
    scale: Any, spatial_dims: int, name: str = "scale", allowed_dims: Sequence[int] | None = (2, 3)
) -> tuple[int, ...]:
    """Return the per-axis integer scale factor.

    Args:
        scale: an int (same factor on every axis), a sequence with one entry per spatial axis, or its text
            form as given on the command line (``"(1,1,4)"``, ``"4"``).
        spatial_dims: 2 or 3.
        name: the argument's name in error messages (``scale_factor`` for a network).
        allowed_dims: the dimensions accepted (``None``: any; a network block may be 1D).

    Raises:
        ValueError: when the value is not a positive integer per axis or has the wrong length.
    """
    if allowed_dims is not None and spatial_dims not in allowed_dims:
        raise ValueError(f"spatial_dims: expected {' or '.join(map(str, allowed_dims))}, got {spatial_dims!r}")
    value = scale
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{name}: cannot read {scale!r} (expected e.g. 4 or '(1,1,4)')") from err
    try:
        if isinstance(value, str) or value is None:
            raise ValueError(value)
        factors = per_axis(value, spatial_dims, name)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{name}: expected an int or {spatial_dims} values (spatial_dims={spatial_dims}), got {scale!r}"
        ) from err
    out = []
    for v in factors:
        try:
            ok = not isinstance(v, bool) and float(v) == int(v) and int(v) >= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{name}: every factor must be a positive integer, got {scale!r}")
        out.append(int(v))
    return tuple(out)


def expand_size(size: Any, spatial_dims: int, name: str = "size") -> tuple[int, ...]:
    """Expand an int (or its text) size to one positive int per spatial axis."""
    value = ast.literal_eval(size) if isinstance(size, str) else size
    try:
        sizes = per_axis(value, spatial_dims, name, allow_none=False)
        if any(isinstance(v, bool) or int(v) < 1 for v in sizes):
            raise ValueError(name)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name}: expected a positive int or {spatial_dims} positive ints, got {size!r}") from err
    return tuple(int(v) for v in sizes)


def affine_of(img: torch.Tensor) -> torch.Tensor:
    """The affine of ``img`` as float64 (identity 4×4 for images without one)."""
    if is_image(img):
        return torch.as_tensor(img.affine, dtype=torch.float64).clone()
    return torch.eye(4, dtype=torch.float64)


def spacing_of(img: Any, spatial_dims: int | None = None, default: float | None = 1.0) -> tuple[float, ...] | None:
    """Voxel spacing in mm per spatial axis, read from a MetaTensor's affine (``pixdim[:spatial_dims]``).

    Args:
        img: a channel-first image; a batched MetaTensor gives its first item's spacing.
        spatial_dims: number of spatial axes (default ``img.ndim - 1``, i.e. channel-first and unbatched).
        default: spacing per axis for an image without an affine (a plain tensor or array); ``None`` returns
            ``None`` for such an image instead (metrics then work in voxels).
    """
    sd = img.ndim - 1 if spatial_dims is None else int(spatial_dims)
    if not is_image(img):
        return None if default is None else (float(default),) * sd
    aff = torch.as_tensor(img.affine, dtype=torch.float64)
    if aff.ndim == 3:
        aff = aff[0]
    spacing = np.asarray(affine_to_spacing(aff, r=aff.shape[0] - 1))
    return tuple(float(s) for s in spacing[:sd])


def squeeze_spatial(img: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Drop singleton spatial axes of a channel-first image until it has ``spatial_dims`` of them.

    A 2D image stored as ``(X, Y, 1)`` (a 2D NIfTI, one DICOM file) or ``(X, 1, Z)`` becomes 2D. The data keeps
    its axis order; the affine's columns are reordered the same way with the dropped axes last, so it stays a
    4×4 affine whose first columns give the kept axes' spacing and direction (``pixdim[:spatial_dims]``).
    """
    sd = img.ndim - 1
    if sd <= int(spatial_dims):
        return img
    single = [a for a in range(sd) if img.shape[1 + a] == 1]
    drop = single[-(sd - int(spatial_dims)) :] if len(single) >= sd - int(spatial_dims) else None
    if drop is None:
        return img  # not squeezable: the dimension check that follows names the shape
    keep = [a for a in range(sd) if a not in drop]
    out = img.reshape(img.shape[0], *(img.shape[1 + a] for a in keep))
    if is_image(img):
        aff = affine_of(img)
        r = aff.shape[0] - 1
        order = keep + drop + list(range(sd, r))
        new = aff.clone()
        new[:r, :r] = aff[:r, order]
        meta = {k: v for k, v in img.meta.items() if k != "affine"}
        if is_meta_tensor(img):
            from monai.data import MetaTensor

            out = MetaTensor(out.as_tensor(), affine=new, meta=meta)
        else:
            out = ImageTensor(out, affine=new, meta=meta)
        out.meta["spatial_shape"] = np.asarray(out.shape[1:])
    return out


def _squeeze_spatiald() -> type:
    """Build :class:`SqueezeSpatiald` (a MONAI ``MapTransform``: MONAI is imported here, on first use)."""
    from monai.transforms import MapTransform

    class SqueezeSpatiald(MapTransform):
        """Dictionary version of :func:`squeeze_spatial` for ``keys`` (missing keys are skipped).

        A deterministic MONAI ``MapTransform``, so cached datasets cache it and what comes before it.
        """

        def __init__(self, keys: Sequence[str] | str, spatial_dims: int) -> None:
            super().__init__(keys, allow_missing_keys=True)
            self.spatial_dims = int(spatial_dims)

        def __call__(self, data: dict) -> dict:
            d = dict(data)
            for k in self.key_iterator(d):
                if isinstance(d[k], torch.Tensor):
                    d[k] = squeeze_spatial(d[k], self.spatial_dims)
            return d

    SqueezeSpatiald.__module__, SqueezeSpatiald.__qualname__ = __name__, "SqueezeSpatiald"
    return SqueezeSpatiald


def __getattr__(name: str) -> Any:
    """``SqueezeSpatiald`` and its aliases, built (importing MONAI) on first use (PEP 562)."""
    if name in ("SqueezeSpatiald", "SqueezeSpatialD", "SqueezeSpatialDict"):
        cls = globals().get("SqueezeSpatiald") or _squeeze_spatiald()
        globals().update(SqueezeSpatiald=cls, SqueezeSpatialD=cls, SqueezeSpatialDict=cls)
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def lr_affine(affine: torch.Tensor, factors: Sequence[float]) -> torch.Tensor:
    """Affine of a grid whose voxel ``j`` sits at the centre of HR region ``[j f - 1/2, (j + 1) f - 1/2]``.

    ``world(j) = A_hr @ (f j + (f - 1) / 2)``: the columns are scaled by ``f`` and the origin moves by half
    the block minus half a voxel along each axis (works for oblique affines). The inverse is :func:`sr_affine`.
    """
    a = affine.clone().to(torch.float64)
    r = a.shape[0] - 1
    shift = torch.zeros(r, dtype=torch.float64)
    for i, f in enumerate(factors):
        shift[i] = (float(f) - 1.0) / 2.0
    a[:r, r] = affine[:r, :r].to(torch.float64) @ shift + affine[:r, r].to(torch.float64)
    for i, f in enumerate(factors):
        a[:r, i] = affine[:r, i] * float(f)
    return a


def sr_affine(affine: Any, scale: Sequence[int] | int, spatial_dims: int | None = None) -> torch.Tensor:
    """Return the HR affine for an LR ``affine`` upscaled by ``scale``: the inverse of :func:`lr_affine`.

    Args:
        affine: ``(4, 4)`` or batched ``(B, 4, 4)`` LR affine (tensor or array).
        scale: int or one integer factor per spatial axis.
        spatial_dims: number of spatial axes (default: ``len(scale)``, or 3 for an int).

    Returns:
        a float64 tensor of the same shape as ``affine``.
    """
    aff = torch.as_tensor(np.asarray(affine), dtype=torch.float64)
    if aff.shape[-2:] != (4, 4):
        raise ValueError(f"affine: expected a (4, 4) matrix, got shape {tuple(aff.shape)}")
    if isinstance(scale, int):
        scale = per_axis(scale, spatial_dims or 3, "scale")
    factors = [float(s) for s in scale]
    if any(f <= 0 for f in factors) or len(factors) > 3:
        raise ValueError(f"scale: expected up to 3 positive factors, got {scale!r}")
    m = torch.eye(4, dtype=torch.float64)
    for ax, f in enumerate(factors):
        m[ax, ax] = 1.0 / f
        m[ax, 3] = (1.0 / f - 1.0) / 2.0
    return aff @ m


def lr_size(n: int, f: float) -> int:
    """Number of LR voxels of factor ``f`` that fit in ``n`` HR voxels."""
    return max(1, int(math.floor(n / f + 1e-6)))


def lr_centres(n: int, f: float) -> np.ndarray:
    """HR index coordinates of the LR voxel centres for factor ``f``."""
    j = np.arange(lr_size(n, f), dtype=np.float64)
    return (j + 0.5) * f - 0.5
