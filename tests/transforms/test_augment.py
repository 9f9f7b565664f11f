"""Training augmentations: what the flips and in-plane rotations do to the HR patch and its masks."""

from __future__ import annotations

import pytest
import torch
from monai.transforms import Compose

from medsr.transforms import augmentations


def _variants(x: torch.Tensor, spatial_dims: int, rotate: bool) -> list[torch.Tensor]:
    """Every result of flipping any subset of the spatial axes (then rotating in-plane by 90° or not)."""
    out = []
    for bits in range(2**spatial_dims):
        y = x
        for ax in range(spatial_dims):
            if bits >> ax & 1:
                y = torch.flip(y, dims=(ax + 1,))
        out.append(y)
        if rotate:
            out.append(torch.rot90(y, 1, dims=(1, 2)))
    return out


@pytest.mark.parametrize(
    "spatial_dims,patch,scale,rotate",
    [(2, (6, 6), 2, True), (2, (6, 4), 2, False), (3, (4, 4, 6), (1, 1, 2), True), (3, (4, 4, 6), (2, 1, 1), False)],
)
def test_augmentations_flip_and_rotate_every_key_alike(spatial_dims, patch, scale, rotate):
    assert augmentations(False, spatial_dims, patch, scale) == []
    aug = Compose(augmentations(True, spatial_dims, patch, scale))
    image = torch.arange(torch.Size(patch).numel(), dtype=torch.float32).reshape(1, *patch)
    mask = (image % 3 == 0).to(torch.uint8)
    allowed = _variants(image, spatial_dims, rotate)
    seen = set()
    for seed in range(24):
        aug.set_random_state(seed)
        out = aug({"image": image.clone(), "mask": mask.clone()})
        got = torch.as_tensor(out["image"])
        hits = [i for i, v in enumerate(allowed) if v.shape == got.shape and torch.equal(v, got)]
        assert hits, f"seed {seed}: not a flip/in-plane rotation of the patch"
        seen.add(hits[0])
        assert torch.equal(torch.as_tensor(out["mask"]), (got % 3 == 0).to(torch.uint8))  # mask moved alike
    assert len(seen) >= min(len(allowed), 6)  # the draws do vary
    if rotate:
        assert any(i % 2 == 1 for i in seen)  # rotations happen
