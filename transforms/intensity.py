"""Intensity normalization with optional masks, storing an invertible linear map in the MetaTensor's meta.

Every normalization is ``y = scale · x + offset`` (then optionally clipped). The parameters are stored as
``meta["medsr_norm"] = {"kind", "scale", "offset", ...}`` with one ``scale``/``offset`` per channel, so
:func:`invert_normalization` maps network outputs back to the original units (HU, raw MR intensity).
Clipped values cannot be recovered: they come back as the clip limits.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from medsr.transforms._utils import (
    NORM_KEY,
    check_mask,
    invert_normalization,
    linear_map,
    norm_info,
    percentile_params,
    to_metatensor,
    wrap,
)

__all__ = [
    "NORM_KEY",
    "PercentileNormalize",
    "ZScoreNormalize",
    "CTWindow",
    "InvertNormalization",
    "invert_normalization",
    "PercentileNormalized",
    "PercentileNormalizeD",
    "PercentileNormalizeDict",
    "ZScoreNormalized",
    "ZScoreNormalizeD",
    "ZScoreNormalizeDict",
    "CTWindowd",
    "CTWindowD",
    "CTWindowDict",
    "InvertNormalizationd",
    "InvertNormalizationD",
    "InvertNormalizationDict",
]


def _region(img: MetaTensor, mask: Any, c: int | None) -> torch.Tensor:
    """Voxels of channel ``c`` (all channels when ``None``) inside ``mask`` (all voxels when ``None``)."""
    x = img.as_tensor() if c is None else img.as_tensor()[c : c + 1]
    if mask is None:
        return x.reshape(-1)
    m = mask.as_tensor() > 0
    m = m.expand_as(img.as_tensor()) if m.shape[0] == 1 else m
    m = m if c is None else m[c : c + 1]
    vals = x[m]
    if vals.numel() == 0:
        raise ValueError("mask: is empty (no voxel > 0); cannot compute normalization statistics inside it")
    return vals


class _Normalize(Transform):
    """Shared machinery: per-channel (scale, offset), clipping, outside-mask value, meta."""

    kind = "linear"

    def __init__(self, channel_wise: bool, clip: bool, b_min: float | None, b_max: float | None, outside: float | None):
        self.channel_wise, self.clip, self.b_min, self.b_max, self.outside = channel_wise, clip, b_min, b_max, outside

    def params(self, img: MetaTensor, mask: MetaTensor | None) -> list[tuple[float, float, dict[str, float]]]:
        raise NotImplementedError

    def __call__(self, img: Any, mask: Any = None) -> MetaTensor:
        img = to_metatensor(img)
        m = None if mask is None else check_mask(mask, img)
        chans = self.params(img, m)
        if len(chans) == 1:
            chans = chans * img.shape[0]
        x = img.as_tensor()
        y = linear_map(x, chans, self.clip, self.b_min, self.b_max)
        if self.outside is not None and m is not None:
            y = torch.where((m.as_tensor() > 0).expand_as(y), y, torch.as_tensor(self.outside, dtype=y.dtype))
        return wrap(y, img, extra={NORM_KEY: norm_info(self.kind, x, chans, self.clip)})

    def _channels(self, img: MetaTensor) -> list[int | None]:
        return list(range(img.shape[0])) if self.channel_wise else [None]


class PercentileNormalize(_Normalize):
    """Map the ``lower``/``upper`` percentiles (inside ``mask`` if given) to ``b_min``/``b_max``, then clip.

    Args:
        lower: lower percentile in [0, 100].
        upper: upper percentile in [0, 100].
        b_min: output value of the lower percentile.
        b_max: output value of the upper percentile.
        clip: clip the output to ``[b_min, b_max]``.
        channel_wise: statistics per channel (default: over all channels).
        outside: value written outside the mask (``None`` keeps the normalized values).
    """

    kind = "percentile"

    def __init__(
        self,
        lower: float = 0.5,
        upper: float = 99.5,
        b_min: float = 0.0,
        b_max: float = 1.0,
        clip: bool = True,
        channel_wise: bool = False,
        outside: float | None = None,
    ) -> None:
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"lower/upper: need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
        super().__init__(channel_wise, clip, b_min, b_max, outside)
        self.lower, self.upper = lower, upper

    def params(self, img: MetaTensor, mask: MetaTensor | None) -> list[tuple[float, float, dict[str, float]]]:
        out = []
        for c in self._channels(img):
            vals = _region(img, mask, c)
            out.append(percentile_params(vals, self.lower, self.upper, self.b_min, self.b_max))
        return out


class ZScoreNormalize(_Normalize):
    """Subtract the mean and divide by the standard deviation (computed inside ``mask`` if given).

    Args:
        channel_wise: statistics per channel.
        eps: floor for the standard deviation (a constant image is only shifted).
        outside: value written outside the mask (``None`` keeps the normalized values).
    """

    kind = "zscore"

    def __init__(self, channel_wise: bool = False, eps: float = 1e-8, outside: float | None = None) -> None:
        super().__init__(channel_wise, False, None, None, outside)
        self.eps = eps

    def params(self, img: MetaTensor, mask: MetaTensor | None) -> list[tuple[float, float, dict[str, float]]]:
        out = []
        for c in self._channels(img):
            vals = _region(img, mask, c).double()
            mean, std = float(vals.mean()), float(vals.std(unbiased=False))
            scale = 1.0 / std if std > self.eps else 1.0
            out.append((scale, -mean * scale, {"mean": mean, "std": std}))
        return out


class CTWindow(_Normalize):
    """CT window: map ``[level - width/2, level + width/2]`` HU to ``[b_min, b_max]`` and clip.

    Args:
        level: window centre in HU (e.g. 40 soft tissue, -600 lung).
        width: window width in HU (> 0).
        b_min: output value at the window's lower edge.
        b_max: output value at the window's upper edge.
        clip: clip to ``[b_min, b_max]``.
        outside: value written outside the mask (e.g. 0 outside the body); the mask does not change the window.
    """

    kind = "ct_window"

    def __init__(
        self,
        level: float,
        width: float,
        b_min: float = 0.0,
        b_max: float = 1.0,
        clip: bool = True,
        outside: float | None = None,
    ) -> None:
        if not width > 0:
            raise ValueError(f"width: CT window width must be > 0 HU, got {width}")
        super().__init__(False, clip, b_min, b_max, outside)
        self.level, self.width = float(level), float(width)

    def params(self, img: MetaTensor, mask: MetaTensor | None) -> list[tuple[float, float, dict[str, float]]]:
        lo = self.level - self.width / 2.0
        scale = (self.b_max - self.b_min) / self.width
        return [(scale, self.b_min - lo * scale, {"level": self.level, "width": self.width})]


class InvertNormalization(Transform):
    """Array transform for :func:`invert_normalization` (``params`` fixed, or read from the input's meta)."""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = params

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return invert_normalization(img, self.params)


# ---------------------------------------------------------------------------------------------------------
# dictionary versions
# ---------------------------------------------------------------------------------------------------------
class _NormDict(MapTransform):
    transform: _Normalize

    def __init__(self, keys: KeysCollection, mask_key: str | None, allow_missing_keys: bool) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        mask = None
        if self.mask_key is not None:
            if self.mask_key not in d:
                raise KeyError(f"mask_key: {self.mask_key!r} not in the item (keys: {sorted(map(str, d))})")
            mask = d[self.mask_key]
        for key in self.key_iterator(d):
            img = to_metatensor(d[key], name=str(key))
            if mask is not None:
                check_mask(mask, img, name=f"mask {self.mask_key!r}", image_name=f"image {key!r}")
            d[key] = self.transform(img, mask)
        return d


class PercentileNormalized(_NormDict):
    """Dictionary version of :class:`PercentileNormalize`; statistics inside ``d[mask_key]`` if given."""

    def __init__(self, keys: KeysCollection, lower: float = 0.5, upper: float = 99.5, b_min: float = 0.0,
                 b_max: float = 1.0, clip: bool = True, mask_key: str | None = None, channel_wise: bool = False,
                 outside: float | None = None, allow_missing_keys: bool = False) -> None:  # fmt: skip
        super().__init__(keys, mask_key, allow_missing_keys)
        self.transform = PercentileNormalize(lower, upper, b_min, b_max, clip, channel_wise, outside)


class ZScoreNormalized(_NormDict):
    """Dictionary version of :class:`ZScoreNormalize`; statistics inside ``d[mask_key]`` if given."""

    def __init__(self, keys: KeysCollection, mask_key: str | None = None, channel_wise: bool = False,
                 eps: float = 1e-8, outside: float | None = None, allow_missing_keys: bool = False) -> None:  # fmt: skip
        super().__init__(keys, mask_key, allow_missing_keys)
        self.transform = ZScoreNormalize(channel_wise, eps, outside)


class CTWindowd(_NormDict):
    """Dictionary version of :class:`CTWindow`; ``mask_key`` only sets ``outside`` values."""

    def __init__(self, keys: KeysCollection, level: float, width: float, b_min: float = 0.0, b_max: float = 1.0,
                 clip: bool = True, mask_key: str | None = None, outside: float | None = None,
                 allow_missing_keys: bool = False) -> None:  # fmt: skip
        super().__init__(keys, mask_key, allow_missing_keys)
        self.transform = CTWindow(level, width, b_min, b_max, clip, outside)


class InvertNormalizationd(MapTransform):
    """Invert the normalization of ``keys``, with params from ``d[meta_src_key].meta`` (default: the key's own).

    Args:
        keys: keys to map back to original units (e.g. ``"pred"``).
        meta_src_key: key whose ``meta["medsr_norm"]`` is used (e.g. ``"lr"`` for a prediction).
    """

    def __init__(self, keys: KeysCollection, meta_src_key: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.meta_src_key = meta_src_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        params = None
        if self.meta_src_key is not None:
            src = d.get(self.meta_src_key)
            if not isinstance(src, MetaTensor) or NORM_KEY not in src.meta:
                raise ValueError(f"meta_src_key: {self.meta_src_key!r} is missing or has no meta[{NORM_KEY!r}]")
            params = src.meta[NORM_KEY]
        for key in self.key_iterator(d):
            d[key] = invert_normalization(d[key], params)
        return d


PercentileNormalizeD = PercentileNormalizeDict = PercentileNormalized
ZScoreNormalizeD = ZScoreNormalizeDict = ZScoreNormalized
CTWindowD = CTWindowDict = CTWindowd
InvertNormalizationD = InvertNormalizationDict = InvertNormalizationd
