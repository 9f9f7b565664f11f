"""Metrics: scikit-image equivalence, region SSIM semantics, MONAI/ignite wrappers, error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from medsr.pipeline.handlers import RegionSSIMHandler
from medsr.pipeline.metrics import (
    PSNRMetric,
    RegionSSIMMetric,
    SSIMMetric,
    make_regions,
    ms_ssim,
    mse,
    nrmse,
    psnr,
    region_psnr,
    region_ssim,
    ssim,
    ssim_map,
)
from medsr.pipeline.metrics._core import gaussian_taps, iter_ssim_chunks

SHAPES = {2: (48, 56), 3: (24, 28, 26)}


def _pair(nd: int, rng: np.random.Generator, scale: float = 1.0):
    a = rng.random(SHAPES[nd]) * scale
    b = np.clip(a + 0.1 * scale * rng.standard_normal(a.shape), 0, scale)
    return a, b


def _sk(a, b, r=1.0, **kw):
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=r, **kw
    )


@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("data_range", [1.0, 4095.0])
def test_ssim_matches_skimage(nd, data_range):
    rng = np.random.default_rng(1)
    a, b = _pair(nd, rng, data_range)
    ref, full = _sk(a, b, data_range, full=True)
    got = ssim(torch.from_numpy(b)[None], torch.from_numpy(a)[None], data_range, spatial_dims=nd)
    assert got.ndim == 0 and abs(float(got) - ref) < 1e-4
    # chunking does not change the value, and the portable torch path agrees
    assert (
        abs(
            float(ssim(torch.from_numpy(b)[None], torch.from_numpy(a)[None], data_range, spatial_dims=nd, chunk=1))
            - ref
        )
        < 1e-4
    )
    taps = gaussian_taps()
    # a slab is only valid until the next one: copy it
    vals = [
        torch.as_tensor(s).clone()
        for _, s in iter_ssim_chunks(torch.from_numpy(b), torch.from_numpy(a), data_range, taps, chunk=3)
    ]
    assert abs(float(torch.cat([v.flatten() for v in vals]).double().mean()) - ref) < 1e-4
    # the full map matches skimage's full=True map (reflect border)
    m = ssim_map(torch.from_numpy(b)[None], torch.from_numpy(a)[None], data_range, spatial_dims=nd)[0].numpy()
    assert np.abs(m - full).max() < 1e-4


@pytest.mark.parametrize("nd", [2, 3])
def test_batched_multichannel_and_pixel_metrics(nd):
    rng = np.random.default_rng(2)
    pairs = [_pair(nd, rng) for _ in range(4)]
    pred = torch.from_numpy(np.stack([b for _, b in pairs])).reshape(2, 2, *SHAPES[nd])
    target = torch.from_numpy(np.stack([a for a, _ in pairs])).reshape(2, 2, *SHAPES[nd])
    got = ssim(pred, target, 1.0, spatial_dims=nd)
    expect = [np.mean([_sk(pairs[2 * i + c][0], pairs[2 * i + c][1]) for c in range(2)]) for i in range(2)]
    assert got.shape == (2,) and np.allclose(got.numpy(), expect, atol=1e-4)
    a, b = pairs[0]
    assert math.isclose(
        float(psnr(torch.from_numpy(b)[None], torch.from_numpy(a)[None], 1.0, spatial_dims=nd)),
        peak_signal_noise_ratio(a, b, data_range=1.0),
        rel_tol=1e-9,
    )
    assert math.isclose(
        float(nrmse(torch.from_numpy(b)[None], torch.from_numpy(a)[None], spatial_dims=nd)),
        normalized_root_mse(a, b),
        rel_tol=1e-9,
    )
    assert math.isclose(
        float(mse(torch.from_numpy(b)[None], torch.from_numpy(a)[None], spatial_dims=nd)),
        float(np.mean((a - b) ** 2)),
        rel_tol=1e-9,
    )


@pytest.mark.parametrize("nd", [2, 3])
def test_region_ssim_inside_mask_ignores_outside(nd):
    rng = np.random.default_rng(3)
    shape = (40, 44) if nd == 2 else (24, 26, 28)
    target = torch.from_numpy(rng.random(shape))
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[(slice(2, -2),) * nd] = True
    pred = target.clone()
    pred[~mask] = torch.from_numpy(rng.random(int((~mask).sum())) * 7.0)  # wildly wrong outside
    res = region_ssim(pred[None], target[None], mask, 1.0, spatial_dims=nd)
    assert res["inside"].value == pytest.approx(1.0, abs=1e-6)
    assert res["whole"].value < 0.99
    # zero-filling outside the mask does not change the inside score (but inflates the whole-image one)
    noisy = target + 0.05 * torch.from_numpy(rng.standard_normal(shape))
    zf_p, zf_t = noisy.clone(), target.clone()
    zf_p[~mask] = 0
    zf_t[~mask] = 0
    inside = region_ssim(noisy[None], target[None], mask, 1.0, spatial_dims=nd)["inside"].value
    assert region_ssim(zf_p[None], zf_t[None], mask, 1.0, spatial_dims=nd)["inside"].value == pytest.approx(
        inside, abs=1e-9
    )
    # the whole region equals plain SSIM
    assert res["whole"].value == pytest.approx(float(ssim(pred[None], target[None], 1.0, spatial_dims=nd)), abs=1e-12)


def test_region_semantics_labels_boundary_and_absent_regions():
    rng = np.random.default_rng(4)
    target = torch.from_numpy(rng.random((64, 64)))
    pred = target + 0.1 * torch.from_numpy(rng.standard_normal((64, 64)))
    label = torch.zeros(64, 64, dtype=torch.int64)
    label[:, 32:] = 1
    label[20:30, 5:9] = 2  # too thin for an 11x11 window
    regs = make_regions(
        label=label, label_names={0: "healthy", 1: "tumour", 2: "vessel", 3: "edema"}, include=("whole",)
    )
    res = region_ssim(pred[None], target[None], regs, 1.0)
    assert res["tumour"].present and res["healthy"].present
    assert res["vessel"].value is None and "no 11-voxel SSIM window" in res["vessel"].reason
    assert res["edema"].value is None and "empty" in res["edema"].reason  # named, not present in the map
    centre = region_ssim(pred[None], target[None], regs, 1.0, rule="centre")
    assert centre["vessel"].present and centre["vessel"].count == 40
    # hand check of the "inside" rule: mean of the valid map over windows fully inside the tumour half
    full = ssim_map(pred[None], target[None], 1.0, mode="valid")[0]  # centres 5..58
    cols = [c for c in range(5, 59) if c - 5 >= 32]
    assert res["tumour"].value == pytest.approx(float(full[:, [c - 5 for c in cols]].double().mean()), abs=1e-6)
    # empty mask: absent with a message, never NaN; PSNR too
    empty = torch.zeros(64, 64, dtype=torch.bool)
    r2 = region_ssim(pred[None], target[None], empty, 1.0)
    assert r2["inside"].value is None and "empty" in r2["inside"].reason
    p2 = region_psnr(pred[None], target[None], empty, 1.0)
    assert p2["inside"].value is None and p2["whole"].value == pytest.approx(float(psnr(pred[None], target[None], 1.0)))
    # a boundary ring in mm uses the spacing
    m = torch.zeros(64, 64, dtype=torch.bool)
    m[20:44, 20:44] = True
    ring_vox = make_regions(m, include=(), boundary_width=2)["boundary"]
    ring_mm = make_regions(m, include=(), boundary_width=2.0, units="mm", spacing=(0.5, 0.5))["boundary"]
    assert int(ring_vox.sum()) == (24**2 - 20**2) + (28**2 - 24**2 - 4 * 3)  # inner layers + outer (Euclidean corners)
    assert int(ring_mm.sum()) > int(ring_vox.sum())  # 2 mm = 4 voxels at 0.5 mm
    assert bool(ring_vox[19, 30]) and bool(ring_vox[20, 30]) and not bool(ring_vox[30, 30])


def test_ms_ssim_identity_and_ordering():
    rng = np.random.default_rng(5)
    t = torch.from_numpy(rng.random((1, 1, 96, 96)))
    w = (0.5, 0.3, 0.2)
    assert float(ms_ssim(t, t, 1.0, weights=w)[0]) == pytest.approx(1.0)
    small = float(ms_ssim(t + 0.02 * torch.randn_like(t), t, 1.0, weights=w)[0])
    large = float(ms_ssim(t + 0.2 * torch.randn_like(t), t, 1.0, weights=w)[0])
    assert 1.0 > small > large > 0
    with pytest.raises(ValueError, match="needs each side"):
        ms_ssim(t, t, 1.0)
    with pytest.raises(ValueError, match="2D"):
        ms_ssim(torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32), 1.0)


def test_bad_inputs_raise_clear_errors():
    a = torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError, match="data_range is required"):
        ssim(a, a, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        ssim(a, torch.rand(1, 1, 32, 30), 1.0)
    bad = a.clone()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="pred holds 1 NaN"):
        ssim(bad, a, 1.0)
    with pytest.raises(ValueError, match="target holds 1 NaN"):
        region_psnr(a, bad, None, 1.0)
    m1 = MetaTensor(torch.rand(1, 16, 16, 16), affine=torch.eye(4))
    aff = torch.eye(4)
    aff[0, 0] = 2.0
    m2 = MetaTensor(torch.rand(1, 16, 16, 16), affine=aff)
    with pytest.raises(ValueError, match="affine"):
        ssim(m1, m2, 1.0, spatial_dims=3)
    with pytest.raises(ValueError, match=r"regions\['lesion'\] has shape"):
        region_ssim(a, a, {"lesion": torch.ones(8, 8)}, 1.0)


def test_monai_metrics_and_ignite_handler():
    from ignite.engine import Engine

    rng = np.random.default_rng(6)
    hr = torch.from_numpy(rng.random((2, 1, 40, 40))).float()
    sr = hr.clone()
    mask = torch.zeros(2, 1, 40, 40)
    mask[0, :, 5:35, 5:35] = 1  # second sample: empty mask
    sr[mask == 0] += 0.3
    metric = RegionSSIMMetric(data_range=1.0, region="inside")
    metric(sr, hr, mask=mask)
    agg = metric.aggregate_regions()
    assert agg["inside"].value == pytest.approx(1.0) and agg["inside"].count == 1  # the empty sample is left out
    assert float(metric.aggregate()) == pytest.approx(1.0)
    p = PSNRMetric(data_range=1.0)
    p(sr, hr)
    assert float(p.aggregate()) == pytest.approx(float(psnr(sr, hr, 1.0).mean()))
    s = SSIMMetric(data_range=1.0)
    s(sr, hr)
    assert float(s.aggregate()) == pytest.approx(float(ssim(sr, hr, 1.0).mean()))

    batches = [{"hr": hr, "lr": hr, "mask": mask}]
    engine = Engine(lambda e, b: {"pred": b["hr"] + (b["mask"] == 0) * 0.3, "label": b["hr"]})
    RegionSSIMHandler(1.0, "inside", output_transform=lambda o: (o["pred"], o["label"])).attach(engine, "ssim_inside")
    RegionSSIMHandler(1.0, "outside", output_transform=lambda o: (o["pred"], o["label"])).attach(engine, "ssim_outside")
    empty = {"hr": hr, "lr": hr, "mask": torch.zeros_like(mask)}
    state = engine.run(batches, max_epochs=1)
    assert state.metrics["ssim_inside"] == pytest.approx(1.0)
    assert state.metrics["ssim_outside"] < 0.9
    engine2 = Engine(lambda e, b: {"pred": b["hr"], "label": b["hr"]})
    RegionSSIMHandler(1.0, "inside", output_transform=lambda o: (o["pred"], o["label"])).attach(engine2, "ssim_inside")
    state2 = engine2.run([empty], max_epochs=1)
    assert "ssim_inside" not in state2.metrics  # absent everywhere: no number, never NaN


@pytest.mark.parametrize("shape", [(23, 19), (17, 15, 19)], ids=["2d", "3d"])
def test_window_indicator_matches_a_direct_erosion(shape):
    """The cumulative-sum window count equals checking every window voxel by voxel."""
    import itertools

    from medsr.pipeline.metrics._core import valid_indicator

    region = torch.rand(shape) > 0.15
    region[tuple(slice(2, 12) for _ in shape)] = True
    r = 2
    got = valid_indicator(region, r)
    want = torch.ones([s - 2 * r for s in shape], dtype=torch.bool)
    for offset in itertools.product(range(2 * r + 1), repeat=len(shape)):
        want &= region[tuple(slice(o, o + s - 2 * r) for o, s in zip(offset, shape))]
    assert torch.equal(got, want) and bool(got.any())
    assert torch.equal(valid_indicator(region, r, rule="centre"), region[tuple(slice(r, s - r) for s in shape)])
