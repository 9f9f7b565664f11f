"""Physical-spacing degradation: slice profiles, per-axis k-space truncation, acquisition noise, decimation.

Every resolution change is a separable linear operator: along each axis a small dense matrix ``W``
(``n_out × n_in``) whose row ``j`` holds the weights with which HR voxels contribute to output voxel ``j``.
Output voxel ``j`` of a decimation by factor ``f`` sits at HR index ``c_j = (j + 1/2) f - 1/2``, the physical
centre of the HR region ``[j f - 1/2, (j + 1) f - 1/2]`` it integrates, and the LR affine says so
(:func:`medsr.transforms.geometry.lr_affine`). Applying ``W`` is one matrix product per degraded axis (BLAS),
which is much faster than a generic N-D filter and never aliases like nearest-neighbour decimation.

Random and deterministic transforms follow torchio's split: ``ThickSlice``, ``KSpaceTruncation``,
``AcquisitionNoise`` and ``SimulateLowResolution`` take every value (the noise ``seed`` included) as an
argument and give the same output for the same input; only the ``Rand*`` classes draw (from ``self.R``) and
then call the deterministic transform.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform, Transform

from medsr.transforms._utils import SPACING_RTOL, apply_along, to_metatensor, wrap
from medsr.transforms.geometry import affine_of, lr_affine, lr_centres, per_axis, spacing_of

__all__ = [
    "PROFILES",
    "NOISE_KINDS",
    "WINDOWS",
    "profile_operator",
    "kspace_operator",
    "kspace_filter",
    "add_noise",
    "resolve_factors",
    "ThickSlice",
    "KSpaceTruncation",
    "AcquisitionNoise",
    "SimulateLowResolution",
    "RandThickSlice",
    "RandKSpaceTruncation",
    "RandAcquisitionNoise",
    "RandSimulateLowResolution",
    "ThickSliced",
    "ThickSliceD",
    "ThickSliceDict",
    "KSpaceTruncationd",
    "KSpaceTruncationD",
    "KSpaceTruncationDict",
    "AcquisitionNoised",
    "AcquisitionNoiseD",
    "AcquisitionNoiseDict",
    "SimulateLowResolutiond",
    "SimulateLowResolutionD",
    "SimulateLowResolutionDict",
    "RandThickSliced",
    "RandThickSliceD",
    "RandThickSliceDict",
    "RandKSpaceTruncationd",
    "RandKSpaceTruncationD",
    "RandKSpaceTruncationDict",
    "RandAcquisitionNoised",
    "RandAcquisitionNoiseD",
    "RandAcquisitionNoiseDict",
    "RandSimulateLowResolutiond",
    "RandSimulateLowResolutionD",
    "RandSimulateLowResolutionDict",
]

PROFILES = ("gaussian", "box", "bicubic")
NOISE_KINDS = ("gaussian", "rician", "poisson_gaussian")
WINDOWS = (None, "hann", "tukey")
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


# ----------------------------------------------------------------------------------------------------------
# per-axis operators
# ----------------------------------------------------------------------------------------------------------
def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    out = np.zeros_like(x)
    m1 = x <= 1
    m2 = (x > 1) & (x < 2)
    out[m1] = (a + 2) * x[m1] ** 3 - (a + 3) * x[m1] ** 2 + 1
    out[m2] = a * x[m2] ** 3 - 5 * a * x[m2] ** 2 + 8 * a * x[m2] - 4 * a
    return out


def profile_operator(n: int, centres: np.ndarray, width: float, profile: str, factor: float = 1.0) -> torch.Tensor:
    """Weights of a slice profile centred at ``centres`` (HR index units) over ``n`` HR voxels.

    Args:
        n: number of HR voxels along the axis.
        centres: output sample positions in HR index coordinates.
        width: profile width in HR voxels: the FWHM for ``"gaussian"``, the full width for ``"box"``.
        profile: ``"gaussian"`` (point-sampled), ``"box"`` (exact overlap of each HR voxel with the box),
            or ``"bicubic"`` (Keys cubic, ``a = -0.5``, stretched by ``factor`` as in anti-aliased image resize).
        factor: decimation factor (only used by ``"bicubic"``).

    Returns:
        float64 tensor ``(len(centres), n)``; each row sums to 1 (rows are renormalized at the borders, so a
        constant image stays constant).
    """
    i = np.arange(n, dtype=np.float64)[None, :]
    d = i - np.asarray(centres, dtype=np.float64)[:, None]
    if profile == "gaussian":
        w = np.exp(-0.5 * (d / (width * _FWHM_TO_SIGMA)) ** 2)
    elif profile == "box":
        lo = np.maximum(d - 0.5, -width / 2.0)
        hi = np.minimum(d + 0.5, width / 2.0)
        w = np.clip(hi - lo, 0.0, None)
    elif profile == "bicubic":
        s = max(float(factor), 1.0)
        w = _cubic(d / s)
    else:
        raise ValueError(f"profile: expected one of {PROFILES}, got {profile!r}")
    total = w.sum(axis=1, keepdims=True)
    if np.any(np.abs(total) < 1e-12):
        raise ValueError(f"profile {profile!r} of width {width} voxels has empty rows; width too small")
    return torch.from_numpy(w / total)


def _window(freq: np.ndarray, kc: float, window: str | None, tukey_alpha: float) -> np.ndarray:
    """Window ``H(f)`` on the kept band ``|f| <= kc`` (cycles/voxel), zero above the cut-off."""
    af = np.abs(freq)
    keep = af <= kc + 1e-12
    if window is None:
        h = np.ones_like(af)
    elif window == "hann":
        h = 0.5 * (1.0 + np.cos(np.pi * np.clip(af / kc, 0.0, 1.0)))
    elif window == "tukey":
        if not 0.0 < tukey_alpha <= 1.0:
            raise ValueError(f"tukey_alpha: expected a value in (0, 1], got {tukey_alpha}")
        r = np.clip(af / kc, 0.0, 1.0)
        edge = 1.0 - tukey_alpha
        h = np.where(r <= edge, 1.0, 0.5 * (1.0 + np.cos(np.pi * (r - edge) / tukey_alpha)))
    else:
        raise ValueError(f"window: expected one of {WINDOWS}, got {window!r}")
    return np.where(keep, h, 0.0)


def kspace_filter(n: int, cutoff: float, window: str | None = None, tukey_alpha: float = 0.5) -> np.ndarray:
    """The 1D k-space weights over ``np.fft.fftfreq(n)`` for ``cutoff`` (fraction of Nyquist, in (0, 1])."""
    return _window(np.fft.fftfreq(n), 0.5 * cutoff, window, tukey_alpha)


def kspace_operator(
    n: int, centres: np.ndarray, cutoff: float, window: str | None = None, tukey_alpha: float = 0.5
) -> torch.Tensor:
    """Band-limit along an axis (k-space truncation, periodic) and evaluate the result at ``centres``.

    ``W[j, i] = (1/n) Σ_m H_m cos(2π f_m (c_j - i))``: the exact DFT, truncation and inverse DFT at arbitrary
    positions. Rows sum to ``H_0 = 1`` (the mean is kept).
    """
    freq = np.fft.fftfreq(n)
    h = _window(freq, 0.5 * cutoff, window, tukey_alpha)
    kept = h != 0
    d = np.asarray(centres, dtype=np.float64)[:, None] - np.arange(n, dtype=np.float64)[None, :]
    uniq, inverse = np.unique(np.round(d, 9), return_inverse=True)
    g = (h[kept][None, :] * np.cos(2.0 * np.pi * uniq[:, None] * freq[kept][None, :])).sum(axis=1) / n
    return torch.from_numpy(g[inverse].reshape(d.shape))


def resolve_factors(
    img: torch.Tensor, target_spacing: Sequence[float | None] | float | None, name: str = "target_spacing"
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-axis (source spacing, factor = target / source); ``None`` keeps an axis. Refuses finer targets."""
    sd = img.ndim - 1
    src = spacing_of(img)
    tgt = per_axis(target_spacing, sd, name)
    factors = []
    for ax, (s, t) in enumerate(zip(src, tgt)):
        if t is None:
            factors.append(1.0)
            continue
        t = float(t)
        if not t > 0:
            raise ValueError(f"{name}: axis {ax} must be > 0 mm, got {t}")
        if t < s * (1 - SPACING_RTOL):
            raise ValueError(
                f"{name}: axis {ax} is {t:g} mm, finer than the source spacing {s:g} mm; "
                "degradation only coarsens (target spacing must be >= source spacing)"
            )
        factors.append(max(1.0, t / s))
    return src, tuple(factors)


def _snap(f: float) -> float:
    r = round(f)
    return float(r) if abs(f - r) < 1e-6 * max(1.0, f) else f


# ----------------------------------------------------------------------------------------------------------
# noise
# ----------------------------------------------------------------------------------------------------------
def add_noise(
    img: torch.Tensor, kind: str, std: float = 0.0, photons: float | None = None, seed: int = 0
) -> torch.Tensor:
    """Add acquisition noise (deterministic for a given ``seed``).

    Args:
        img: image tensor (any shape).
        kind: ``"gaussian"`` (additive), ``"rician"`` (magnitude MR: ``|x + n_1 + i n_2|``) or
            ``"poisson_gaussian"`` (X-ray/CT detector: ``Poisson(photons · x) / photons + N(0, std)``,
            needs non-negative intensities).
        std: standard deviation of the Gaussian part, in image units.
        photons: expected counts per unit intensity for ``"poisson_gaussian"`` (larger = less noise).
        seed: seed of the torch generator.
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind: expected one of {NOISE_KINDS}, got {kind!r}")
    if std < 0:
        raise ValueError(f"noise std: must be >= 0, got {std}")
    x = img.as_tensor() if isinstance(img, MetaTensor) else img
    gen = torch.Generator().manual_seed(int(seed))

    def normal() -> torch.Tensor:
        return torch.randn(x.shape, generator=gen, dtype=x.dtype) * std

    if kind == "gaussian":
        return x + normal() if std > 0 else x.clone()
    if kind == "rician":
        return torch.sqrt((x + normal()) ** 2 + normal() ** 2)
    if photons is None or photons <= 0:
        raise ValueError(
            f"photons: poisson_gaussian noise needs photons > 0 (counts per unit intensity), got {photons}"
        )
    if float(x.min()) < 0:
        raise ValueError(
            f"image: poisson_gaussian noise needs non-negative intensities, min is {float(x.min()):g}; "
            "normalize first (e.g. PercentileNormalize or CTWindow)"
        )
    counts = torch.poisson(x.double() * photons, generator=gen).to(x.dtype)
    out = counts / photons
    return out + normal() if std > 0 else out


class AcquisitionNoise(Transform):
    """Add Gaussian, Rician (magnitude MR) or Poisson–Gaussian (X-ray/CT) noise with fixed parameters.

    Deterministic, as torchio's ``Noise``: the noise comes from ``seed``, so the same seed gives the same
    noise. :class:`RandAcquisitionNoise` draws the seed (and kind, std, photons) per call.

    Args:
        kind: ``"gaussian"``, ``"rician"`` or ``"poisson_gaussian"``.
        std: Gaussian standard deviation in image units.
        photons: counts per unit intensity (``"poisson_gaussian"`` only).
        seed: seed of the noise.
    """

    def __init__(self, kind: str = "gaussian", std: float = 0.01, photons: float | None = None, seed: int = 0) -> None:
        if kind not in NOISE_KINDS:
            raise ValueError(f"kind: expected one of {NOISE_KINDS}, got {kind!r}")
        self.kind, self.std, self.photons, self.seed = kind, float(std), photons, int(seed)

    def __call__(self, img: Any) -> MetaTensor:
        img = to_metatensor(img)
        data = add_noise(img, self.kind, self.std, self.photons, self.seed)
        extra = {"medsr_noise": {"kind": self.kind, "std": self.std, "photons": float(self.photons or 0.0)}}
        return wrap(data, img, extra=extra)


# ----------------------------------------------------------------------------------------------------------
# deterministic degradations
# ----------------------------------------------------------------------------------------------------------
def _thickness(
    target: Sequence[float | None], gap: Any, thickness: Any, sd: int
) -> tuple[tuple[float | None, ...], tuple[float, ...]]:
    gaps = per_axis(gap, sd, "gap")
    thick = per_axis(thickness, sd, "thickness")
    out = []
    for ax in range(sd):
        g = float(gaps[ax] or 0.0)
        if g < 0:
            raise ValueError(f"gap: axis {ax} must be >= 0 mm, got {g}")
        if thick[ax] is not None:
            out.append(float(thick[ax]))
        elif target[ax] is not None:
            if g >= float(target[ax]):
                raise ValueError(f"gap: axis {ax} gap {g} mm must be smaller than the slice spacing {target[ax]} mm")
            out.append(float(target[ax]) - g)
        else:
            out.append(None)
    return tuple(out), tuple(float(g or 0.0) for g in gaps)


class ThickSlice(Transform):
    """Simulate a thicker slice along the axes where ``target_spacing`` exceeds the image spacing.

    The grid (shape and affine) is kept; each voxel becomes the profile-weighted average of its
    neighbourhood along the degraded axes. Use :class:`SimulateLowResolution` to also decimate.

    Args:
        target_spacing: LR slice spacing in mm per spatial axis (``None`` keeps an axis; a scalar applies to
            every axis).
        profile: slice profile, ``"gaussian"`` (FWHM = slice thickness) or ``"box"`` (width = thickness).
        gap: gap between slices in mm (scalar or per axis); the thickness is ``target_spacing - gap``.
        thickness: slice thickness (profile FWHM/width) in mm per axis, overriding ``target_spacing - gap``.
    """

    def __init__(
        self,
        target_spacing: Sequence[float | None] | float,
        profile: str = "gaussian",
        gap: Sequence[float] | float = 0.0,
        thickness: Sequence[float | None] | float | None = None,
    ) -> None:
        if profile not in ("gaussian", "box"):
            raise ValueError(f"profile: expected 'gaussian' or 'box', got {profile!r}")
        self.target_spacing, self.profile, self.gap, self.thickness = target_spacing, profile, gap, thickness

    def __call__(self, img: Any) -> MetaTensor:
        img = to_metatensor(img)
        sd = img.ndim - 1
        src, factors = resolve_factors(img, self.target_spacing)
        tgt = per_axis(self.target_spacing, sd, "target_spacing")
        thick, gaps = _thickness(tgt, self.gap, self.thickness, sd)
        ops: list[torch.Tensor | None] = []
        for ax in range(sd):
            n = img.shape[ax + 1]
            if factors[ax] <= 1.0 + 1e-9 and thick[ax] is None:
                ops.append(None)
                continue
            width = (thick[ax] if thick[ax] is not None else src[ax]) / src[ax]
            ops.append(profile_operator(n, np.arange(n, dtype=np.float64), width, self.profile))
        data = apply_along(img.as_tensor(), ops)
        extra = {
            "medsr_thick_slice": {
                "profile": self.profile,
                "thickness": [float(t or 0.0) for t in thick],
                "gap": list(gaps),
            }
        }
        return wrap(data, img, extra=extra)


class KSpaceTruncation(Transform):
    """Remove the spatial frequencies above a per-axis cut-off (MRI k-space truncation), keeping the grid.

    The k-space region kept is a box (per-axis limits), not a sphere. The cut-off is given either as a target
    spacing in mm (the kept band is ``|k| <= 1 / (2 target_spacing)`` cycles/mm) or as a fraction of the
    Nyquist frequency per axis (``cutoff=0.25`` keeps the lowest quarter of the band).

    Args:
        target_spacing: resolution in mm per axis to truncate to (``None`` keeps an axis).
        cutoff: alternative to ``target_spacing``: fraction of Nyquist in (0, 1] per axis (``None``/1 keeps).
        window: ``None`` (sharp truncation: Gibbs ringing), ``"hann"`` or ``"tukey"`` over the kept band.
        tukey_alpha: taper fraction of the Tukey window.
    """

    def __init__(
        self,
        target_spacing: Sequence[float | None] | float | None = None,
        cutoff: Sequence[float | None] | float | None = None,
        window: str | None = None,
        tukey_alpha: float = 0.5,
    ) -> None:
        if (target_spacing is None) == (cutoff is None):
            raise ValueError(
                "KSpaceTruncation: give exactly one of target_spacing (mm) or cutoff (fraction of Nyquist)"
            )
        if window not in WINDOWS:
            raise ValueError(f"window: expected one of {WINDOWS}, got {window!r}")
        self.target_spacing, self.cutoff, self.window, self.tukey_alpha = target_spacing, cutoff, window, tukey_alpha

    def cutoffs(self, img: torch.Tensor) -> tuple[float, ...]:
        """Per-axis cut-off as a fraction of Nyquist for ``img``."""
        sd = img.ndim - 1
        if self.cutoff is not None:
            cut = per_axis(self.cutoff, sd, "cutoff")
            out = []
            for ax, c in enumerate(cut):
                c = 1.0 if c is None else float(c)
                if not 0.0 < c <= 1.0:
                    raise ValueError(f"cutoff: axis {ax} must be in (0, 1] (fraction of Nyquist), got {c}")
                out.append(c)
            return tuple(out)
        _, factors = resolve_factors(img, self.target_spacing)
        return tuple(1.0 / f for f in factors)

    def __call__(self, img: Any) -> MetaTensor:
        img = to_metatensor(img)
        sd = img.ndim - 1
        cuts = self.cutoffs(img)
        x = img.as_tensor()
        dims = tuple(range(1, sd + 1))
        k = torch.fft.fftn(x.double(), dim=dims)
        for ax, c in enumerate(cuts):
            if c >= 1.0 and self.window is None:
                continue
            h = torch.from_numpy(kspace_filter(x.shape[ax + 1], c, self.window, self.tukey_alpha))
            shape = [1] * x.ndim
            shape[ax + 1] = -1
            k = k * h.reshape(shape)
        data = torch.fft.ifftn(k, dim=dims).real.to(x.dtype)
        extra = {"medsr_kspace": {"cutoff": list(cuts), "window": str(self.window)}}
        return wrap(data, img, extra=extra)


def simulate_low_resolution(
    img: MetaTensor,
    factors: Sequence[float],
    profile: str = "gaussian",
    thickness_vox: Sequence[float | None] | None = None,
    kspace: Sequence[bool] | None = None,
    window: str | None = None,
    tukey_alpha: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Filter and decimate ``img`` (plain tensor data, LR affine) by per-axis ``factors`` (no checks, no noise)."""
    sd = img.ndim - 1
    ops: list[torch.Tensor | None] = []
    for ax in range(sd):
        n, f = img.shape[ax + 1], _snap(float(factors[ax]))
        width = thickness_vox[ax] if thickness_vox is not None and thickness_vox[ax] is not None else f
        if f <= 1.0 + 1e-9 and (thickness_vox is None or thickness_vox[ax] is None):
            ops.append(None)
            continue
        centres = lr_centres(n, f)
        if kspace is not None and kspace[ax]:
            ops.append(kspace_operator(n, centres, 1.0 / f, window, tukey_alpha))
        else:
            ops.append(profile_operator(n, centres, width, profile, factor=f))
    data = apply_along(img.as_tensor(), ops)
    return data, lr_affine(affine_of(img), [_snap(float(f)) for f in factors])


class SimulateLowResolution(Transform):
    """Simulate an LR acquisition on the LR grid: slice profile or k-space truncation, decimation, noise.

    Along every axis where ``target_spacing`` exceeds the image spacing (factor ``f = target / source``,
    non-integer allowed), the image is integrated with the slice profile (or band-limited in k-space when
    ``kspace`` is set for that axis) and sampled at the LR voxel centres. LR voxel ``j`` sits at the physical
    centre of the HR region ``[j f - 1/2, (j + 1) f - 1/2]`` (HR index units) it integrates, and the returned
    affine says so; ``floor(n / f)`` LR voxels are kept. Noise, if any, is added on the LR grid.

    Args:
        target_spacing: LR spacing in mm per axis (``None`` keeps an axis; scalar for every axis).
        profile: ``"gaussian"`` (FWHM = slice thickness), ``"box"`` (width = thickness) or ``"bicubic"``
            (anti-aliased bicubic resize, as PIL/Matlab; ignores thickness).
        gap: slice gap in mm (scalar or per axis): thickness = target spacing - gap.
        thickness: slice thickness in mm per axis, overriding ``target_spacing - gap``.
        kspace: ``True`` or per-axis booleans: simulate the resolution loss on those axes by k-space truncation
            (MRI frequency/phase encoding or 3D acquisition) instead of a slice profile.
        window: k-space window, ``None``, ``"hann"`` or ``"tukey"``.
        tukey_alpha: Tukey taper fraction.
        noise: ``None`` or a noise kind (``"gaussian"``, ``"rician"``, ``"poisson_gaussian"``).
        noise_std: Gaussian noise standard deviation in image units.
        photons: counts per unit intensity for Poisson–Gaussian noise.
        seed: seed of the noise (deterministic; :class:`RandSimulateLowResolution` draws it).
    """

    def __init__(
        self,
        target_spacing: Sequence[float | None] | float,
        profile: str = "gaussian",
        gap: Sequence[float] | float = 0.0,
        thickness: Sequence[float | None] | float | None = None,
        kspace: bool | Sequence[bool] = False,
        window: str | None = None,
        tukey_alpha: float = 0.5,
        noise: str | None = None,
        noise_std: float = 0.0,
        photons: float | None = None,
        seed: int = 0,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"profile: expected one of {PROFILES}, got {profile!r}")
        if window not in WINDOWS:
            raise ValueError(f"window: expected one of {WINDOWS}, got {window!r}")
        if noise is not None and noise not in NOISE_KINDS:
            raise ValueError(f"noise: expected None or one of {NOISE_KINDS}, got {noise!r}")
        self.target_spacing, self.profile, self.gap, self.thickness = target_spacing, profile, gap, thickness
        self.kspace, self.window, self.tukey_alpha = kspace, window, tukey_alpha
        self.noise, self.noise_std, self.photons, self.seed = noise, float(noise_std), photons, int(seed)

    def __call__(self, img: Any) -> MetaTensor:
        img = to_metatensor(img)
        sd = img.ndim - 1
        src, factors = resolve_factors(img, self.target_spacing)
        tgt = per_axis(self.target_spacing, sd, "target_spacing")
        thick, gaps = _thickness(tgt, self.gap, self.thickness, sd)
        kspace = per_axis(self.kspace, sd, "kspace")
        thick_vox = [None if t is None else t / s for t, s in zip(thick, src)]
        data, affine = simulate_low_resolution(
            img, factors, self.profile, thick_vox, [bool(k) for k in kspace], self.window, self.tukey_alpha
        )
        if self.noise is not None:
            data = add_noise(data, self.noise, self.noise_std, self.photons, self.seed)
        extra = {
            "medsr_degradation": {
                "source_spacing": list(src),
                "factor": [float(f) for f in factors],
                "profile": self.profile,
                "thickness": [float(t or 0.0) for t in thick],
                "gap": list(gaps),
                "kspace": [int(bool(k)) for k in kspace],
                "window": str(self.window),
                "noise": str(self.noise),
                "noise_std": self.noise_std,
                "photons": float(self.photons or 0.0),
            }
        }
        return wrap(data, img, affine=affine, extra=extra)


# ----------------------------------------------------------------------------------------------------------
# random variants: draw parameters from self.R, then call the deterministic transform
# ----------------------------------------------------------------------------------------------------------
def _ranges(value: Any, sd: int, name: str) -> tuple[tuple[float, float] | None, ...]:
    """Per-axis ``(lo, hi)`` ranges from ``None``, a number, a pair, or a per-axis sequence of those."""
    if value is None:
        return (None,) * sd
    if isinstance(value, (int, float)):
        return ((float(value), float(value)),) * sd
    seq = tuple(value)
    if len(seq) == 2 and all(isinstance(v, (int, float)) for v in seq):
        return ((float(seq[0]), float(seq[1])),) * sd
    if len(seq) != sd:
        raise ValueError(f"{name}: expected a (lo, hi) pair or {sd} per-axis entries, got {value!r}")
    out = []
    for ax, v in enumerate(seq):
        if v is None:
            out.append(None)
        elif isinstance(v, (int, float)):
            out.append((float(v), float(v)))
        else:
            lo, hi = (float(t) for t in v)
            if hi < lo:
                raise ValueError(f"{name}: axis {ax} range ({lo}, {hi}) has hi < lo")
            out.append((lo, hi))
    return tuple(out)


class _RandFromParams(RandomizableTransform):
    """A random array transform in torchio's split: :meth:`randomize` draws ``self._params`` from ``self.R``,
    then :meth:`deterministic` builds the deterministic transform that every drawn value is an argument of."""

    _params: dict[str, Any]

    def deterministic(self, img: MetaTensor) -> Transform:
        """The deterministic transform for the drawn parameters (``img`` gives spacing and dimensions)."""
        raise NotImplementedError

    def __call__(self, img: Any, randomize: bool = True) -> MetaTensor:
        img = to_metatensor(img)
        if randomize:
            self.randomize(img)
        if not self._do_transform:
            return img
        return self.deterministic(img)(img)


class RandThickSlice(_RandFromParams):
    """:class:`ThickSlice` with the slice thickness (mm) drawn per axis in ``thickness_range``.

    Args:
        thickness_range: ``(lo, hi)`` in mm for every axis, or per axis (``None`` keeps an axis).
        profiles: profiles to choose from.
        prob: probability of applying.
    """

    def __init__(self, thickness_range: Any, profiles: Sequence[str] = ("gaussian",), prob: float = 1.0) -> None:
        RandomizableTransform.__init__(self, prob)
        self.thickness_range, self.profiles = thickness_range, tuple(profiles)
        self._params: dict[str, Any] = {}

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        sd = data.ndim - 1
        rng = _ranges(self.thickness_range, sd, "thickness_range")
        thick = tuple(None if r is None else float(self.R.uniform(*r)) for r in rng)
        self._params = {"thickness": thick, "profile": self.profiles[int(self.R.randint(len(self.profiles)))]}

    def deterministic(self, img: MetaTensor) -> ThickSlice:
        thick = self._params["thickness"]
        target = tuple(None if t is None else max(t, s) for t, s in zip(thick, spacing_of(img)))
        return ThickSlice(target, self._params["profile"], thickness=thick)


class RandKSpaceTruncation(_RandFromParams):
    """:class:`KSpaceTruncation` with a per-axis cut-off (fraction of Nyquist) drawn in ``cutoff_range``."""

    def __init__(
        self, cutoff_range: Any, windows: Sequence[str | None] = (None,), tukey_alpha: float = 0.5, prob: float = 1.0
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.cutoff_range, self.windows, self.tukey_alpha = cutoff_range, tuple(windows), tukey_alpha
        self._params: dict[str, Any] = {}

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        rng = _ranges(self.cutoff_range, data.ndim - 1, "cutoff_range")
        cut = tuple(None if r is None else float(self.R.uniform(*r)) for r in rng)
        self._params = {"cutoff": cut, "window": self.windows[int(self.R.randint(len(self.windows)))]}

    def deterministic(self, img: MetaTensor) -> KSpaceTruncation:
        return KSpaceTruncation(
            cutoff=self._params["cutoff"], window=self._params["window"], tukey_alpha=self.tukey_alpha
        )


class RandAcquisitionNoise(_RandFromParams):
    """:class:`AcquisitionNoise` with the kind chosen from ``kinds`` and ``std``/``photons`` drawn in ranges."""

    def __init__(
        self,
        kinds: Sequence[str] = ("gaussian",),
        std_range: tuple[float, float] = (0.0, 0.05),
        photons_range: tuple[float, float] = (100.0, 1000.0),
        prob: float = 1.0,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        for k in kinds:
            if k not in NOISE_KINDS:
                raise ValueError(f"kinds: {k!r} is not one of {NOISE_KINDS}")
        self.kinds, self.std_range, self.photons_range = tuple(kinds), std_range, photons_range
        self._params: dict[str, Any] = {}

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._params = {
            "kind": self.kinds[int(self.R.randint(len(self.kinds)))],
            "std": float(self.R.uniform(*self.std_range)),
            "photons": float(self.R.uniform(*self.photons_range)),
            "seed": int(self.R.randint(0, 2**31 - 1)),
        }

    def deterministic(self, img: MetaTensor) -> AcquisitionNoise:
        p = self._params
        return AcquisitionNoise(p["kind"], p["std"], p["photons"], seed=p["seed"])


class RandSimulateLowResolution(_RandFromParams):
    """:class:`SimulateLowResolution` with target spacing (or factor), thickness and noise drawn in ranges.

    Args:
        target_spacing_range: ``(lo, hi)`` mm for every axis or per axis (``None`` keeps an axis).
        scale_factor_range: alternative: dimensionless factor ranges per axis.
        integer_factor: round the drawn factor to an integer (needed for LR/HR pairs fed to networks).
        thickness_ratio_range: slice thickness = ratio × LR spacing, ratio drawn in this range (< 1: gap,
            > 1: overlapping slices).
        profiles: slice profiles to choose from.
        kspace_prob: probability of using k-space truncation (instead of a profile) on every degraded axis.
        window: k-space window.
        noise_kinds: noise kinds to choose from (empty: no noise).
        noise_std_range: Gaussian std range in image units.
        photons_range: Poisson counts per unit intensity range.
        prob: probability of applying at all (otherwise the input is returned unchanged).
    """

    def __init__(
        self,
        target_spacing_range: Any = None,
        scale_factor_range: Any = None,
        integer_factor: bool = False,
        thickness_ratio_range: tuple[float, float] = (1.0, 1.0),
        profiles: Sequence[str] = ("gaussian",),
        kspace_prob: float = 0.0,
        window: str | None = None,
        noise_kinds: Sequence[str] = (),
        noise_std_range: tuple[float, float] = (0.0, 0.0),
        photons_range: tuple[float, float] = (100.0, 1000.0),
        prob: float = 1.0,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if (target_spacing_range is None) == (scale_factor_range is None):
            raise ValueError(
                "RandSimulateLowResolution: give exactly one of target_spacing_range or scale_factor_range"
            )
        self.target_spacing_range, self.scale_factor_range = target_spacing_range, scale_factor_range
        self.integer_factor, self.thickness_ratio_range = integer_factor, thickness_ratio_range
        self.profiles, self.kspace_prob, self.window = tuple(profiles), kspace_prob, window
        self.noise_kinds, self.noise_std_range, self.photons_range = tuple(noise_kinds), noise_std_range, photons_range
        self._params: dict[str, Any] = {}

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        sd = data.ndim - 1
        src = spacing_of(data)
        if self.scale_factor_range is not None:
            rng = _ranges(self.scale_factor_range, sd, "scale_factor_range")
            factors = [1.0 if r is None else float(self.R.uniform(*r)) for r in rng]
        else:
            rng = _ranges(self.target_spacing_range, sd, "target_spacing_range")
            factors = [1.0 if r is None else float(self.R.uniform(*r)) / s for r, s in zip(rng, src)]
        if self.integer_factor:
            factors = [float(max(1, round(f))) for f in factors]
        factors = [max(1.0, f) for f in factors]
        ratio = float(self.R.uniform(*self.thickness_ratio_range))
        target = tuple(f * s if f > 1 else None for f, s in zip(factors, src))
        thickness = tuple(None if t is None else ratio * t for t in target)
        kspace = bool(self.R.uniform() < self.kspace_prob)
        profile = self.profiles[int(self.R.randint(len(self.profiles)))]
        noise = self.noise_kinds[int(self.R.randint(len(self.noise_kinds)))] if self.noise_kinds else None
        self._params = {
            "target_spacing": target,
            "thickness": thickness,
            "kspace": kspace,
            "profile": profile,
            "noise": noise,
            "noise_std": float(self.R.uniform(*self.noise_std_range)),
            "photons": float(self.R.uniform(*self.photons_range)),
            "seed": int(self.R.randint(0, 2**31 - 1)),
        }

    def deterministic(self, img: MetaTensor) -> SimulateLowResolution:
        p = self._params
        return SimulateLowResolution(
            p["target_spacing"],
            profile=p["profile"],
            thickness=p["thickness"],
            kspace=p["kspace"],
            window=self.window,
            noise=p["noise"],
            noise_std=p["noise_std"],
            photons=p["photons"],
            seed=p["seed"],
        )


# ----------------------------------------------------------------------------------------------------------
# dictionary versions
# ----------------------------------------------------------------------------------------------------------
class _Dict(MapTransform):
    """Apply ``self.transform`` to every key; random ones draw once per item and apply to all keys."""

    transform: Any

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        first = True
        for key in self.key_iterator(d):
            if isinstance(self.transform, RandomizableTransform):
                if first:
                    self.transform.randomize(to_metatensor(d[key], name=str(key)))
                    first = False
                d[key] = self.transform(d[key], randomize=False)
            else:
                d[key] = self.transform(d[key])
        return d


class _RandDict(Randomizable, _Dict):
    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> _RandDict:
        self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:  # drawing happens in the wrapped transform
        pass


class ThickSliced(_Dict):
    """Dictionary version of :class:`ThickSlice`."""

    def __init__(self, keys: KeysCollection, target_spacing: Any, profile: str = "gaussian", gap: Any = 0.0,
                 thickness: Any = None, allow_missing_keys: bool = False) -> None:  # fmt: skip
        super().__init__(keys, allow_missing_keys)
        self.transform = ThickSlice(target_spacing, profile, gap, thickness)


class KSpaceTruncationd(_Dict):
    """Dictionary version of :class:`KSpaceTruncation`."""

    def __init__(self, keys: KeysCollection, target_spacing: Any = None, cutoff: Any = None, window: str | None = None,
                 tukey_alpha: float = 0.5, allow_missing_keys: bool = False) -> None:  # fmt: skip
        super().__init__(keys, allow_missing_keys)
        self.transform = KSpaceTruncation(target_spacing, cutoff, window, tukey_alpha)


class AcquisitionNoised(_Dict):
    """Dictionary version of :class:`AcquisitionNoise` (the same seed for every key)."""

    def __init__(self, keys: KeysCollection, kind: str = "gaussian", std: float = 0.01, photons: float | None = None,
                 seed: int = 0, allow_missing_keys: bool = False) -> None:  # fmt: skip
        super().__init__(keys, allow_missing_keys)
        self.transform = AcquisitionNoise(kind, std, photons, seed)


class SimulateLowResolutiond(_Dict):
    """Dictionary version of :class:`SimulateLowResolution` (same arguments after ``keys``)."""

    def __init__(
        self, keys: KeysCollection, target_spacing: Any, allow_missing_keys: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SimulateLowResolution(target_spacing, **kwargs)


class RandThickSliced(_RandDict):
    """Dictionary version of :class:`RandThickSlice`."""

    def __init__(self, keys: KeysCollection, thickness_range: Any, profiles: Sequence[str] = ("gaussian",),
                 prob: float = 1.0, allow_missing_keys: bool = False) -> None:  # fmt: skip
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = RandThickSlice(thickness_range, profiles, prob)


class RandKSpaceTruncationd(_RandDict):
    """Dictionary version of :class:`RandKSpaceTruncation`."""

    def __init__(self, keys: KeysCollection, cutoff_range: Any, windows: Sequence[str | None] = (None,),
                 tukey_alpha: float = 0.5, prob: float = 1.0, allow_missing_keys: bool = False) -> None:  # fmt: skip
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = RandKSpaceTruncation(cutoff_range, windows, tukey_alpha, prob)


class RandAcquisitionNoised(_RandDict):
    """Dictionary version of :class:`RandAcquisitionNoise`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = RandAcquisitionNoise(**kwargs)


class RandSimulateLowResolutiond(_RandDict):
    """Dictionary version of :class:`RandSimulateLowResolution`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = RandSimulateLowResolution(**kwargs)


ThickSliceD = ThickSliceDict = ThickSliced
KSpaceTruncationD = KSpaceTruncationDict = KSpaceTruncationd
AcquisitionNoiseD = AcquisitionNoiseDict = AcquisitionNoised
SimulateLowResolutionD = SimulateLowResolutionDict = SimulateLowResolutiond
RandThickSliceD = RandThickSliceDict = RandThickSliced
RandKSpaceTruncationD = RandKSpaceTruncationDict = RandKSpaceTruncationd
RandAcquisitionNoiseD = RandAcquisitionNoiseDict = RandAcquisitionNoised
RandSimulateLowResolutionD = RandSimulateLowResolutionDict = RandSimulateLowResolutiond
