"""Training augmentations applied to the HR patch before pairing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.transforms import RandFlipd, RandRotate90d

from medsr.transforms.degradation import RandAcquisitionNoised
from medsr.transforms.geometry import parse_scale

__all__ = ["augmentations"]


def augmentations(
    enabled: bool,
    spatial_dims: int,
    patch_size: Sequence[int],
    scale: Any,
    keys: Sequence[str] = ("image", "mask", "label"),
    hr_noise: float = 0.0,
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
    """
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
    return out
