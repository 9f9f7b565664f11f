"""Shared helpers for medsr transforms: input checks, metadata, separable linear operators, and the light
image container of the upscale path.

Light on purpose: torch and numpy only, MONAI imported inside the functions that build a MetaTensor. The
shipped-model path of ``medsr upscale`` and ``medsr.upscale`` (:mod:`medsr.pipeline.inference`) carries its
images as :class:`ImageTensor` (a tensor with ``affine`` and ``meta``, what it reads of a MetaTensor) and
normalises them with :func:`percentile_normalize`, the arithmetic of
:class:`medsr.transforms.intensity.PercentileNormalize`, so it never imports MONAI (~430 modules, seconds of
start-up). Geometry (per-axis arguments, spacing, LR/SR affines) lives in :mod:`medsr.transforms.geometry`.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

#: the key of ``meta`` under which the intensity normalizations store their parameters
NORM_KEY = "medsr_norm"


class ImageTensor(torch.Tensor):
    """A channel-first image tensor with an ``affine`` (float64 4×4, as MONAI's ``MetaTensor.affine``) and a
    ``meta`` dict: the two attributes of a MetaTensor that the upscale path reads, without importing MONAI.

    Operations on it return plain tensors (nothing propagates metadata behind the code's back): whatever makes
    a new image says which affine it has (:func:`image_like`).

    Args:
        data: the image (any array torch accepts).
        affine: its affine (default: the identity).
        meta: other metadata (``source_format``, ``medsr_norm``, ...); copied shallowly.
    """

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __new__(cls, data: Any, affine: Any = None, meta: Mapping[str, Any] | None = None) -> ImageTensor:
        t = torch.as_tensor(data)
        out = t.as_subclass(cls)
        out.meta = {k: v for k, v in dict(meta or {}).items() if k != "affine"}
        out.affine = torch.eye(4, dtype=torch.float64) if affine is None else affine
        return out

    @property
    def affine(self) -> torch.Tensor:
        """The affine, a float64 tensor (kept in ``meta["affine"]``, as a MetaTensor keeps it)."""
        return self.meta["affine"]

    @affine.setter
    def affine(self, value: Any) -> None:
        self.meta["affine"] = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value,
                                              dtype=torch.float64, device="cpu")  # fmt: skip

    def as_tensor(self) -> torch.Tensor:
        """The data as a plain tensor (shares memory)."""
        return self.as_subclass(torch.Tensor)

    def __deepcopy__(self, memo: dict) -> ImageTensor:
        return ImageTensor(self.as_tensor().clone(), self.affine.clone(), copy.deepcopy(self.meta, memo))

    def __reduce_ex__(self, protocol: int) -> Any:
        return ImageTensor, (self.as_tensor().clone(), self.affine.clone(), dict(self.meta))


def is_meta_tensor(x: Any) -> bool:
    """True for a MONAI ``MetaTensor`` (without importing MONAI: one exists only once MONAI is imported)."""
    mod = sys.modules.get("monai.data.meta_tensor")
    return mod is not None and isinstance(x, mod.MetaTensor)


def is_image(x: Any) -> bool:
    """True for an image that carries an affine: an :class:`ImageTensor` or a MONAI ``MetaTensor``."""
    return isinstance(x, ImageTensor) or is_meta_tensor(x)


def plain(x: torch.Tensor) -> torch.Tensor:
    """The data of an image (MetaTensor or :class:`ImageTensor`) as a plain tensor; other tensors as they are."""
    return x.as_tensor() if is_image(x) else x


def as_image(x: Any) -> Any:
    """``x`` when it is an image (:func:`is_image`); else ``x`` as a MetaTensor once MONAI is imported (the
    bundles' path, as before), else as an :class:`ImageTensor`."""
    if is_image(x):
        return x
    if "monai.data.meta_tensor" in sys.modules:
        from monai.data import MetaTensor

        return MetaTensor(x)
    return ImageTensor(x)


def image_like(data: torch.Tensor, like: Any, affine: Any = None, meta: Mapping[str, Any] | None = None) -> Any:
    """``data`` as an image of ``like``'s kind: a MetaTensor when ``like`` is one (MONAI is then already
    imported), else an :class:`ImageTensor`; ``affine`` defaults to ``like``'s (identity for a plain tensor),
    ``meta`` to none."""
    if affine is None:
        affine = like.affine if is_image(like) else torch.eye(4, dtype=torch.float64)
    if is_meta_tensor(like):
        from monai.data import MetaTensor

        return MetaTensor(plain(data), affine=affine, meta=dict(meta or {}))
    return ImageTensor(plain(data), affine=affine, meta=meta)


#: More channels than this in a transform input almost always means a missing or trailing channel axis.
MAX_CHANNELS = 16

#: Relative tolerance when comparing spacings and affines.
SPACING_RTOL = 1e-4


def to_metatensor(img: Any, name: str = "image") -> Any:
    """Return ``img`` as a float MetaTensor (identity affine for plain arrays), checking its layout.

    Args:
        img: channel-first array ``(C, *spatial)`` with 2 or 3 spatial dims (numpy, torch or MetaTensor).
        name: argument name used in error messages.

    Raises:
        TypeError: ``img`` is not an array.
        ValueError: not channel-first with 2 or 3 spatial dims, or contains NaN/Inf.
    """
    from monai.data import MetaTensor

    if isinstance(img, MetaTensor):
        out = img
    elif isinstance(img, (torch.Tensor, np.ndarray)):
        out = MetaTensor(torch.as_tensor(np.ascontiguousarray(img) if isinstance(img, np.ndarray) else img))
    else:
        raise TypeError(f"{name}: expected a numpy array, torch tensor or MetaTensor, got {type(img).__name__}")
    return check_image(out, name)


def check_image(out: Any, name: str = "image") -> Any:
    """Check that the image ``out`` (MetaTensor or :class:`ImageTensor`) is channel-first with 2 or 3 spatial
    dims and finite; return it as float (the checks of :func:`to_metatensor`, without MONAI)."""
    check_channel_first(out, name)
    if not torch.is_floating_point(out):
        out = (
            ImageTensor(out.as_tensor().float(), out.affine, out.meta) if isinstance(out, ImageTensor) else out.float()
        )
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
    if is_image(img):
        sshape = img.meta.get("spatial_shape")
        if sshape is not None and len(np.atleast_1d(np.asarray(sshape))) == len(shape):
            # a loaded image whose meta says all dims are spatial: no channel axis was added
            raise ValueError(
                f"{name}: shape {shape} equals its meta 'spatial_shape' {tuple(np.asarray(sshape).tolist())}: "
                "no channel axis; use monai.transforms.EnsureChannelFirst"
            )
    return len(shape) - 1


def check_mask(mask: Any, img: Any, name: str = "mask", image_name: str = "image") -> Any:
    """Check that ``mask`` has the image's spatial shape and affine; return it as a MetaTensor."""
    from monai.data import MetaTensor

    from medsr.transforms.geometry import affine_of

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
    meta = copy.deepcopy(dict(img.meta)) if is_image(img) else {}
    meta.pop("affine", None)
    if extra:
        meta.update(copy.deepcopy(extra))
    return meta


def wrap(data: torch.Tensor, like: torch.Tensor, affine: torch.Tensor | None = None, extra: dict | None = None):
    """A MetaTensor with ``data``, ``like``'s meta and ``affine`` (default: ``like``'s affine); an
    :class:`ImageTensor` when ``like`` is one."""
    from medsr.transforms.geometry import affine_of

    aff = affine_of(like) if affine is None else affine
    meta = new_meta(like, aff, extra)
    if isinstance(like, ImageTensor):
        return ImageTensor(data, affine=aff, meta=meta)
    from monai.data import MetaTensor

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


# ------------------------------------------------------------------------------------- intensity arithmetic
def percentile_values(vals: torch.Tensor, q: Sequence[float]) -> list[float]:
    """The ``q`` percentiles of ``vals`` as MONAI's ``percentile`` computes them for a tensor: ``torch.quantile``
    up to a million values, else ``np.percentile`` (pytorch#64947), rounded to the tensor's dtype."""
    q_np = np.asarray(q, dtype=np.float64)
    if ((q_np < 0) | (q_np > 100)).any():
        raise ValueError(f"q values must be in [0, 100], got values: {q}.")
    if vals.numel() > 1_000_000:
        result = torch.as_tensor(np.percentile(vals.detach().cpu().numpy(), q_np), dtype=vals.dtype)
    else:
        result = torch.quantile(vals, torch.as_tensor(q_np / 100.0, dtype=vals.dtype, device=vals.device))
    return [float(v) for v in np.asarray(result.cpu()).reshape(-1)]


def percentile_params(
    vals: torch.Tensor, lower: float, upper: float, b_min: float, b_max: float
) -> tuple[float, float, dict[str, float]]:
    """``(scale, offset, {"lower_value", "upper_value"})`` mapping the ``lower``/``upper`` percentiles of
    ``vals`` to ``b_min``/``b_max`` (scale 1 for a flat image)."""
    lo, hi = percentile_values(vals, [lower, upper])
    span = hi - lo
    scale = (b_max - b_min) / span if span > 1e-12 else 1.0
    return scale, b_min - lo * scale, {"lower_value": lo, "upper_value": hi}


def linear_map(
    x: torch.Tensor, chans: Sequence[tuple[float, float, Any]], clip: bool, b_min: float | None, b_max: float | None
) -> torch.Tensor:
    """``scale · x + offset`` per channel (``chans``: one ``(scale, offset, ...)`` per channel), clipped to
    ``[b_min, b_max]`` with ``clip``."""
    scale = torch.tensor([c[0] for c in chans], dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    offset = torch.tensor([c[1] for c in chans], dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    y = x * scale + offset
    if clip and b_min is not None and b_max is not None:
        y = y.clamp(min(b_min, b_max), max(b_min, b_max))
    return y


def norm_info(kind: str, x: torch.Tensor, chans: Sequence[tuple[float, float, dict]], clip: bool) -> dict[str, Any]:
    """The ``meta["medsr_norm"]`` record of a linear normalization of ``x`` (what inverts it, the input range)."""
    info: dict[str, Any] = {
        "kind": kind,
        "scale": [float(c[0]) for c in chans],
        "offset": [float(c[1]) for c in chans],
        "clip": int(bool(clip)),
        "input_min": float(x.min()) if x.numel() else 0.0,  # the input's range: outputs may be clipped to it
        "input_max": float(x.max()) if x.numel() else 0.0,
    }
    for k in chans[0][2]:
        info[k] = [float(c[2][k]) for c in chans]
    return info


def percentile_normalize(
    img: Any, lower: float = 0.5, upper: float = 99.5, b_min: float = 0.0, b_max: float = 1.0, clip: bool = True
) -> Any:
    """:class:`medsr.transforms.intensity.PercentileNormalize` (over all channels, no mask) without MONAI: the
    same values and ``meta["medsr_norm"]``; returns an image of ``img``'s kind (:func:`wrap`)."""
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"lower/upper: need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
    img = check_image(img if is_image(img) else ImageTensor(img))
    x = plain(img)
    chans = [percentile_params(x.reshape(-1), lower, upper, b_min, b_max)] * img.shape[0]
    y = linear_map(x, chans, clip, b_min, b_max)
    return wrap(y, img, extra={NORM_KEY: norm_info("percentile", x, chans, clip)})


def _per_channel(value: Any, img: torch.Tensor, batched: bool) -> torch.Tensor:
    """Broadcast stored per-channel values (floats, list, or collated tensors) against ``img``."""
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in value], dim=-1)  # (B, C)
        if not batched:
            t = t[0]
    else:
        t = torch.as_tensor(value, dtype=torch.float64)
    lead = 2 if batched else 1
    if t.ndim == 0:
        return t.reshape([1] * img.ndim)
    if batched and t.ndim == 1:
        t = t.reshape(1, -1)
    return t.reshape(*t.shape, *([1] * (img.ndim - t.ndim))) if t.ndim == lead else t


def invert_normalization(img: torch.Tensor, params: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Map normalized intensities back to original units: ``x = (y - offset) / scale``.

    Args:
        img: normalized image ``(C, *spatial)`` or batch ``(B, C, *spatial)`` (a batch needs collated params).
        params: the ``meta["medsr_norm"]`` dict (default: read from ``img.meta``). Collated params (lists of
            tensors of length B) are handled, as is a single channel's scale applied to all output channels.

    Returns:
        the image in original units (a MetaTensor or :class:`ImageTensor` keeps its meta, without
        ``medsr_norm``).
    """
    if params is None:
        if not is_image(img) or NORM_KEY not in img.meta:
            raise ValueError(f"img: has no meta[{NORM_KEY!r}]; pass params= from the normalized input")
        params = img.meta[NORM_KEY]
    if "scale" not in params or "offset" not in params:
        raise ValueError(f"params: expected keys 'scale' and 'offset' (from meta[{NORM_KEY!r}]), got {sorted(params)}")
    x = img.as_tensor() if is_image(img) else torch.as_tensor(img)
    scale, offset = params["scale"], params["offset"]
    batched = isinstance(scale, (list, tuple)) and bool(scale) and isinstance(scale[0], torch.Tensor)
    batched = batched or (x.ndim >= 4 and isinstance(scale, torch.Tensor) and scale.ndim == 2)
    s = _per_channel(scale, x, batched)
    o = _per_channel(offset, x, batched)
    ch = 1 if batched else 0
    if s.ndim > ch and s.shape[ch] not in (1, x.shape[ch]):
        s, o = s.narrow(ch, 0, 1), o.narrow(ch, 0, 1)  # e.g. one output channel for 3 input channels
    y = ((x.double() - o) / s).to(x.dtype)
    if is_image(img):
        meta = {k: v for k, v in img.meta.items() if k not in (NORM_KEY, "affine")}
        return image_like(y, img, affine=img.affine, meta=meta)
    return y
