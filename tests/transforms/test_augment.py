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


def test_hr_noise_adds_rician_or_gaussian_noise_to_the_image_of_half_the_patches():
    """``hr_noise``: the HR image (not its masks) gets noise of std up to ``hr_noise`` on about half the draws,
    with or without the flips; 0 adds nothing; a negative value is refused in one line naming it."""
    assert augmentations(False, 2, (32, 32), 2, hr_noise=0.0) == []
    aug = Compose(augmentations(False, 2, (32, 32), 2, hr_noise=0.05))
    image = torch.full((1, 32, 32), 0.5)
    mask = torch.ones((1, 32, 32), dtype=torch.uint8)
    changed, stds = 0, []
    for seed in range(40):
        aug.set_random_state(seed)
        out = aug({"image": image.clone(), "mask": mask.clone()})
        assert torch.equal(torch.as_tensor(out["mask"]), mask)
        diff = torch.as_tensor(out["image"]) - image
        if diff.abs().max() > 0:
            changed += 1
            stds.append(float(diff.std()))
    assert 10 <= changed <= 30  # prob 0.5
    assert max(stds) <= 0.05 * 1.3 and max(stds) > 0.02  # std drawn in [0, 0.05]
    with pytest.raises(ValueError, match="hr_noise: must be >= 0"):
        augmentations(True, 2, (32, 32), 2, hr_noise=-0.1)


def test_bundle_hr_noise_knob_reaches_the_training_transforms(monkeypatch):
    """``--hr_noise`` on any bundle adds the noise to its training chain, after the crop and before the pair."""
    from pathlib import Path

    from monai.bundle import ConfigParser

    from medsr.transforms import RandAcquisitionNoised

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    for hr_noise, expected in ((0.0, 0), (0.03, 1)):
        parser = ConfigParser()
        parser.read_config("bundles/rdn/train.json")
        parser["hr_noise"] = hr_noise
        chain = parser.get_parsed_content("data#train_transforms").transforms
        names = [type(t).__name__ for t in chain]
        assert names.count("RandAcquisitionNoised") == expected
        if expected:
            i = next(k for k, t in enumerate(chain) if isinstance(t, RandAcquisitionNoised))
            assert names.index("MaskAwareCropd") < i < names.index("MakeSRPaird")
            assert chain[i].transform.std_range == (0.0, 0.03)


def test_contrast_remap_is_a_monotonic_gamma_or_its_inversion_within_the_image_range():
    """``RandContrastRemap``: a gamma drawn log-uniformly in ``[1/max_gamma, max_gamma]`` on the image scaled to
    its own [min, max], inverted on about ``invert_prob`` of the draws; the range and the meta are kept."""
    from monai.data import MetaTensor

    from medsr.transforms import RandContrastRemap

    ramp = torch.linspace(2.0, 6.0, 64).reshape(1, 8, 8)
    image = MetaTensor(ramp, affine=torch.diag(torch.tensor([0.5, 0.7, 1.0, 1.0])))
    remap = RandContrastRemap(max_gamma=2.0, invert_prob=0.5, prob=1.0)
    gammas, inverted = [], 0
    for seed in range(60):
        remap.set_random_state(seed)
        out = remap(image)
        assert isinstance(out, MetaTensor) and torch.equal(out.affine, image.affine)
        assert torch.isclose(out.min(), torch.tensor(2.0)) and torch.isclose(out.max(), torch.tensor(6.0))
        t = (ramp - 2.0) / 4.0
        expected = t**remap.gamma
        if remap.invert:
            inverted += 1
            expected = 1.0 - expected
        torch.testing.assert_close(out.as_tensor(), expected * 4.0 + 2.0)
        steps = torch.diff(out.as_tensor().flatten())
        assert (steps <= 0).all() if remap.invert else (steps >= 0).all()  # monotonic either way
        gammas.append(remap.gamma)
    assert 0.5 <= min(gammas) < 0.7 and 1.5 < max(gammas) <= 2.0
    assert 20 <= inverted <= 40
    flat = torch.full((1, 4, 4), 3.0)
    assert torch.equal(remap(flat), flat)  # one value: nothing to remap
    with pytest.raises(ValueError, match="max_gamma: must be >= 1"):
        RandContrastRemap(max_gamma=0.5)


def test_hr_contrast_remaps_the_image_of_that_share_of_the_patches_not_its_masks():
    """``hr_contrast``: the HR image (not its mask) is remapped on about ``hr_contrast`` of the draws; 0 adds no
    transform; a value outside [0, 1] is refused in one line naming it."""
    assert augmentations(False, 2, (32, 32), 2, hr_contrast=0.0) == []
    aug = Compose(augmentations(False, 2, (32, 32), 2, hr_contrast=0.5))
    image = torch.linspace(0.0, 1.0, 32 * 32).reshape(1, 32, 32)
    mask = torch.ones((1, 32, 32), dtype=torch.uint8)
    changed = 0
    for seed in range(40):
        aug.set_random_state(seed)
        out = aug({"image": image.clone(), "mask": mask.clone()})
        assert torch.equal(torch.as_tensor(out["mask"]), mask)
        changed += int(not torch.allclose(torch.as_tensor(out["image"]), image))
    assert 10 <= changed <= 30  # prob 0.5
    with pytest.raises(ValueError, match="hr_contrast: must be a probability"):
        augmentations(True, 2, (32, 32), 2, hr_contrast=1.5)


def test_bundle_hr_contrast_knob_reaches_the_training_transforms(monkeypatch):
    """``--hr_contrast`` on any bundle remaps the HR image in its training chain, after the crop, before the pair."""
    from pathlib import Path

    from monai.bundle import ConfigParser

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    for bundle in ("rdn", "esrgan_se", "vdsr"):
        for hr_contrast, expected in ((0.0, 0), (0.5, 1)):
            parser = ConfigParser()
            parser.read_config(f"bundles/{bundle}/train.json")
            parser["hr_contrast"] = hr_contrast
            chain = parser.get_parsed_content("data#train_transforms").transforms
            names = [type(t).__name__ for t in chain]
            assert names.count("RandContrastRemapd") == expected, bundle
            if expected:
                i = names.index("RandContrastRemapd")
                assert names.index("MaskAwareCropd") < i < names.index("MakeSRPaird")
                assert chain[i].transform.prob == 0.5
