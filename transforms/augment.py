"""Training augmentations applied to the HR patch before pairing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.transforms import RandFlipd, RandRotate90d

from medsr.transforms.geometry import parse_scale

__all__ = ["augmentations"]


def augmentations(
    enabled: bool,
    spatial_dims: int,
    patch_size: Sequence[int],
    scale: Any,
    keys: Sequence[str] = ("image", "mask", "label"),
) -> list:
    """Random flips on every spatial axis and in-plane 90° rotations (when the in-plane patch is square).

    Used on the HR patch before pairing (the edsr_ise_gan study's "random flip & rotations"); an empty list
    when ``enabled`` is false.
    """
    if not enabled:
        return []
    out: list = [
        RandFlipd(keys=list(keys), prob=0.5, spatial_axis=ax, allow_missing_keys=True) for ax in range(spatial_dims)
    ]
    factors = parse_scale(scale, spatial_dims)
    if patch_size[0] == patch_size[1] and factors[0] == factors[1]:
        out.append(RandRotate90d(keys=list(keys), prob=0.5, spatial_axes=(0, 1), allow_missing_keys=True))
    return out
