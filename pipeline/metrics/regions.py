"""Build evaluation regions from a binary mask and/or a label map.

Region names: ``whole`` (every voxel), ``inside`` (mask != 0), ``outside`` (mask == 0), ``boundary`` (voxels
whose Euclidean distance to the mask's surface is at most ``boundary_width`` on either side; in voxels or
in mm), and one region per label value of a label map (``label_<v>`` or a name from ``label_names``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from medsr.pipeline.metrics._core import as_plain, check_finite
from medsr.transforms.geometry import spacing_of

__all__ = ["DEFAULT_REGIONS", "make_regions"]

DEFAULT_REGIONS = ("whole", "inside", "outside")


def _spatial(x: torch.Tensor | np.ndarray, name: str, spatial_shape: Sequence[int] | None) -> np.ndarray:
    t = as_plain(x).detach().cpu()
    if t.is_floating_point():
        check_finite(t, name)
    a = t.numpy()
    if spatial_shape is not None:
        ss = tuple(int(s) for s in spatial_shape)
        if a.shape != ss:
            if a.ndim == len(ss) + 1 and a.shape[0] == 1 and a.shape[1:] == ss:
                a = a[0]
            else:
                raise ValueError(f"{name} has shape {a.shape}; expected the image's spatial shape {ss} or (1, *S)")
    elif a.ndim in (3, 4) and a.shape[0] == 1:  # channel-first (1, *S)
        a = a[0]
    return a


def make_regions(
    mask: torch.Tensor | np.ndarray | None = None,
    label: torch.Tensor | np.ndarray | None = None,
    *,
    include: Sequence[str] = DEFAULT_REGIONS,
    spatial_shape: Sequence[int] | None = None,
    boundary_width: float | None = None,
    units: Literal["voxel", "mm"] = "voxel",
    spacing: Sequence[float] | None = None,
    label_names: Mapping[int, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Return ``name -> bool tensor (*S)`` for the requested regions.

    Args:
        mask: binary mask ``(*S)`` or ``(1, *S)`` (non-zero = lesion/organ); needed for ``inside``, ``outside``
            and ``boundary``.
        label: label map ``(*S)`` or ``(1, *S)``; each value present becomes a region.
        include: which of ``whole``, ``inside``, ``outside``, ``boundary`` to build (``boundary`` is also
            added whenever ``boundary_width`` is given). Names missing a source (no mask) raise.
        spatial_shape: the image's spatial shape, checked against mask and label.
        boundary_width: ring half-width: a voxel is in the ring when its distance (centre to centre) to the
            nearest voxel on the other side of the mask surface is at most this; width 1 voxel gives the
            one-voxel layers just inside and just outside the surface.
            A ring thinner than the SSIM window (11 voxels) holds no full window: use ``rule="centre"``.
        units: ``"voxel"`` or ``"mm"`` for ``boundary_width``; mm uses ``spacing`` (or the mask's pixdim).
        spacing: voxel spacing in mm per axis for ``units="mm"``.
        label_names: names for label values (``{1: "tumour", 2: "healthy"}``); values named here but absent
            from the map still appear, as empty regions.

    Returns:
        An ordered dict of boolean tensors; empty regions are kept (metrics report them as absent).
    """
    if mask is None and label is None and spatial_shape is None:
        raise ValueError("make_regions needs a mask, a label map or spatial_shape")
    wanted = list(include)
    if boundary_width is not None and "boundary" not in wanted:
        wanted.append("boundary")
    unknown = [n for n in wanted if n not in ("whole", "inside", "outside", "boundary")]
    if unknown:
        raise ValueError(f"include has unknown region name(s) {unknown}; use whole, inside, outside, boundary")
    m = _spatial(mask, "mask", spatial_shape) != 0 if mask is not None else None
    lab = (
        _spatial(label, "label", spatial_shape if spatial_shape is not None else (m.shape if m is not None else None))
        if label is not None
        else None
    )
    shape = (
        tuple(spatial_shape) if spatial_shape is not None else (m.shape if m is not None else lab.shape)  # type: ignore[union-attr]
    )
    out: dict[str, torch.Tensor] = {}
    for name in wanted:
        if name == "whole":
            out["whole"] = torch.ones(shape, dtype=torch.bool)
            continue
        if m is None:
            raise ValueError(f"region {name!r} needs a mask, but mask is None")
        if name == "inside":
            out["inside"] = torch.from_numpy(m.copy())
        elif name == "outside":
            out["outside"] = torch.from_numpy(~m)
        else:
            if boundary_width is None or not boundary_width > 0:
                raise ValueError(f"region 'boundary' needs boundary_width > 0, got {boundary_width!r}")
            if units == "mm":
                sp = tuple(spacing) if spacing is not None else spacing_of(mask, m.ndim, default=None)
                if sp is None:
                    raise ValueError("boundary_width in mm needs spacing (or a MetaTensor mask with pixdim)")
                if len(sp) != m.ndim:
                    raise ValueError(f"spacing {sp} has {len(sp)} values for a {m.ndim}D mask")
            elif units == "voxel":
                sp = (1.0,) * m.ndim
            else:
                raise ValueError(f"units must be 'voxel' or 'mm', got {units!r}")
            out["boundary"] = torch.from_numpy(_ring(m, float(boundary_width), sp))
    if lab is not None:
        if np.issubdtype(lab.dtype, np.floating) and not np.all(np.equal(np.mod(lab, 1), 0)):
            raise ValueError("label must hold integer label values")
        values = sorted(int(v) for v in np.unique(lab))
        named = dict(label_names or {})
        for v in sorted(set(values) | set(named)):
            out[named.get(v, f"label_{v}")] = torch.from_numpy(lab == v)
    return out


def _ring(m: np.ndarray, width: float, spacing: Sequence[float]) -> np.ndarray:
    """Voxels at distance <= ``width`` from the surface of ``m`` (inside and outside)."""
    if not m.any() or m.all():
        return np.zeros(m.shape, dtype=bool)
    d_in = ndimage.distance_transform_edt(m, sampling=spacing)  # inside: distance to the nearest outside voxel
    d_out = ndimage.distance_transform_edt(~m, sampling=spacing)  # outside: distance to the nearest mask voxel
    return (m & (d_in <= width)) | (~m & (d_out <= width))
