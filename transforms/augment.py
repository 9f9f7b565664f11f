"""Training augmentations applied to the HR patch before pairing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandFlipd, RandomizableTransform, RandRotate90d

from medsr.transforms.degradation import RandAcquisitionNoised, _RandDict
from medsr.transforms.geometry import parse_scale

__all__ = ["augmentations", "RandContrastRemap", "RandContrastRemapd", "RandContrastRemapD", "RandContrastRemapDict"]


def augmentations(
    enabled: bool,
    spatial_dims: int,
    patch_size: Sequence[int],
    scale: Any,
    keys: Sequence[str] = ("image", "mask", "label"),
    hr_noise: float = 0.0,
    hr_contrast: float = 0.0,
) -> list:
    """Random flips on every spatial axis and in-plane 90° rotations (when the in-plane patch is square).

    Used on the HR patch before pairing (the edsr_ise_gan study's "random flip & rotations"); no flips or
    rotations when ``enabled`` is false.

    ``hr_noise > 0`` also adds acquisition noise to the HR image of half the patches, before pairing: Rician
    (magnitude MR) or Gaussian, std drawn in ``[0, hr_noise]`` of the normalised range. The pair's LR is then
    the degraded noisy image and its target the noisy image itself, as in a real scan (the noise is there at
    full resolution), so the network sees LR noise it should not sharpen into structure; the clean templates
    and photographs of the corpus carry none. (Fine-tuning the x2 default with ``hr_noise=0.03`` left its
    out-of-distribution figure unchanged: README, "Quality against interpolation".)

    ``hr_contrast > 0`` remaps the HR image's intensities on that share of the patches, before pairing
    (:class:`RandContrastRemapd`: a random gamma in [0.5, 2] within the image's own range, inverted on half of
    those draws), meant to let a T1 template's contrast also stand in for the T2, PD or FLAIR slices users
    bring. (Training the x2 default's recipe with ``hr_contrast=0.5`` left its out-of-distribution figure level,
    +2.04 against +2.02 dB, and lowered the held-out fundus image: README, "Quality against interpolation".)
    """
    if not 0.0 <= hr_contrast <= 1.0:
        raise ValueError(f"hr_contrast: must be a probability in [0, 1], got {hr_contrast}")
    if hr_noise < 0:
        raise ValueError(f"hr_noise: must be >= 0 (std as a fraction of the normalised range), got {hr_noise}")
    out: list = []
    if enabled:
        out += [
            RandFlipd(keys=list(keys), prob=0.5, spatial_axis=ax, allow_missing_keys=True) for ax in range(spatial_dims)
        ]
        factors = parse_scale(scale, spatial_dims)
        if patch_size[0] == patch_size[1] and factors[0] == factors[1]:
            out.append(RandRotate90d(keys=list(keys), prob=0.5, spatial_axes=(0, 1), allow_missing_keys=True))
    if hr_noise > 0:
        noise = RandAcquisitionNoised(keys=keys[0], kinds=("rician", "gaussian"), std_range=(0.0, hr_noise), prob=0.5)
        out.append(noise)
    if hr_contrast > 0:
        out.append(RandContrastRemapd(keys=keys[0], prob=hr_contrast))
    return out


class RandContrastRemap(RandomizableTransform):
    """A random monotonic remap of the intensities between the image's own minimum and maximum, meant to let one
    source's tissue contrast stand in for others (a T1 template's grey/white ordering reversed, its mid-tones
    compressed or stretched, as in a T2, PD or FLAIR slice). Measured on the x2 recipe: no out-of-distribution
    gain (see :func:`augmentations`).

    With probability ``prob``: ``t = (x - min) / (max - min)``, then ``t ** gamma`` with ``gamma`` drawn
    log-uniformly in ``[1 / max_gamma, max_gamma]``, then ``1 - t`` with probability ``invert_prob``, mapped back
    to ``[min, max]``. The range, the shape and the meta (affine, spacing) are kept; an image of one value is
    returned unchanged. Applied to the HR image before pairing, the LR is degraded from the remapped image.
    """

    def __init__(self, max_gamma: float = 2.0, invert_prob: float = 0.5, prob: float = 1.0) -> None:
        if max_gamma < 1.0:
            raise ValueError(f"max_gamma: must be >= 1 (gamma is drawn in [1/max_gamma, max_gamma]), got {max_gamma}")
        if not 0.0 <= invert_prob <= 1.0:
            raise ValueError(f"invert_prob: must be a probability in [0, 1], got {invert_prob}")
        RandomizableTransform.__init__(self, prob)
        self.max_gamma, self.invert_prob = float(max_gamma), float(invert_prob)
        self.gamma, self.invert = 1.0, False

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        log_g = math.log(self.max_gamma)
        self.gamma = float(math.exp(self.R.uniform(-log_g, log_g)))
        self.invert = bool(self.R.rand() < self.invert_prob)

    def __call__(self, img: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        lo, hi = img.min(), img.max()
        if not bool(hi > lo):
            return img
        t = ((img - lo) / (hi - lo)).clamp(0.0, 1.0) ** self.gamma
        if self.invert:
            t = 1.0 - t
        return t * (hi - lo) + lo


class RandContrastRemapd(_RandDict):
    """Dictionary version of :class:`RandContrastRemap` (one draw per item, shared by all ``keys``)."""

    def __init__(self, keys: KeysCollection, max_gamma: float = 2.0, invert_prob: float = 0.5, prob: float = 1.0,
                 allow_missing_keys: bool = False) -> None:  # fmt: skip
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = RandContrastRemap(max_gamma, invert_prob, prob)


RandContrastRemapD = RandContrastRemapDict = RandContrastRemapd
