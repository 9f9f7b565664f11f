"""Mask-aware HR patch sampling: lesion-centred (positive/negative ratio) or inside the body/foreground."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, SpatialCrop

from medsr.transforms._utils import check_mask, to_metatensor
from medsr.transforms.geometry import per_axis

__all__ = ["MaskAwareCropd", "MaskAwareCropD", "MaskAwareCropDict", "otsu_threshold", "patch_size_for_scale"]

logger = logging.getLogger(__name__)
#: ``source_format`` values (:mod:`medsr.pipeline.data.readers`) of photographs: no background to find
PHOTO_FORMATS = ("image",)


def otsu_threshold(values: np.ndarray | torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (the one that maximises the between-class variance of a histogram)."""
    v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0 or v.min() == v.max():
        return float(v.min()) if v.size else 0.0
    hist, edges = np.histogram(v, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = ((hist * centres).sum() - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def patch_size_for_scale(patch_size: Sequence[int] | int, scale_factor: Sequence[int] | int, sd: int,
                         force: bool = True) -> tuple[int, ...]:  # fmt: skip
    """Check (or round down) ``patch_size`` to a multiple of ``scale_factor`` on each axis."""
    ps = per_axis(patch_size, sd, "patch_size", allow_none=False)
    sf = per_axis(scale_factor, sd, "scale_factor", allow_none=False)
    out = []
    for ax, (p, s) in enumerate(zip(ps, sf)):
        p, s = int(p), int(s)
        if s < 1 or p < 1:
            raise ValueError(f"patch_size/scale_factor: axis {ax} must be >= 1, got patch {p}, scale {s}")
        if p % s:
            if not force:
                raise ValueError(f"patch_size: axis {ax} size {p} is not a multiple of scale_factor {s}")
            p = max(s, (p // s) * s)
        out.append(p)
    return tuple(out)


class MaskAwareCropd(Randomizable, MapTransform):
    """Sample HR patches centred on a mask/label (positive) or elsewhere (negative), updating the affine.

    Each of ``num_samples`` patches is centred on a random voxel that is positive (``mask > 0``, or
    ``mask == label_value``) with probability ``pos_ratio``, otherwise negative (not positive, and inside the
    foreground when ``foreground`` is given). Without ``mask_key`` every centre is drawn in the foreground.
    Patches are shifted to lie inside the image. Patch sizes are multiples of ``scale_factor`` per axis
    (``force_multiple=True`` rounds down, otherwise a mismatch is an error). Cropping uses MONAI's
    ``SpatialCrop``, so each MetaTensor's affine moves its origin to the patch corner.

    Args:
        keys: keys to crop together (image, masks, labels), all on the same grid.
        mask_key: key of the mask or label map that defines positives (``None``: foreground only).
        patch_size: HR patch size in voxels per axis.
        pos_ratio: fraction of patches centred on positives, in [0, 1].
        scale_factor: SR factor per axis; patch sizes are made multiples of it.
        num_samples: patches per item (a list of items is returned, as MONAI's ``RandCropByPosNegLabeld``).
        label_value: positive label value in a label map (``None``: any value > 0).
        foreground: where negatives (and mask-free samples) may be centred: ``None`` (anywhere), a threshold
            (``image > foreground`` on ``image_key``) or a callable mapping the image to a boolean array.
        image_key: key used for the foreground (default: the first key).
        force_multiple: round patch sizes down to multiples of ``scale_factor`` instead of raising.
        allow_missing_keys: also lets an item go without ``mask_key``: its centres are then drawn as
            ``no_mask`` says.
        no_mask: where an item without a mask is sampled (``foreground`` wins when given): ``"auto"`` (Otsu
            foreground for medical images, uniform for photographs, ``meta["source_format"] == "image"``),
            ``"otsu"`` (``image > Otsu threshold``) or ``"uniform"``. Logged once per kind.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str | None,
        patch_size: Sequence[int] | int,
        pos_ratio: float = 0.5,
        scale_factor: Sequence[int] | int = 1,
        num_samples: int = 1,
        label_value: float | None = None,
        foreground: float | Callable[[torch.Tensor], Any] | None = None,
        image_key: str | None = None,
        force_multiple: bool = True,
        allow_missing_keys: bool = False,
        no_mask: str = "auto",
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0.0 <= pos_ratio <= 1.0:
            raise ValueError(f"pos_ratio: must be in [0, 1], got {pos_ratio}")
        if num_samples < 1:
            raise ValueError(f"num_samples: must be >= 1, got {num_samples}")
        if no_mask not in ("auto", "otsu", "uniform"):
            raise ValueError(f"no_mask: expected 'auto', 'otsu' or 'uniform', got {no_mask!r}")
        self.no_mask, self._logged = no_mask, set()
        self.mask_key, self.patch_size, self.pos_ratio = mask_key, patch_size, pos_ratio
        self.scale_factor, self.num_samples, self.label_value = scale_factor, num_samples, label_value
        self.foreground, self.image_key, self.force_multiple = foreground, image_key, force_multiple
        self._centres: list[tuple[tuple[int, ...], bool]] = []

    def _positive(self, mask: torch.Tensor) -> np.ndarray:
        m = mask.as_tensor() if hasattr(mask, "as_tensor") else torch.as_tensor(mask)
        pos = (m == self.label_value) if self.label_value is not None else (m > 0)
        return pos.any(dim=0).numpy()

    def _foreground(self, img: torch.Tensor) -> np.ndarray | None:
        if self.foreground is None:
            return None
        if callable(self.foreground):
            fg = np.asarray(self.foreground(img))
            if fg.ndim == img.ndim:
                fg = fg.any(axis=0)
        else:
            fg = (img.as_tensor() > float(self.foreground)).any(dim=0).numpy()
        if fg.shape != tuple(img.shape[1:]):
            raise ValueError(
                f"foreground: gives shape {fg.shape}, expected the image's spatial shape {tuple(img.shape[1:])}"
            )
        return fg.astype(bool)

    def _no_mask_foreground(self, img: torch.Tensor) -> np.ndarray:
        """Where an item without a mask is sampled: Otsu foreground, or everywhere for photographs."""
        shape = tuple(img.shape[1:])
        kind = self.no_mask
        if kind == "auto":
            photo = getattr(img, "meta", {}).get("source_format") in PHOTO_FORMATS
            kind = "uniform" if photo else "otsu"
        if kind == "uniform":
            self._log("uniform", "no mask: patch centres drawn uniformly over the image (photograph)")
            return np.ones(shape, bool)
        data = img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)
        fg = (data > otsu_threshold(data)).any(dim=0).numpy()
        self._log("otsu", "no mask: patch centres drawn in the foreground found by intensity (image > Otsu threshold)")
        return fg if fg.any() else np.ones(shape, bool)

    def _log(self, kind: str, text: str) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            logger.info(f"MaskAwareCropd: {text}")

    def randomize(self, data: Any = None) -> None:
        pos, neg = data
        self._centres = []
        for _ in range(self.num_samples):
            want_pos = pos is not None and self.R.uniform() < self.pos_ratio
            pool = pos if want_pos else neg
            if pool is None or len(pool) == 0:
                pool, want_pos = (neg, False) if want_pos else (pos, True)
            if pool is None or len(pool) == 0:
                raise ValueError("MaskAwareCropd: no candidate voxel for a patch centre (mask and foreground empty)")
            self._centres.append((tuple(int(v) for v in pool[int(self.R.randint(len(pool)))]), bool(want_pos)))

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            raise KeyError(f"keys: none of {self.keys} found in the item (keys: {sorted(map(str, d))})")
        ref_key = self.image_key or keys[0]
        img = to_metatensor(d[ref_key], name=str(ref_key))
        sd = img.ndim - 1
        for k in keys:
            if k != ref_key:
                check_mask(
                    d[k], img, name=f"mask {k!r}" if k == self.mask_key else f"key {k!r}", image_name=f"{ref_key!r}"
                )
        shape = tuple(img.shape[1:])
        ps = patch_size_for_scale(self.patch_size, self.scale_factor, sd, self.force_multiple)
        if any(p > s for p, s in zip(ps, shape)):
            raise ValueError(f"patch_size: {ps} is larger than image {ref_key!r} spatial shape {shape}")
        fg = self._foreground(img)
        pos = None
        if self.mask_key is not None and self.mask_key not in d and self.allow_missing_keys:
            negmask = self._no_mask_foreground(img) if fg is None else fg
        elif self.mask_key is not None:
            if self.mask_key not in d:
                raise KeyError(f"mask_key: {self.mask_key!r} not in the item (keys: {sorted(map(str, d))})")
            mask = check_mask(d[self.mask_key], img, name=f"mask {self.mask_key!r}", image_name=f"{ref_key!r}")
            posmask = self._positive(mask)
            pos = np.argwhere(posmask)
            negmask = ~posmask if fg is None else (~posmask & fg)
            if len(pos) == 0:
                warnings.warn(
                    f"MaskAwareCropd: mask {self.mask_key!r} has no positive voxel; sampling negatives", stacklevel=2
                )
        else:
            negmask = np.ones(shape, bool) if fg is None else fg
        neg = np.argwhere(negmask)
        self.randomize((pos, neg))
        out = []
        for centre, is_pos in self._centres:
            start = [int(min(max(c - p // 2, 0), s - p)) for c, p, s in zip(centre, ps, shape)]
            crop = SpatialCrop(roi_start=start, roi_end=[a + p for a, p in zip(start, ps)])
            item = dict(d)
            for k in keys:
                item[k] = crop(to_metatensor(d[k], name=str(k)) if k == ref_key else d[k])
                if hasattr(item[k], "meta"):
                    item[k].meta = dict(item[k].meta)
                    item[k].meta["medsr_crop"] = {"start": start, "size": list(ps), "positive": int(is_pos)}
            out.append(item)
        return out


MaskAwareCropD = MaskAwareCropDict = MaskAwareCropd
