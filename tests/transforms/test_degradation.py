"""Physical degradation: FWHM, mean, LR affine/centres on oblique grids, k-space band, noise, randomness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medsr.transforms import (
    AcquisitionNoise,
    KSpaceTruncation,
    RandAcquisitionNoise,
    RandSimulateLowResolution,
    RandSimulateLowResolutiond,
    RandThickSlice,
    SimulateLowResolution,
    SimulateLowResolutiond,
    ThickSlice,
)


def oblique_affine(spacing, sd, origin=(-12.5, 30.0, 7.25)):
    """A rotated, anisotropic, translated affine (4x4) for ``sd`` spatial dims."""
    a, b = math.radians(25.0), math.radians(-40.0)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rot = rz @ rx if sd == 3 else rz
    aff = np.eye(4)
    sp = list(spacing) + [1.0] * (3 - len(spacing))
    aff[:3, :3] = rot @ np.diag(sp)
    aff[:3, 3] = origin
    return torch.as_tensor(aff)


def image(shape, spacing, fill=None):
    sd = len(shape)
    data = torch.rand(1, *shape) + 1.0 if fill is None else fill
    return MetaTensor(data, affine=oblique_affine(spacing, sd))


def fwhm_from_profile(w):
    """FWHM (samples) of a 1D profile: linear interpolation of the half-maximum crossings."""
    w = np.asarray(w, dtype=np.float64)
    k = int(np.argmax(w))
    half = w[k] / 2.0
    left = k
    while w[left - 1] > half:
        left -= 1
    right = k
    while w[right + 1] > half:
        right += 1
    xl = left - 1 + (half - w[left - 1]) / (w[left] - w[left - 1])
    xr = right + (w[right] - half) / (w[right] - w[right + 1])
    return xr - xl


CASES = [
    pytest.param((40, 40), (0.5, 0.5), (None, 4.0), 2, id="2d"),
    pytest.param((6, 6, 48), (0.5, 0.5, 0.5), (None, None, 4.0), 3, id="3d"),
]


@pytest.mark.parametrize("shape,spacing,target,axis", CASES)
def test_impulse_response_fwhm_and_mean(shape, spacing, target, axis):
    """Sweep a unit impulse along the thick axis and read one LR voxel: the response has FWHM = thickness."""
    t = SimulateLowResolution(target, profile="gaussian")
    f = int(round(target[axis - 1] / spacing[axis - 1]))
    j = shape[axis - 1] // f // 2  # an interior LR voxel
    responses = []
    for pos in range(shape[axis - 1]):
        x = torch.zeros(1, *shape)
        idx = [0] + [s // 2 for s in shape]
        idx[axis] = pos
        x[tuple(idx)] = 1.0
        lr = t(image(shape, spacing, fill=x))
        lidx = [0] + [s // 2 for s in lr.shape[1:]]
        lidx[axis] = j
        responses.append(float(lr[tuple(lidx)]))
    fwhm_mm = fwhm_from_profile(responses) * spacing[axis - 1]
    assert fwhm_mm == pytest.approx(target[axis - 1], rel=0.05)
    # the response peaks at the centre of LR voxel j's HR block
    centre = (j + 0.5) * f - 0.5
    w = np.asarray(responses)
    assert float((w * np.arange(len(w))).sum() / w.sum()) == pytest.approx(centre, abs=1e-3)
    # mean intensity is kept on a smooth positive image
    grid = torch.meshgrid(*[torch.linspace(0, 3, s) for s in shape], indexing="ij")
    smooth = (2.0 + sum(torch.sin(g) for g in grid))[None]
    hr = image(shape, spacing, fill=smooth)
    lr = t(hr)
    assert float(lr.mean()) == pytest.approx(float(hr.mean()), rel=0.01)


@pytest.mark.parametrize("profile", ["gaussian", "box"])
@pytest.mark.parametrize("shape,spacing,target,axis", CASES)
def test_thick_slice_keeps_grid_and_fwhm(shape, spacing, target, axis, profile):
    x = torch.zeros(1, *shape)
    idx = [0] + [s // 2 for s in shape]
    x[tuple(idx)] = 1.0
    hr = image(shape, spacing, fill=x)
    out = ThickSlice(target, profile=profile)(hr)
    assert out.shape == hr.shape and torch.allclose(out.affine, hr.affine)
    sl = list(idx)
    sl[axis] = slice(None)
    prof = out[tuple(sl)].numpy()
    expected = target[axis - 1] / spacing[axis - 1]
    assert fwhm_from_profile(prof) == pytest.approx(expected, rel=0.05)
    assert float(out.sum()) == pytest.approx(1.0, rel=1e-3)  # an interior impulse keeps its mass


@pytest.mark.parametrize(
    "shape,spacing,target",
    [((16, 12), (0.7, 1.3), (1.4, 3.9)), ((8, 6, 16), (0.9, 1.1, 1.0), (None, 2.2, 4.0))],
    ids=["2d", "3d"],
)
@pytest.mark.parametrize("profile", ["gaussian", "box", "bicubic"])
def test_lr_centres_land_on_hr_block_centres(shape, spacing, target, profile):
    """LR voxel centres through the LR affine = HR block centres through the HR affine (oblique), and the
    content agrees: an image equal to its own world x-coordinate stays so at LR (interior voxels)."""
    sd = len(shape)
    hr = image(shape, spacing, fill=torch.zeros(1, *shape))
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float64)
    world = idx @ hr.affine[:sd, :sd].numpy().T + hr.affine[:sd, 3].numpy()
    hr = MetaTensor(torch.as_tensor(world[..., 0] + 100.0)[None].float(), affine=hr.affine)
    lr = SimulateLowResolution(target, profile=profile)(hr)
    factors = [1.0 if t is None else t / s for t, s in zip(target, spacing)]
    assert list(lr.shape[1:]) == [int(n // f) for n, f in zip(shape, factors)]
    assert not torch.allclose(lr.affine, torch.eye(4, dtype=lr.affine.dtype))
    for j in np.ndindex(*lr.shape[1:]):
        centre_hr = np.array([(jj + 0.5) * f - 0.5 for jj, f in zip(j, factors)])
        w_lr = lr.affine[:sd, :sd].numpy() @ np.array(j) + lr.affine[:sd, 3].numpy()
        w_hr = hr.affine[:sd, :sd].numpy() @ centre_hr + hr.affine[:sd, 3].numpy()
        np.testing.assert_allclose(w_lr, w_hr, atol=1e-9)
    lr_sp = np.linalg.norm(lr.affine[:sd, :sd].numpy(), axis=0)
    np.testing.assert_allclose(lr_sp, [t if t is not None else s for t, s in zip(target, spacing)], rtol=1e-9)
    # content: interior LR voxels hold the world x of their own centre (symmetric kernels keep linear images)
    lr_idx = np.stack(np.meshgrid(*[np.arange(s) for s in lr.shape[1:]], indexing="ij"), -1).astype(np.float64)
    lr_world = lr_idx @ lr.affine[:sd, :sd].numpy().T + lr.affine[:sd, 3].numpy()
    inner = tuple(slice(2, -2) if s > 4 else slice(None) for s in lr.shape[1:])
    if profile == "box" or all(s > 4 for s in lr.shape[1:]):
        np.testing.assert_allclose(lr[0][inner].numpy(), lr_world[..., 0][inner] + 100.0, atol=2e-3)


@pytest.mark.parametrize("shape", [(24, 20), (10, 12, 16)], ids=["2d", "3d"])
@pytest.mark.parametrize("window", [None, "hann", "tukey"])
def test_kspace_truncation_removes_exactly_above_cutoff(shape, window):
    sd = len(shape)
    spacing = (1.0,) * sd
    target = (2.0,) * (sd - 1) + (4.0,)
    hr = image(shape, spacing)
    out = KSpaceTruncation(target_spacing=target, window=window)(hr)
    assert out.shape == hr.shape and torch.allclose(out.affine, hr.affine)
    k_in = torch.fft.fftn(hr[0].double())
    k_out = torch.fft.fftn(out[0].double())
    freqs = torch.meshgrid(*[torch.fft.fftfreq(n, d=s).double() for n, s in zip(shape, spacing)], indexing="ij")
    above = torch.zeros(shape, dtype=torch.bool)
    for fr, t in zip(freqs, target):
        above |= fr.abs() > 1.0 / (2.0 * t) + 1e-9
    assert above.any() and (~above).sum() > 1
    assert float(k_out[above].abs().max()) < 1e-4 * float(k_in.abs().max())
    if window is None:
        torch.testing.assert_close(k_out[~above], k_in[~above], rtol=1e-4, atol=1e-4)
    assert float(out.mean()) == pytest.approx(float(hr.mean()), rel=1e-5)


@pytest.mark.parametrize("shape,target", [((12, 18), (1.0, 3.0)), ((6, 5, 15), (1.0, 1.0, 3.0))], ids=["2d", "3d"])
def test_kspace_decimation_matches_truncate_then_sample(shape, target):
    """kspace=True on the LR grid = band-limit on the HR grid, then take the LR block centres (odd factor)."""
    hr = image(shape, (1.0,) * len(shape))
    lr = SimulateLowResolution(target, kspace=True)(hr)
    band = KSpaceTruncation(target_spacing=target)(hr)
    sl = tuple(slice(int(t // 2), None, int(t)) for t in target)
    torch.testing.assert_close(lr[0], band[0][sl], atol=1e-5, rtol=1e-5)


def test_noise_kinds_statistics_and_errors():
    x = MetaTensor(torch.full((1, 64, 64), 0.5))
    g = AcquisitionNoise("gaussian", std=0.1, seed=1)
    y = g(x)
    assert float((y - x).std()) == pytest.approx(0.1, rel=0.05)
    assert torch.equal(g(x), y) and not torch.equal(AcquisitionNoise("gaussian", std=0.1, seed=2)(x), y)
    z = MetaTensor(torch.zeros(1, 64, 64))
    r = AcquisitionNoise("rician", std=0.1, seed=1)
    assert float(r(z).mean()) == pytest.approx(0.1 * math.sqrt(math.pi / 2), rel=0.05)  # Rayleigh mean
    p = AcquisitionNoise("poisson_gaussian", std=0.0, photons=100.0, seed=1)
    assert float(p(x).var()) == pytest.approx(0.5 / 100.0, rel=0.1)
    with pytest.raises(ValueError, match="non-negative"):
        p(MetaTensor(-torch.ones(1, 4, 4)))
    lr = SimulateLowResolution((1.0, 2.0), noise="rician", noise_std=0.05)(x)
    assert lr.shape == (1, 64, 32) and lr.meta["medsr_degradation"]["noise"] == "rician"


@pytest.mark.parametrize("shape", [(16, 16), (8, 8, 16)], ids=["2d", "3d"])
def test_random_variants_reproducible(shape):
    sd = len(shape)
    hr = image(shape, (1.0,) * sd)

    def run(seed):
        t = RandSimulateLowResolution(
            scale_factor_range=[None] * (sd - 1) + [(2.0, 4.0)], integer_factor=True, thickness_ratio_range=(0.8, 1.3),
            profiles=("gaussian", "box"), noise_kinds=("gaussian", "rician"), noise_std_range=(0.01, 0.05),
        )  # fmt: skip
        t.set_random_state(seed)
        return [t(hr) for _ in range(3)]

    a, b, c = run(7), run(7), run(8)
    for u, v in zip(a, b):
        assert u.shape == v.shape and torch.equal(u, v) and torch.equal(u.affine, v.affine)
    assert any(u.shape != w.shape or not torch.equal(u, w) for u, w in zip(a, c))
    for u in a:
        f = u.meta["medsr_degradation"]["factor"][-1]
        assert f in (2.0, 3.0, 4.0) and u.shape[-1] == shape[-1] // int(f)
    ts, tn = RandThickSlice([None] * (sd - 1) + [(2.0, 5.0)]), RandAcquisitionNoise(std_range=(0.01, 0.1))
    for t in (ts, tn):
        t.set_random_state(3)
        first = t(hr)
        t.set_random_state(3)
        assert torch.equal(first, t(hr)) and not torch.equal(first, hr)


def test_dictionary_versions_share_parameters():
    hr = image((8, 8, 16), (1.0, 1.0, 1.0))
    d = SimulateLowResolutiond(("a", "b"), (None, None, 4.0))({"a": hr, "b": hr.clone()})
    assert d["a"].shape == (1, 8, 8, 4) and torch.equal(d["a"], d["b"])
    r = RandSimulateLowResolutiond(("a", "b"), target_spacing_range=(None, None, (2.0, 4.0)), noise_kinds=("gaussian",),
                                   noise_std_range=(0.1, 0.1))  # fmt: skip
    r.set_random_state(0)
    out = r({"a": hr, "b": hr.clone()})
    assert torch.equal(out["a"], out["b"]) and torch.equal(out["a"].affine, out["b"].affine)


def test_bad_inputs_have_clear_errors():
    hr = image((8, 8, 16), (1.0, 1.0, 2.0))
    with pytest.raises(ValueError, match=r"target_spacing: axis 2 is 1 mm, finer than the source spacing 2 mm"):
        SimulateLowResolution((1.0, 1.0, 1.0))(hr)
    bad = hr.clone()
    bad[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="image: contains NaN"):
        ThickSlice((None, None, 4.0))(bad)
    with pytest.raises(ValueError, match="channel"):
        SimulateLowResolution(2.0)(torch.rand(32, 32, 32))  # no channel axis
    with pytest.raises(ValueError, match="channel-first"):
        SimulateLowResolution(2.0)(torch.rand(16, 16))
    with pytest.raises(ValueError, match="profile"):
        SimulateLowResolution(2.0, profile="sinc")
    with pytest.raises(ValueError, match="exactly one of target_spacing"):
        KSpaceTruncation()
    with pytest.raises(ValueError, match="gap"):
        ThickSlice((None, None, 4.0), gap=5.0)(hr)


@pytest.mark.parametrize("shape", [(64, 64), (16, 16, 32)], ids=["2d", "3d"])
def test_simulate_low_resolution_noise_statistics_and_seed(shape):
    """The LR noise has the asked std, the seed reproduces it and another seed changes it."""
    sd = len(shape)
    hr = image(shape, (1.0,) * sd)
    target = (None,) * (sd - 1) + (2.0,)
    clean = SimulateLowResolution(target)(hr)
    noisy = SimulateLowResolution(target, noise="gaussian", noise_std=0.05, seed=3)(hr)
    diff = (noisy - clean).as_tensor()
    assert float(diff.std()) == pytest.approx(0.05, rel=0.1) and abs(float(diff.mean())) < 0.01
    again = SimulateLowResolution(target, noise="gaussian", noise_std=0.05, seed=3)(hr)
    other = SimulateLowResolution(target, noise="gaussian", noise_std=0.05, seed=4)(hr)
    assert torch.equal(noisy, again) and not torch.allclose(noisy, other)
    torch.testing.assert_close(noisy.affine, clean.affine)


def _impulse_fwhm(out: torch.Tensor, axis: int) -> float:
    line = out[0].as_tensor().double()
    centre = tuple(s // 2 for s in line.shape)
    index = list(centre)
    index[axis] = slice(None)
    return fwhm_from_profile(line[tuple(index)].numpy())


@pytest.mark.parametrize("sd", [2, 3])
def test_rand_thick_slice_honours_its_thickness_range(sd):
    """Gaussian profile: the impulse response's FWHM is the drawn thickness, which stays in the range."""
    shape = (5,) * (sd - 1) + (41,)
    hr = MetaTensor(torch.zeros(1, *shape), affine=torch.eye(4, dtype=torch.float64))
    hr[(0,) + tuple(s // 2 for s in shape)] = 1.0
    for lo, hi in ((2.0, 2.5), (4.5, 5.0)):
        t = RandThickSlice([None] * (sd - 1) + [(lo, hi)])
        widths = []
        for seed in range(4):
            t.set_random_state(seed)
            widths.append(_impulse_fwhm(t(hr), sd - 1))
        assert all(lo - 0.15 <= w <= hi + 0.15 for w in widths), (lo, hi, widths)
        assert max(widths) - min(widths) > 1e-3  # drawn, not fixed
