"""LR/HR pairing: shapes, both affines, masks binary and aligned at both resolutions, errors, randomness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor, list_data_collate
from monai.transforms import Compose

from medsr.transforms import (
    MakeSRPaird,
    MaskAwareCropd,
    PercentileNormalized,
    RandMakeSRPaird,
    eval_degradation,
    pair_transform,
)


def oblique(spacing):
    a = math.radians(30.0)
    rot = np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
    aff = np.eye(4)
    sp = list(spacing) + [1.0] * (3 - len(spacing))
    aff[:3, :3] = rot @ np.diag(sp)
    aff[:3, 3] = [10.0, -20.0, 33.0]
    return torch.as_tensor(aff)


CASES = [
    pytest.param((18, 22), (0.5, 0.7), (2, 2), id="2d-2x2"),
    pytest.param((10, 9, 21), (0.9, 0.9, 1.0), (1, 1, 4), id="3d-1x1x4"),
]


def item(shape, spacing):
    sd = len(shape)
    aff = oblique(spacing)
    img = MetaTensor(torch.rand(1, *shape) + 0.5, affine=aff)
    mask = torch.zeros(1, *shape, dtype=torch.uint8)
    mask[(0,) + tuple(slice(2, 2 + 2 * (s // 4)) for s in shape)] = 1  # block-aligned box for even factors
    label = torch.ones(1, *shape, dtype=torch.int64)
    label[(0,) + tuple(slice(0, s // 2) for s in shape)] = 2
    del sd
    return {"image": img, "mask": MetaTensor(mask, affine=aff), "label": MetaTensor(label, affine=aff), "id": "case-1"}


@pytest.mark.parametrize("shape,spacing,scale", CASES)
@pytest.mark.parametrize("mode", ["physical", "bicubic"])
def test_pair_shapes_affines_and_masks(shape, spacing, scale, mode):
    sd = len(shape)
    d = item(shape, spacing)
    out = MakeSRPaird(scale_factor=scale, mode=mode)(d)
    assert set(out) == {"hr", "lr", "mask", "mask_lr", "label", "label_lr", "id"}
    hr, lr = out["hr"], out["lr"]
    keep = [(n // f) * f for n, f in zip(shape, scale)]
    assert list(hr.shape[1:]) == keep and list(lr.shape[1:]) == [k // f for k, f in zip(keep, scale)]
    torch.testing.assert_close(hr.affine, d["image"].affine)  # cropping at the far end keeps the origin
    torch.testing.assert_close(
        hr.as_tensor(), d["image"][(slice(None),) + tuple(slice(0, k) for k in keep)].as_tensor()
    )
    # LR voxel j through the LR affine = centre of HR block j through the HR affine
    for j in [(0,) * sd, tuple(s - 1 for s in lr.shape[1:])]:
        c = np.array([(jj + 0.5) * f - 0.5 for jj, f in zip(j, scale)])
        w_lr = lr.affine[:sd, :sd].numpy() @ np.array(j) + lr.affine[:sd, 3].numpy()
        w_hr = hr.affine[:sd, :sd].numpy() @ c + hr.affine[:sd, 3].numpy()
        np.testing.assert_allclose(w_lr, w_hr, atol=1e-9)
    for k in ("mask", "label"):
        torch.testing.assert_close(out[f"{k}_lr"].affine, lr.affine)
        torch.testing.assert_close(out[k].affine, hr.affine)
        assert out[f"{k}_lr"].shape[1:] == lr.shape[1:] and out[k].shape[1:] == hr.shape[1:]
        assert out[f"{k}_lr"].dtype == d[k].dtype
    m_hr, m_lr = out["mask"].as_tensor(), out["mask_lr"].as_tensor()
    assert set(torch.unique(m_lr).tolist()) <= {0, 1}
    # each LR mask voxel is the majority of its HR block
    blocks = m_hr.float().reshape(1, *[x for n, f in zip(m_hr.shape[1:], scale) for x in (n // f, f)])
    frac = blocks.mean(dim=tuple(range(2, 2 + 2 * sd, 2)))
    assert torch.equal(m_lr.bool(), frac >= 0.5)
    assert set(torch.unique(out["label_lr"]).tolist()) == {1, 2}
    assert lr.meta["medsr_pair"]["scale_factor"] == list(scale)
    assert float(lr.mean()) == pytest.approx(float(hr.mean()), rel=0.01)


def test_any_overlap_mode_and_target_spacing():
    d = item((10, 9, 21), (0.9, 0.9, 1.0))
    d["mask"] = MetaTensor(torch.zeros(1, 10, 9, 21, dtype=torch.uint8), affine=d["image"].affine)
    d["mask"][0, 3, 3, 5] = 1  # a single voxel
    maj = MakeSRPaird(target_spacing=(None, None, 4.0), mask_mode="majority")(d)
    anyo = MakeSRPaird(target_spacing=(None, None, 4.0), mask_mode="any")(d)
    assert int(maj["mask_lr"].sum()) == 0 and int(anyo["mask_lr"].sum()) == 1 and int(anyo["mask_lr"][0, 3, 3, 1]) == 1
    np.testing.assert_allclose(maj["lr"].pixdim[:3].numpy(), [0.9, 0.9, 4.0], rtol=1e-9)


def test_pair_errors():
    d = item((16, 16), (1.0, 1.0))
    with pytest.raises(ValueError, match="exactly one of scale_factor"):
        MakeSRPaird()
    with pytest.raises(ValueError, match=r"target_spacing: axis 0 is 0.5 mm, finer than the source spacing 1 mm"):
        MakeSRPaird(target_spacing=(0.5, 2.0))(d)
    with pytest.raises(ValueError, match="integer factor"):
        MakeSRPaird(target_spacing=(1.0, 2.5))(d)
    bad = dict(d, mask=MetaTensor(torch.ones(1, 16, 15), affine=d["image"].affine))
    with pytest.raises(ValueError, match=r"mask 'mask': spatial shape \(16, 15\) does not match image 'image'"):
        MakeSRPaird(scale_factor=2)(bad)
    moved = d["image"].affine.clone()
    moved[0, 3] += 5.0
    bad = dict(d, mask=MetaTensor(torch.ones(1, 16, 16), affine=moved))
    with pytest.raises(ValueError, match="mask 'mask': affine does not match image 'image'"):
        MakeSRPaird(scale_factor=2)(bad)
    bad = dict(d, mask=MetaTensor(torch.full((1, 16, 16), 3.0), affine=d["image"].affine))
    with pytest.raises(ValueError, match="is not binary"):
        MakeSRPaird(scale_factor=2)(bad)
    bad = dict(d, image=MetaTensor(torch.full((1, 16, 16), float("nan"))))
    with pytest.raises(ValueError, match="contains NaN"):
        MakeSRPaird(scale_factor=2)(bad)
    with pytest.raises(ValueError, match="channel"):
        MakeSRPaird(scale_factor=2)({"image": torch.rand(32, 32, 32)})


@pytest.mark.parametrize("shape,spacing,scale", CASES)
def test_random_pairs_reproducible_and_pipeline_collates(shape, spacing, scale):
    sd = len(shape)
    patch = tuple(4 * f for f in scale) if sd == 2 else (6, 6, 16)
    pipeline = Compose(
        [
            PercentileNormalized("image", mask_key="mask"),
            MaskAwareCropd(("image", "mask", "label"), "mask", patch_size=patch, scale_factor=scale, num_samples=2),
            RandMakeSRPaird(
                [scale],
                thickness_ratio_range=(0.8, 1.2),
                profiles=("gaussian", "box"),
                noise_kinds=("rician",),
                noise_std_range=(0.01, 0.03),
            ),  # fmt: skip
        ]
    )
    d = item(shape, spacing)
    pipeline.set_random_state(11)
    a = pipeline(d)
    pipeline.set_random_state(11)
    b = pipeline(d)
    pipeline.set_random_state(12)
    c = pipeline(d)
    for u, v in zip(a, b):
        assert torch.equal(u["lr"], v["lr"]) and torch.equal(u["hr"], v["hr"])
    assert any(not torch.equal(u["lr"], w["lr"]) for u, w in zip(a, c))
    batch = list_data_collate(a)
    assert batch["lr"].shape == (2, 1, *[p // f for p, f in zip(patch, scale)]) and batch["hr"].shape == (2, 1, *patch)
    assert batch["mask_lr"].shape[2:] == batch["lr"].shape[2:]
    loader = DataLoader(a, batch_size=2, collate_fn=list_data_collate)
    assert next(iter(loader))["hr"].shape == batch["hr"].shape


@pytest.mark.parametrize("shape,spacing,scale", CASES)
def test_pair_noise_statistics_and_seed(shape, spacing, scale):
    """Noise on the pair's LR: the asked std, reproduced by its seed, changed by another; HR untouched."""
    d = item(shape, spacing)
    clean = MakeSRPaird(scale_factor=scale)(d)
    noisy = MakeSRPaird(scale_factor=scale, noise="gaussian", noise_std=0.05, seed=5)(d)
    diff = (noisy["lr"] - clean["lr"]).as_tensor()
    assert float(diff.std()) == pytest.approx(0.05, rel=0.25) and abs(float(diff.mean())) < 0.02
    assert torch.equal(noisy["hr"], clean["hr"])
    assert torch.equal(noisy["lr"], MakeSRPaird(scale_factor=scale, noise="gaussian", noise_std=0.05, seed=5)(d)["lr"])
    assert not torch.equal(
        noisy["lr"], MakeSRPaird(scale_factor=scale, noise="gaussian", noise_std=0.05, seed=6)(d)["lr"]
    )
    rand = RandMakeSRPaird([scale], noise_kinds=("gaussian",), noise_std_range=(0.05, 0.05))
    rand.set_random_state(0)
    first, second = rand(d)["lr"], rand(d)["lr"]
    assert not torch.equal(first, second)  # the Rand version draws a new seed per call


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bicubic_pair_equals_pil_resize(factor):
    """mode="bicubic" is PIL's antialiased ``Image.resize(..., Image.BICUBIC)`` of the (cropped) float image."""
    from PIL import Image

    a = np.random.default_rng(factor).random((40, 37)).astype(np.float32)
    out = MakeSRPaird(scale_factor=factor, mode="bicubic")({"image": MetaTensor(torch.from_numpy(a)[None])})
    h, w = (40 // factor) * factor, (37 // factor) * factor
    pil = np.asarray(Image.fromarray(a[:h, :w], mode="F").resize((w // factor, h // factor), Image.BICUBIC))
    np.testing.assert_allclose(out["lr"][0].numpy(), pil, atol=1e-5)


def test_mixed_degradation_draws_both_modes_per_item():
    """``degradation="mixed"``: one training pair transform that gives bicubic or physical pairs, each exactly the
    deterministic pair of the drawn mode; validation/evaluation of a mixed bundle use physical pairs."""
    img = MetaTensor(torch.rand(1, 48, 40) * 100, affine=torch.diag(torch.tensor([0.8, 0.8, 1.0, 1.0])))
    t = pair_transform("mixed", (2, 2), image_key="image", mask_keys=[], label_keys=[])
    assert isinstance(t, RandMakeSRPaird)
    t.set_random_state(3)
    seen = []
    for _ in range(12):
        t.randomize()
        mode = t._params["mode"]
        seen.append(mode)
        out = t.deterministic({"image": img})({"image": img})
        ref = MakeSRPaird(scale_factor=(2, 2), mode=mode, mask_keys=[], label_keys=[])({"image": img})
        assert torch.equal(out["lr"], ref["lr"]) and out["lr"].meta["medsr_pair"]["mode"] == mode
    assert set(seen) == {"bicubic", "physical"}
    bic = MakeSRPaird(scale_factor=2, mode="bicubic", mask_keys=[], label_keys=[])({"image": img})["lr"]
    phy = MakeSRPaird(scale_factor=2, mode="physical", mask_keys=[], label_keys=[])({"image": img})["lr"]
    assert not torch.allclose(bic, phy)  # the two modes are different degradations
    for mode in ("physical", "bicubic"):
        assert isinstance(pair_transform(mode, 2), MakeSRPaird) and pair_transform(mode, 2).mode == mode
        assert eval_degradation(mode) == mode
    assert eval_degradation("mixed") == "physical"
    with pytest.raises(ValueError, match="degradation: expected one of .*'mixed'.*got 'lanczos'"):
        pair_transform("lanczos", 2)
    with pytest.raises(ValueError, match="modes: expected 'physical' and/or 'bicubic'"):
        RandMakeSRPaird([2], modes=("bicubic", "box"))


def test_realistic_degradation_mix():
    """``degradation="realistic"``: bicubic on about two items in three, else a Gaussian or box PSF, noise on
    every item within 0-1 % of the range; validated and evaluated on bicubic pairs."""
    img = MetaTensor(torch.rand(1, 48, 40), affine=torch.diag(torch.tensor([0.8, 0.8, 1.0, 1.0])))
    t = pair_transform("realistic", (2, 2), image_key="image", mask_keys=[], label_keys=[])
    assert isinstance(t, RandMakeSRPaird)
    t.set_random_state(0)
    modes, profiles, stds = [], set(), []
    for _ in range(90):
        t.randomize()
        p = t._params
        modes.append(p["mode"])
        stds.append(p["noise_std"])
        assert p["noise"] == "gaussian"
        if p["mode"] == "physical":
            profiles.add(p["profile"])
    assert 0.5 < modes.count("bicubic") / len(modes) < 0.8
    assert profiles == {"gaussian", "box"} and 0.0 <= min(stds) and max(stds) <= 0.01
    out = t({"image": img})
    assert out["lr"].shape == (1, 24, 20) and out["hr"].shape == (1, 48, 40)
    assert eval_degradation("realistic") == "bicubic"
