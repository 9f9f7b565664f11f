"""Turn an HR item into an aligned LR/HR training pair, with masks and label maps at both resolutions."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, SpatialCrop

from medsr.transforms._utils import check_mask, to_metatensor, wrap
from medsr.transforms.degradation import NOISE_KINDS, SimulateLowResolution
from medsr.transforms.geometry import affine_of, lr_affine, parse_scale, per_axis, spacing_of

__all__ = [
    "MASK_MODES",
    "MakeSRPaird",
    "MakeSRPairD",
    "MakeSRPairDict",
    "RandMakeSRPaird",
    "RandMakeSRPairD",
    "RandMakeSRPairDict",
    "pair_scale_factor",
    "downsample_mask",
    "downsample_label",
    "PairDegradation",
    "DEGRADATIONS",
    "REALISTIC",
    "pair_transform",
    "eval_degradation",
]

DEGRADATIONS = ("physical", "bicubic", "mixed", "realistic")  # a bundle's ``degradation`` (see pair_transform)
#: ``degradation="realistic"``: what users' images have. Per item: antialiased bicubic on two items in three
#: (resized images), else a Gaussian or box point-spread function (``physical``, slice thickness 0.8-1.2 × the
#: LR spacing); Gaussian noise of std 0-1 % of the normalised range on every item.
REALISTIC = dict(modes=("bicubic", "bicubic", "physical"), profiles=("gaussian", "box"),
                 thickness_ratio_range=(0.8, 1.2), noise_kinds=("gaussian",), noise_std_range=(0.0, 0.01))  # fmt: skip

MASK_MODES = ("majority", "any")


def pair_scale_factor(
    img: torch.Tensor, scale_factor: Sequence[int] | int | None, target_spacing: Sequence[float | None] | float | None
) -> tuple[int, ...]:
    """Integer SR factor per axis from ``scale_factor`` or from ``target_spacing`` (mm); exactly one is given."""
    sd = img.ndim - 1
    if (scale_factor is None) == (target_spacing is None):
        raise ValueError(
            "MakeSRPaird: give exactly one of scale_factor (per axis, dimensionless) or target_spacing (mm)"
        )
    if scale_factor is not None:
        raw = [1.0 if f is None else float(f) for f in per_axis(scale_factor, sd, "scale_factor")]
        name = "scale_factor"
    else:
        src = spacing_of(img)
        tgt = per_axis(target_spacing, sd, "target_spacing")
        raw = []
        for ax, (s, t) in enumerate(zip(src, tgt)):
            if t is not None and float(t) < s * (1 - 1e-4):
                raise ValueError(
                    f"target_spacing: axis {ax} is {float(t):g} mm, finer than the source spacing {s:g} mm"
                )
            raw.append(1.0 if t is None else float(t) / s)
        name = "target_spacing"
    out = []
    for ax, f in enumerate(raw):
        r = round(f)
        if r < 1 or abs(f - r) > 1e-3 * max(1.0, f):
            raise ValueError(f"{name}: axis {ax} gives factor {f:g}; LR/HR pairs need an integer factor >= 1")
        out.append(int(r))
    return tuple(out)


def _pool(x: torch.Tensor, factors: Sequence[int], op: str) -> torch.Tensor:
    sd = x.ndim - 1
    fn = {("avg", 2): F.avg_pool2d, ("avg", 3): F.avg_pool3d, ("max", 2): F.max_pool2d, ("max", 3): F.max_pool3d}
    f = tuple(int(v) for v in factors)
    return fn[(op, sd)](x.unsqueeze(0), kernel_size=f, stride=f)[0]


def downsample_mask(mask: torch.Tensor, factors: Sequence[int], mode: str = "majority") -> MetaTensor:
    """Binary mask at LR: ``"majority"`` = at least half of the block is inside (fraction >= 0.5),
    ``"any"`` = any voxel of the block is inside. The affine is the LR affine. The dtype is kept."""
    if mode not in MASK_MODES:
        raise ValueError(f"mask_mode: expected one of {MASK_MODES}, got {mode!r}")
    x = (mask.as_tensor() if isinstance(mask, MetaTensor) else torch.as_tensor(mask)) > 0
    x = x.float()
    y = _pool(x, factors, "avg") >= 0.5 - 1e-6 if mode == "majority" else _pool(x, factors, "max") > 0
    out = y.to(mask.dtype)
    return wrap(out, mask, affine=lr_affine(affine_of(mask), factors))


def downsample_label(label: torch.Tensor, factors: Sequence[int]) -> MetaTensor:
    """Label map at LR: the most frequent label of each block (ties: the smaller label). LR affine; dtype kept."""
    x = label.as_tensor() if isinstance(label, MetaTensor) else torch.as_tensor(label)
    values = torch.unique(x)
    if values.numel() > 256:
        raise ValueError(f"label: {values.numel()} distinct values; a label map needs at most 256 (is it an image?)")
    counts = torch.stack([_pool((x == v).float(), factors, "avg") for v in values])
    best = counts.argmax(dim=0)
    out = values[best].to(x.dtype)
    return wrap(out, label, affine=lr_affine(affine_of(label), factors))


class MakeSRPaird(MapTransform):
    """Turn an HR item into ``{"hr", "lr", "mask", "mask_lr", "label", "label_lr", ...}``, aligned.

    The HR image is first cropped at its far end to a multiple of the factor on each axis (the origin does not
    move), so HR and LR cover exactly the same physical extent: ``hr.shape = lr.shape · scale`` and LR voxel
    ``j`` is the centre of HR block ``j`` (see :class:`~medsr.transforms.SimulateLowResolution`).
    Masks (binary) and label maps are cropped the same way, kept at HR under their key and added at LR as
    ``<key>_lr`` with the LR affine: a mask at LR is the block majority (``mask_mode="majority"``: at least
    half the block inside) or any-overlap (``"any"``); a label map at LR is the block's most frequent label.

    Args:
        image_key: key of the HR image (removed from the output unless ``keep_image``).
        mask_keys: binary mask keys (missing ones are skipped).
        label_keys: label-map keys (missing ones are skipped).
        scale_factor: integer SR factor, scalar or per axis, e.g. ``(1, 1, 4)`` or ``(2, 2)``.
        target_spacing: alternative to ``scale_factor``: LR spacing in mm per axis (must give integer factors).
        mode: ``"physical"`` (slice profile/k-space + noise, :class:`SimulateLowResolution`) or ``"bicubic"``
            (anti-aliased bicubic, as the PIL downsampling used by the 2D studies).
        profile, gap, thickness, kspace, window, noise, noise_std, photons, seed: as in
            :class:`SimulateLowResolution` (``mode="physical"``; noise also applies to ``"bicubic"``). The
            transform is deterministic: the noise comes from ``seed`` (:class:`RandMakeSRPaird` draws it).
        mask_mode: ``"majority"`` or ``"any"``.
        hr_key, lr_key: output keys.
        keep_image: keep ``image_key`` in the output too.
        crop_to_multiple: crop HR to a multiple of the factor (otherwise a non-multiple shape is an error).
    """

    def __init__(
        self,
        image_key: str = "image",
        mask_keys: Sequence[str] = ("mask",),
        label_keys: Sequence[str] = ("label",),
        scale_factor: Sequence[int] | int | None = None,
        target_spacing: Sequence[float | None] | float | None = None,
        mode: str = "physical",
        profile: str = "gaussian",
        gap: Sequence[float] | float = 0.0,
        thickness: Sequence[float | None] | float | None = None,
        kspace: bool | Sequence[bool] = False,
        window: str | None = None,
        noise: str | None = None,
        noise_std: float = 0.0,
        photons: float | None = None,
        seed: int = 0,
        mask_mode: str = "majority",
        hr_key: str = "hr",
        lr_key: str = "lr",
        keep_image: bool = False,
        crop_to_multiple: bool = True,
    ) -> None:
        mask_keys, label_keys = tuple(mask_keys or ()), tuple(label_keys or ())
        super().__init__((image_key, *mask_keys, *label_keys), allow_missing_keys=True)
        if (scale_factor is None) == (target_spacing is None):
            raise ValueError(
                "MakeSRPaird: give exactly one of scale_factor (per axis, dimensionless) or target_spacing (mm)"
            )
        if mode not in ("physical", "bicubic"):
            raise ValueError(f"mode: expected 'physical' or 'bicubic', got {mode!r}")
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode: expected one of {MASK_MODES}, got {mask_mode!r}")
        if noise is not None and noise not in NOISE_KINDS:
            raise ValueError(f"noise: expected None or one of {NOISE_KINDS}, got {noise!r}")
        self.image_key, self.mask_keys, self.label_keys = image_key, mask_keys, label_keys
        self.scale_factor, self.target_spacing, self.mode = scale_factor, target_spacing, mode
        self.degrade_kwargs = dict(profile="bicubic" if mode == "bicubic" else profile, gap=gap, thickness=thickness,
                                   kspace=kspace, window=window, noise=noise, noise_std=noise_std, photons=photons,
                                   seed=int(seed))  # fmt: skip
        self.mask_mode, self.hr_key, self.lr_key = mask_mode, hr_key, lr_key
        self.keep_image, self.crop_to_multiple = keep_image, crop_to_multiple

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.image_key not in d:
            raise KeyError(f"image_key: {self.image_key!r} not in the item (keys: {sorted(map(str, d))})")
        img = to_metatensor(d[self.image_key], name=f"image {self.image_key!r}")
        factors = pair_scale_factor(img, self.scale_factor, self.target_spacing)
        shape = tuple(img.shape[1:])
        keep = tuple((n // f) * f for n, f in zip(shape, factors))
        if any(k == 0 for k in keep):
            raise ValueError(f"image {self.image_key!r}: spatial shape {shape} is smaller than scale factor {factors}")
        crop = None
        if keep != shape:
            if not self.crop_to_multiple:
                raise ValueError(f"image {self.image_key!r}: spatial shape {shape} is not a multiple of {factors}")
            crop = SpatialCrop(roi_start=[0] * len(shape), roi_end=list(keep))
            img = crop(img)
        src = spacing_of(img)
        target = tuple(f * s if f > 1 else None for f, s in zip(factors, src))
        lr = SimulateLowResolution(target, **self.degrade_kwargs)(img)
        lr.meta["medsr_pair"] = {"scale_factor": list(factors), "mode": self.mode, "mask_mode": self.mask_mode}
        out = {k: v for k, v in d.items() if k != self.image_key or self.keep_image}
        out[self.hr_key], out[self.lr_key] = img, lr
        for keys, is_mask in ((self.mask_keys, True), (self.label_keys, False)):
            for k in keys:
                if k not in d:
                    continue
                m = check_mask(d[k], to_metatensor(d[self.image_key]), name=f"{'mask' if is_mask else 'label'} {k!r}",
                               image_name=f"image {self.image_key!r}")  # fmt: skip
                if crop is not None:
                    m = crop(m)
                if is_mask:
                    vals = torch.unique(m.as_tensor())
                    if not bool(((vals == 0) | (vals == 1)).all()):
                        raise ValueError(
                            f"mask {k!r}: is not binary (values {vals[:6].tolist()}...); list it in label_keys instead"
                        )
                out[k] = m
                out[f"{k}_lr"] = (
                    downsample_mask(m, factors, self.mask_mode) if is_mask else downsample_label(m, factors)
                )
        return out


class RandMakeSRPaird(Randomizable, MapTransform):
    """:class:`MakeSRPaird` with the factor, slice thickness, profile and noise drawn per item.

    Args:
        scale_factor_choices: factors to choose from (each an int or per-axis tuple); a single choice keeps the
            LR/HR shapes fixed for batching.
        thickness_ratio_range: slice thickness = ratio × LR spacing (< 1: gap, > 1: overlap).
        profiles: slice profiles to choose from.
        modes: degradation modes to choose from (``"physical"``, ``"bicubic"``); default: ``mode`` only.
        noise_kinds: noise kinds to choose from (empty: no noise).
        noise_std_range: Gaussian std range, image units.
        photons_range: Poisson counts per unit intensity range.
        kwargs: the other :class:`MakeSRPaird` arguments (``image_key``, ``mask_keys``, ``mode``, ...).
    """

    def __init__(
        self,
        scale_factor_choices: Sequence[Sequence[int] | int],
        thickness_ratio_range: tuple[float, float] = (1.0, 1.0),
        profiles: Sequence[str] = ("gaussian",),
        noise_kinds: Sequence[str] = (),
        noise_std_range: tuple[float, float] = (0.0, 0.0),
        photons_range: tuple[float, float] = (100.0, 1000.0),
        modes: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if not scale_factor_choices:
            raise ValueError("scale_factor_choices: give at least one factor")
        for bad in ("scale_factor", "target_spacing", "profile", "thickness", "noise", "noise_std", "photons", "seed"):
            if bad in kwargs:
                raise ValueError(f"RandMakeSRPaird: {bad!r} is drawn at random; use the *_choices/*_range arguments")
        self.base = MakeSRPaird(scale_factor=1, **kwargs)
        self.modes = tuple(modes) if modes else (self.base.mode,)
        for m in self.modes:
            if m not in ("physical", "bicubic"):
                raise ValueError(f"modes: expected 'physical' and/or 'bicubic', got {m!r}")
        MapTransform.__init__(self, self.base.keys, allow_missing_keys=True)
        self.scale_factor_choices = list(scale_factor_choices)
        self.thickness_ratio_range, self.profiles = thickness_ratio_range, tuple(profiles)
        self.noise_kinds, self.noise_std_range, self.photons_range = tuple(noise_kinds), noise_std_range, photons_range
        self._params: dict[str, Any] = {}

    def randomize(self, data: Any = None) -> None:
        self._params = {
            "scale_factor": self.scale_factor_choices[int(self.R.randint(len(self.scale_factor_choices)))],
            "ratio": float(self.R.uniform(*self.thickness_ratio_range)),
            "profile": self.profiles[int(self.R.randint(len(self.profiles)))],
            "noise": self.noise_kinds[int(self.R.randint(len(self.noise_kinds)))] if self.noise_kinds else None,
            "noise_std": float(self.R.uniform(*self.noise_std_range)),
            "photons": float(self.R.uniform(*self.photons_range)),
            "seed": int(self.R.randint(0, 2**31 - 1)),
        }
        # drawn last and only when there is a choice, so single-mode streams are those of earlier versions
        self._params["mode"] = (
            self.modes[int(self.R.randint(len(self.modes)))] if len(self.modes) > 1 else self.modes[0]
        )

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        if randomize:
            self.randomize()
        return self.deterministic(data)(data)

    def deterministic(self, data: Mapping[Hashable, Any]) -> MakeSRPaird:
        """The :class:`MakeSRPaird` for the drawn parameters (the item's image gives the spacing)."""
        p = self._params
        img = to_metatensor(data[self.base.image_key]) if self.base.image_key in data else None
        b = self.base
        thickness = None
        if img is not None:
            sf = per_axis(p["scale_factor"], img.ndim - 1, "scale_factor")
            thickness = tuple(p["ratio"] * f * s if f > 1 else None for f, s in zip(sf, spacing_of(img)))
        mode = p.get("mode", b.mode)
        kwargs = dict(b.degrade_kwargs, profile="bicubic" if mode == "bicubic" else p["profile"],
                      thickness=thickness, noise=p["noise"], noise_std=p["noise_std"], photons=p["photons"],
                      seed=p["seed"])  # fmt: skip
        return MakeSRPaird(b.image_key, b.mask_keys, b.label_keys, scale_factor=p["scale_factor"], mode=mode,
                           mask_mode=b.mask_mode, hr_key=b.hr_key, lr_key=b.lr_key, keep_image=b.keep_image,
                           crop_to_multiple=b.crop_to_multiple, **kwargs)  # fmt: skip


MakeSRPairD = MakeSRPairDict = MakeSRPaird
RandMakeSRPairD = RandMakeSRPairDict = RandMakeSRPaird


def _check_degradation(degradation: str) -> str:
    if degradation not in DEGRADATIONS:
        raise ValueError(f"degradation: expected one of {DEGRADATIONS}, got {degradation!r}")
    return degradation


def eval_degradation(degradation: str) -> str:
    """The deterministic mode a bundle validates and evaluates with: ``"mixed"`` is validated on physical pairs
    (the harder and the clinically relevant one), ``"realistic"`` on bicubic pairs (its main case, and the
    out-of-distribution benchmark's protocol); the others are themselves."""
    degradation = _check_degradation(degradation)
    return {"mixed": "physical", "realistic": "bicubic"}.get(degradation, degradation)


def pair_transform(degradation: str, scale_factor: Any, **kwargs: Any) -> MakeSRPaird | RandMakeSRPaird:
    """A bundle's training pair transform: :class:`MakeSRPaird` for ``"physical"``/``"bicubic"``, and for
    ``"mixed"`` a :class:`RandMakeSRPaird` that draws bicubic or physical per item (one model for both), for
    ``"realistic"`` one that draws :data:`REALISTIC`'s mix."""
    if _check_degradation(degradation) == "realistic":
        return RandMakeSRPaird([scale_factor], **REALISTIC, **kwargs)
    if degradation == "mixed":
        return RandMakeSRPaird([scale_factor], modes=("bicubic", "physical"), **kwargs)
    return MakeSRPaird(scale_factor=scale_factor, mode=degradation, **kwargs)


class PairDegradation:
    """The training pairs' HR->LR degradation as an image callable, for the evaluation report's ``degrade=``.

    It applies :class:`SimulateLowResolution` with the settings of a
    :class:`MakeSRPaird` (its scale factor, profile, k-space and window; noise off, so the
    data-consistency check is deterministic) on a unit-spacing grid, i.e. in voxel units: the factor per axis
    is the pair's ``scale_factor`` whatever affine the image carries (an SR output's affine may be the LR
    one). ``degrade(hr)`` therefore reproduces the pair's LR exactly, on the same grid (LR voxel ``j`` at the
    centre of HR block ``j``, ``floor(n / f)`` voxels).

    Args:
        pair: the bundle's ``MakeSRPaird`` (``@data#pair``); or ``None`` with ``scale_factor``/``mode``.
        scale_factor: per-axis integer factor when no ``pair`` is given.
        mode: ``"physical"`` or ``"bicubic"`` when no ``pair`` is given.
    """

    def __init__(self, pair: Any = None, scale_factor: Any = None, mode: str = "physical") -> None:
        if pair is not None:
            if getattr(pair, "scale_factor", None) is None:
                raise ValueError("PairDegradation: the pair must be built with scale_factor (not target_spacing)")
            kwargs = dict(pair.degrade_kwargs)
            scale_factor = pair.scale_factor
        else:
            if scale_factor is None:
                raise ValueError("PairDegradation: give pair (a MakeSRPaird) or scale_factor")
            if mode not in ("physical", "bicubic"):
                raise ValueError(f"PairDegradation mode: expected 'physical' or 'bicubic', got {mode!r}")
            kwargs = {"profile": "bicubic" if mode == "bicubic" else "gaussian"}
        gaps = kwargs.get("gap", 0.0)
        gaps = gaps if isinstance(gaps, (list, tuple)) else (gaps,)
        if kwargs.get("thickness") is not None or any(float(g) != 0 for g in gaps):
            raise ValueError("PairDegradation: slice thickness/gap are in mm; evaluate with the default thickness")
        kwargs.pop("thickness", None)
        kwargs.pop("gap", None)
        kwargs.update(noise=None, noise_std=0.0, photons=None)
        self.scale_factor, self.kwargs = scale_factor, kwargs

    def __call__(self, img: Any) -> torch.Tensor:
        x = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        if x.ndim not in (3, 4):
            raise ValueError(f"PairDegradation: expected a channel-first 2D/3D image, got shape {tuple(x.shape)}")
        factors = parse_scale(self.scale_factor, x.ndim - 1)
        target = tuple(float(f) if f > 1 else None for f in factors)
        lr = SimulateLowResolution(target, **self.kwargs)(MetaTensor(x.float(), affine=torch.eye(4)))
        return lr.as_tensor()
