"""Shared helpers for medsr transforms: input checks, metadata, separable linear operators.

Geometry (per-axis arguments, spacing, LR/SR affines) lives in :mod:`medsr.transforms.geometry`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medsr.transforms.geometry import affine_of

#: More channels than this in a transform input almost always means a missing or trailing channel axis.
MAX_CHANNELS = 16

#: Relative tolerance when comparing spacings and affines.
SPACING_RTOL = 1e-4


def to_metatensor(img: Any, name: str = "image") -> MetaTensor:
    """Return ``img`` as a float MetaTensor (identity affine for plain arrays), checking its layout.

    Args:
        img: channel-first array ``(C, *spatial)`` with 2 or 3 spatial dims (numpy, torch or MetaTensor).
        name: argument name used in error messages.

    Raises:
        TypeError: ``img`` is not an array.
        ValueError: not channel-first with 2 or 3 spatial dims, or contains NaN/Inf.
    """
    if isinstance(img, MetaTensor):
        out = img
    elif isinstance(img, (torch.Tensor, np.ndarray)):
        out = MetaTensor(torch.as_tensor(np.ascontiguousarray(img) if isinstance(img, np.ndarray) else img))
    else:
        raise TypeError(f"{name}: expected a numpy array, torch tensor or MetaTensor, got {type(img).__name__}")
    check_channel_first(out, name)
    if not torch.is_floating_point(out):
        out = out.float()
    # a sum is NaN/Inf if any voxel is (fast); only then run the full elementwise check (also catches overflow)
    if not math.isfinite(float(out.as_tensor().sum())) and not torch.isfinite(out.as_tensor()).all():
        bad = int((~torch.isfinite(out.as_tensor())).sum())
        kind = "NaN" if torch.isnan(out.as_tensor()).any() else "Inf"
        raise ValueError(f"{name}: contains {kind} ({bad} non-finite voxels of {out.numel()}); clean the image first")
    return out


def check_channel_first(img: torch.Tensor | np.ndarray, name: str = "image") -> int:
    """Check that ``img`` is channel-first with 2 or 3 spatial dims and return the number of spatial dims."""
    shape = tuple(img.shape)
    if len(shape) not in (3, 4):
        raise ValueError(
            f"{name}: expected a channel-first array (C, H, W) or (C, H, W, D), got shape {shape} "
            f"({len(shape)} dims); add a channel axis with monai.transforms.EnsureChannelFirst"
        )
    if shape[0] > MAX_CHANNELS:
        raise ValueError(
            f"{name}: shape {shape} has {shape[0]} channels on axis 0; expected channel-first (C, *spatial) with "
            f"C <= {MAX_CHANNELS}. The channel axis looks missing or last: use monai.transforms.EnsureChannelFirst"
        )
    if isinstance(img, MetaTensor):
        sshape = img.meta.get("spatial_shape")
        if sshape is not None and len(np.atleast_1d(np.asarray(sshape))) == len(shape):
            # a loaded image whose meta says all dims are spatial: no channel axis was added
            raise ValueError(
                f"{name}: shape {shape} equals its meta 'spatial_shape' {tuple(np.asarray(sshape).tolist())}: "
                "no channel axis; use monai.transforms.EnsureChannelFirst"
            )
    return len(shape) - 1


def check_mask(mask: Any, img: MetaTensor, name: str = "mask", image_name: str = "image") -> MetaTensor:
    """Check that ``mask`` has the image's spatial shape and affine; return it as a MetaTensor."""
    if isinstance(mask, MetaTensor):
        m = mask
    else:
        m = MetaTensor(torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask))
        m.affine = affine_of(img)
    if m.ndim == img.ndim - 1:
        m = m.unsqueeze(0)
    if tuple(m.shape[1:]) != tuple(img.shape[1:]):
        raise ValueError(
            f"{name}: spatial shape {tuple(m.shape[1:])} does not match {image_name} {tuple(img.shape[1:])}"
        )
    if m.shape[0] not in (1, img.shape[0]):
        raise ValueError(f"{name}: {m.shape[0]} channels; expected 1 or {img.shape[0]} like {image_name}")
    a_img, a_m = affine_of(img), affine_of(m)
    if a_img.shape != a_m.shape or not torch.allclose(a_img, a_m, rtol=SPACING_RTOL, atol=1e-3):
        raise ValueError(
            f"{name}: affine does not match {image_name}:\n{name}:\n{a_m.numpy()}\n{image_name}:\n{a_img.numpy()}"
        )
    return m


def new_meta(img: torch.Tensor, affine: torch.Tensor, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``img``'s meta with a new affine and optional extra entries."""
    meta = copy.deepcopy(dict(img.meta)) if isinstance(img, MetaTensor) else {}
    meta.pop("affine", None)
    if extra:
        meta.update(copy.deepcopy(extra))
    return meta


def wrap(data: torch.Tensor, like: torch.Tensor, affine: torch.Tensor | None = None, extra: dict | None = None):
    """A MetaTensor with ``data``, ``like``'s meta and ``affine`` (default: ``like``'s affine)."""
    aff = affine_of(like) if affine is None else affine
    meta = new_meta(like, aff, extra)
    out = MetaTensor(data, affine=aff, meta=meta)
    return out


def apply_along(x: torch.Tensor, ops: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """Apply per-axis linear operators ``W_a`` (``n_out × n_in``) separably to ``x`` of shape ``(C, *spatial)``."""
    out = x
    for axis, w in enumerate(ops):
        if w is None:
            continue
        dim = axis + 1
        w = w.to(out.dtype)
        if dim == out.ndim - 1:
            out = out @ w.T
        else:
            out = torch.movedim(torch.movedim(out, dim, -1) @ w.T, -1, dim)
    return out.contiguous()
