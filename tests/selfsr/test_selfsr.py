"""Self-supervised thick-slice SR: grids, pairs, model, fusion, errors, and the bundle end to end (slow)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medsr.pipeline.selfsr.grid import bspline_matrix, degrade_matrix, load_profile, plan_grid
from medsr.pipeline.selfsr.model import Autocast, build_model
from medsr.pipeline.selfsr.pairs import SlicePairs, working_hr
from medsr.pipeline.selfsr.recon import back_project, cubic_output, degrade_output, reconstruct
from medsr.pipeline.selfsr.run import load_scan, prepare, score_against, write_result

ORIGIN = (10.0, -5.0, 3.0)


def _affine(spacing, oblique: bool = False) -> np.ndarray:
    a = np.diag([*spacing, 1.0])
    if oblique:
        c, s = np.cos(0.3), np.sin(0.3)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
        a[:3, :3] = rot @ a[:3, :3]
    a[:3, 3] = ORIGIN
    return a


def _phantom(shape) -> np.ndarray:
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum(x**2 for x in g)
    img = np.exp(-3 * r2) * 800 + 60 * np.sin(6 * g[0]) * np.cos(5 * g[1]) + 100 * (r2 < 0.8)
    return img.astype(np.float32)


def _write(path: Path, shape, spacing, oblique: bool = False) -> Path:
    nib.save(nib.Nifti1Image(_phantom(shape), _affine(spacing, oblique)), str(path))
    return path


def _edges(affine: np.ndarray, axis: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.zeros(4), np.zeros(4)
    lo[3] = hi[3] = 1
    lo[axis], hi[axis] = -0.5, n - 0.5
    return (affine @ lo)[:3], (affine @ hi)[:3]


# ------------------------------------------------------------------------------------------------ grids
@pytest.mark.parametrize(
    "spacing, axis, scale, n_out",
    [
        ((1.0, 1.0, 5.0), 2, 5, 50),
        ((1.0, 4.0, 1.0), 1, 4, 40),
        ((0.86, 0.86, 5.0), 2, 6, 58),
        ((4.0, 4.0, 5.0), 2, 2, 12),
    ],
)
def test_plan_grid_axis_scale_and_extent(spacing, axis, scale, n_out):
    shape = [12, 12, 12]
    shape[axis] = 10
    g = plan_grid(shape, _affine(spacing))
    assert g.slice_axis == axis and g.scale == scale and g.n_out == n_out
    assert g.thickness == pytest.approx(spacing[axis])
    assert g.work_spacing == pytest.approx(spacing[axis] / scale)
    # the output affine has the target spacing along the slice axis and (centred) the scan's extent
    out = g.out_affine(_affine(spacing))
    assert np.linalg.norm(out[:3, axis]) == pytest.approx(g.target_spacing)
    lo_in, hi_in = _edges(_affine(spacing), axis, 10)
    lo_out, hi_out = _edges(out, axis, g.n_out)
    np.testing.assert_allclose((lo_out + hi_out) / 2, (lo_in + hi_in) / 2, atol=1e-9)
    assert abs(np.linalg.norm(hi_out - lo_out) - np.linalg.norm(hi_in - lo_in)) < g.target_spacing


def test_non_integer_ratio_output_grid_exact_when_extent_divides():
    # 0.86 mm in-plane, 5 mm slices: network scale 6 (working grid 0.833 mm), output exactly 0.86 mm
    g = plan_grid((20, 20, 43), _affine((0.86, 0.86, 5.0)))
    assert g.scale == 6 and g.work_spacing == pytest.approx(5 / 6)
    assert g.n_out == 250 and g.offset == pytest.approx(0.0)  # 43 * 5 / 0.86 = 250
    pos = g.out_positions()
    assert pos[0] == pytest.approx(-0.5 + 0.86 / 10) and pos[-1] == pytest.approx(42.5 - 0.86 / 10)


def test_oblique_affine_keeps_world_extent():
    aff = _affine((1.0, 1.0, 3.0), oblique=True)
    g = plan_grid((8, 8, 6), aff)
    out = g.out_affine(aff)
    for a, b in zip(_edges(aff, 2, 6), _edges(out, 2, g.n_out)):
        np.testing.assert_allclose(a, b, atol=1e-9)


@pytest.mark.parametrize(
    "shape, spacing, kwargs, message",
    [
        ((8, 8, 8), (1.0, 1.0, 1.0), {}, "nothing to do"),
        ((8, 8), (1.0, 1.0, 1.0), {}, "expected a 3D volume"),
        ((8, 8, 4), (1.0, 1.0, 4.0), {"thickness": 0.5}, "smaller than the in-plane spacing"),
        ((8, 8, 4), (1.0, 1.0, 4.0), {"gap": 4.0}, "gap"),
        ((8, 8, 4), (1.0, 1.0, 4.0), {"target_spacing": 6.0}, "nothing to do"),
    ],
)
def test_plan_grid_errors(shape, spacing, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_grid(shape, _affine(spacing), **kwargs)


def test_load_scan_rejects_2d_and_4d(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(tmp_path / "a.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 2), np.float32), np.eye(4)), str(tmp_path / "b.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 1), np.float32), np.eye(4)), str(tmp_path / "c.nii.gz"))
    with pytest.raises(ValueError, match="2D image"):
        load_scan(tmp_path / "a.nii.gz")
    with pytest.raises(ValueError, match="4D image"):
        load_scan(tmp_path / "b.nii.gz")
    assert load_scan(tmp_path / "c.nii.gz")[0].shape == (8, 8, 4)


def test_profile_file(tmp_path):
    np.savetxt(tmp_path / "p.txt", np.array([[-2.0, 0.0], [0.0, 1.0], [2.0, 0.0]]))
    prof = load_profile(str(tmp_path / "p.txt"))
    w = degrade_matrix(11, np.array([5.0]), 1.0, 4.0, prof)
    # a triangle from -2 to 2 mm sampled every 1 mm around voxel 5: weights 0, 1/4, 1/2, 1/4, 0
    np.testing.assert_allclose(w.numpy()[0, 3:8], [0.0, 0.25, 0.5, 0.25, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="profile"):
        load_profile("nope")


# ------------------------------------------------------------------------------------------------ pairs
def test_pairs_degrade_the_last_axis_at_the_pixel_shuffle_positions():
    # a volume varying only along in-plane axis 0: pairs from orientation 0 are degraded copies along their
    # last axis, LR sample m equal to the profile-weighted HR around (m + 1/2) s - 1/2
    shape = (40, 30, 6)
    ramp = np.sin(np.arange(40) / 3.0)[:, None, None] * np.ones(shape) + 2
    g = plan_grid(shape, _affine((1.0, 1.0, 4.0)))
    pairs = SlicePairs(torch.from_numpy(ramp).float(), g, batch_size=64, patch_rows=8, lr_length=5, foreground=0.0)
    b = pairs.sample(np.random.default_rng(0))
    assert b["lr"].shape == (64, 1, 8, 5) and b["hr"].shape == (64, 1, 8, 20)
    w = degrade_matrix(20, (np.arange(5) + 0.5) * 4 - 0.5, 1.0, 4.0, "gaussian").float()
    # interior samples (away from the volume border, where the profile is renormalised) match exactly
    for lr, hr in zip(b["lr"][:, 0], b["hr"][:, 0]):
        expect = hr @ w.T
        np.testing.assert_allclose(lr[:, 2].numpy(), expect[:, 2].numpy(), atol=0.05)


def test_working_grid_resamples_the_degraded_axis_for_non_integer_ratios():
    g = plan_grid((43, 20, 10), _affine((0.86, 0.86, 5.0)))
    hr = working_hr(torch.ones(43, 20, 10), g, 0)
    assert hr.shape == (10, 20, int(np.floor(43 * 0.86 / (5 / 6) + 1e-6)))
    np.testing.assert_allclose(hr.numpy(), 1.0, atol=1e-6)


def test_pairs_resume_draws_the_same_batches():
    g = plan_grid((30, 30, 6), _affine((1.0, 1.0, 4.0)))
    vol = torch.from_numpy(_phantom((30, 30, 6)))
    a = SlicePairs(vol, g, batch_size=4, patch_rows=8, lr_length=3, length=3, seed=5)
    b = SlicePairs(vol, g, batch_size=4, patch_rows=8, lr_length=3, length=3, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    torch.testing.assert_close(next(iter(a))["hr"], next(iter(b))["hr"])


# ------------------------------------------------------------------------------------------------ model
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("interp, atol", [("bilinear", 1e-4), (None, 0.05)])
def test_model_starts_at_interpolation_on_the_pixel_shuffle_grid(precision, interp, atol):
    net = {"name": "slicenet", "num_features": 4, "num_blocks": 1, "interp_mode": interp}
    model = build_model(4, net, precision)
    assert isinstance(model, Autocast) == (precision == "bf16")
    x = torch.arange(32.0).repeat(1, 1, 3, 1)  # linear along the last axis
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 1, 3, 128) and y.dtype == torch.float32
    # an untrained residual_interp generator is its interpolation: LR sample m sits at (m + 1/2) s - 1/2, so a
    # line comes back away from the border (exactly for linear interpolation; PyTorch's bicubic, a = -0.75, is
    # off by up to 0.03 here); the interpolation stays float32 under bfloat16 autocast
    np.testing.assert_allclose(y[0, 0, 0, 40:88].numpy(), (np.arange(40, 88) + 0.5) / 4 - 0.5, atol=atol)


@pytest.mark.parametrize("name", ["slicenet", "espcn", "edsr"])
def test_any_registered_generator_with_per_axis_scale(name):
    kw = {"num_features": [4, 4]} if name == "espcn" else {"num_features": 4, "num_blocks": 1}
    model = build_model(3, {"name": name, **kw})
    assert model(torch.zeros(2, 1, 5, 4)).shape == (2, 1, 5, 12)


def test_bspline_matrix_matches_scipy():
    from scipy import ndimage

    x = np.random.default_rng(0).normal(size=9)
    pos = np.linspace(-0.5, 8.5, 23)
    ref = ndimage.map_coordinates(x, pos[None], order=3, mode="nearest")
    np.testing.assert_allclose(bspline_matrix(9, pos).numpy() @ x, ref, atol=1e-10)


# ------------------------------------------------------------------------------------------------ fusion
def _Cubic(s: int) -> torch.nn.Module:  # noqa: N802 - reads as the stand-in model it makes
    """An untrained selfsr model: cubic interpolation only (its residual_interp output layer starts at zero)."""
    return build_model(s, {"name": "slicenet", "num_features": 2, "num_blocks": 0})


@pytest.mark.parametrize(
    "spacing, shape", [((1.0, 1.1, 4.0), (12, 10, 6)), ((0.86, 0.86, 5.0), (14, 12, 5)), ((1.0, 3.0, 1.0), (9, 5, 8))]
)
def test_fusion_shape_and_back_projection(spacing, shape):
    g = plan_grid(shape, _affine(spacing))
    vol = torch.from_numpy(_phantom(shape))
    y = reconstruct(_Cubic(g.scale), vol, g, tta=2, bp_iters=0)
    assert tuple(y.shape) == g.out_shape
    # with a zero residual the fused result is cubic B-spline interpolation (up to the working-grid detour)
    cub = cubic_output(vol, g)
    assert float((y - cub).abs().max()) < 0.05 * float(vol.abs().max())
    # back-projection brings the degraded output closer to the input
    e0 = float((degrade_output(y, g, "gaussian") - vol).square().mean())
    e3 = float((degrade_output(back_project(y, vol, g, "gaussian", iters=3), g, "gaussian") - vol).square().mean())
    assert e3 < 0.5 * e0


def test_write_result_affine_units_and_report(tmp_path):
    src = _write(tmp_path / "scan.nii.gz", (14, 12, 5), (0.9, 0.9, 4.0), oblique=True)
    scan = prepare(src)
    g = scan["grid"]
    rep = write_result(
        scan, _Cubic(g.scale), tmp_path / "out.nii.gz", bp_iters=3, report=tmp_path / "r.json", png=tmp_path / "v.png"
    )
    out = nib.load(str(tmp_path / "out.nii.gz"))
    np.testing.assert_allclose(out.affine, g.out_affine(nib.load(str(src)).affine), atol=1e-5)
    assert out.shape == g.out_shape and out.header.get_zooms()[2] == pytest.approx(0.9, rel=1e-5)
    data = np.asarray(out.dataobj)
    assert abs(float(data.max()) - float(_phantom((14, 12, 5)).max())) < 0.2 * float(data.max())  # input units
    dc = json.loads((tmp_path / "r.json").read_text())["data_consistency"]
    assert dc["medsr_rmse"] <= dc["cubic_rmse"] == pytest.approx(rep["data_consistency"]["cubic_rmse"])
    assert (tmp_path / "v.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="is the input"):
        write_result(scan, _Cubic(g.scale), src)


def test_score_against_on_the_covered_voxels(tmp_path):
    ref = _write(tmp_path / "ref.nii.gz", (14, 14, 16), (1.0, 1.0, 1.0))
    data = _phantom((14, 14, 16))[:, :, 2:14]
    aff = _affine((1.0, 1.0, 1.0))
    aff[:3, 3] += aff[:3, 2] * 2
    nib.save(nib.Nifti1Image(data, aff), str(tmp_path / "o.nii.gz"))
    res = score_against(tmp_path / "o.nii.gz", ref)
    assert res["psnr_brain"] == float("inf") and res["ssim_brain"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ CLI
@pytest.mark.usefixtures("own_logging")  # an earlier in-process bundle run may leave handlers on closed streams
def test_cli_errors_are_one_line(tmp_path, capsys):
    from medsr.pipeline.cli import main

    iso = _write(tmp_path / "iso.nii.gz", (8, 8, 8), (1.0, 1.0, 1.0))
    assert main(["selfsr", str(iso), str(tmp_path / "o.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nothing to do" in err
    thick = _write(tmp_path / "t.nii.gz", (8, 8, 4), (1.0, 1.0, 4.0))
    assert main(["selfsr", str(thick), str(tmp_path / "o.nii.gz"), "--thickness", "0.5"]) == 2
    assert "smaller than the in-plane spacing" in capsys.readouterr().err
    assert main(["selfsr", str(thick), str(thick)]) == 2
    assert "never overwritten" in capsys.readouterr().err


@pytest.mark.slow
def test_bundle_end_to_end_with_resume_and_reference(tmp_path):
    from medsr.pipeline.cli import main

    src = _write(tmp_path / "scan.nii.gz", (16, 14, 5), (1.0, 1.0, 3.0))
    ref = _write(tmp_path / "ref.nii.gz", (16, 14, 15), (1.0, 1.0, 1.0))
    args = [
        "selfsr", str(src), str(tmp_path / "out.nii.gz"), "--steps", "4", "--threads", "1",
        "--network", '{"name": "slicenet", "num_features": 4, "num_blocks": 1}',
        "--set", "batch_size=2", "--set", "patch_rows=8", "--set", "lr_length=3", "--set", "ckpt_every=2",
    ]  # fmt: skip
    assert main([*args, "--reference", str(ref)]) == 0
    run = tmp_path / "out_selfsr"
    assert (run / "model.pt").is_file() and (run / "through_plane.png").is_file()
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt"))[-1] == "checkpoint_00000004.pt"
    scores = json.loads((run / "scores.json").read_text())
    assert np.isfinite(scores["psnr_brain"])
    out = nib.load(str(tmp_path / "out.nii.gz"))
    assert out.shape == (16, 14, 15)
    # a run killed after iteration 2 resumes from its checkpoint and ends with the same weights
    first = torch.load(str(run / "model.pt"), weights_only=False)["state_dict"]
    (run / "model.pt").unlink()
    (run / "checkpoints" / "checkpoint_00000004.pt").unlink()
    assert main([*args, "--resume"]) == 0
    again = torch.load(str(run / "model.pt"), weights_only=False)["state_dict"]
    for k in first:
        torch.testing.assert_close(again[k], first[k])


# ------------------------------------------------------------------------------------------------ schedule
def test_budget_cosine_steps_time_and_state():
    from medsr.pipeline.selfsr.schedule import BudgetCosine

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = BudgetCosine(opt, steps=4)
    lrs = []
    for _ in range(4):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs, [0.5 * (1 + np.cos(np.pi * k / 4)) for k in range(1, 5)], atol=1e-12)
    assert sched.done()
    # a spent time budget ends the schedule whatever the step count; the elapsed time survives a resume
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    timed = BudgetCosine(opt, steps=10**6, minutes=1e-5)
    time.sleep(0.01)
    timed.step()
    assert timed.done() and opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    again = BudgetCosine(opt, steps=10**6, minutes=10.0)
    again.load_state_dict({"step_count": 3, "elapsed": 300.0, "base": [1.0]})
    assert 0.5 <= again.progress() < 0.51


# ------------------------------------------------------------------------------------------------ budget, threads
def test_default_budget_time_on_cpu_steps_on_gpu():
    from medsr.pipeline.selfsr.schedule import CPU_MINUTES, GPU_STEPS, UNLIMITED_STEPS, default_budget

    assert default_budget(None, None, "cpu") == (UNLIMITED_STEPS, CPU_MINUTES)
    assert default_budget(None, None, "cuda") == (GPU_STEPS, None)
    assert default_budget(None, 2.5, "cpu") == (UNLIMITED_STEPS, 2.5)
    assert default_budget(40, None, "cpu") == (40, None)
    assert default_budget(40, 1.0, "cuda") == (40, 1.0)


@pytest.mark.parametrize(
    "cores, others, current, expect",
    [
        (2, 0.0, None, 2),
        (2, 0.1, 1, 2),  # a quiet machine: back up to every core
        (2, 1.0, 2, 1),  # one busy process: one thread
        (2, 0.67, 2, 1),  # one busy process against our two threads (3 threads on 2 cores)
        (2, 0.55, 2, 2),  # near the rounding point: no change (hysteresis)
        (2, 0.45, 1, 1),
        (2, 3.0, 2, 1),  # never below one
        (8, 2.0, None, 6),
    ],
)
def test_threads_for_follows_the_other_processes(cores, others, current, expect):
    from medsr.pipeline.handlers.follow_load import threads_for

    assert threads_for(cores, others, current) == expect


def test_follow_load_sets_threads_down_and_up():
    from medsr.pipeline.handlers import FollowLoad

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        follow = FollowLoad(threads=0)
        assert follow.update(10, 1.0) == 1 and torch.get_num_threads() == 1
        assert follow.update(20, 0.0) >= 2 and torch.get_num_threads() >= 2
        assert [i for i, _ in follow.changes] == [10, 20]
        assert not FollowLoad(threads=2).enabled  # a fixed count is kept
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_time_budget_ends_training_on_time_and_the_bar_counts_seconds(tmp_path, capsys):
    from medsr.pipeline.cli import main

    src = _write(tmp_path / "scan.nii.gz", (16, 14, 5), (1.0, 1.0, 3.0))
    t0 = time.perf_counter()
    args = [
        "selfsr", str(src), str(tmp_path / "out.nii.gz"), "--minutes", "0.05", "--threads", "1",
        "--network", '{"name": "slicenet", "num_features": 4, "num_blocks": 1}',
        "--set", "batch_size=2", "--set", "patch_rows=8", "--set", "lr_length=3",
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr()
    m = re.search(r"training (\d+) s, reconstruction", out.out)
    assert m and int(m.group(1)) <= 3 + 5, out.out  # 3 s of training, plus set-up
    assert "training for 0.05 min" in out.out
    assert re.search(r"\d+/3 s, step \d+", out.err), out.err[-500:]  # the bar: seconds of the budget, then steps
    assert time.perf_counter() - t0 < 60


def test_trained_model_is_a_medsr_model_file_checked_against_the_scan(tmp_path):
    from medsr.pipeline.models import read_model_info
    from medsr.pipeline.selfsr.run import load_trained, model_for, save_model

    scan = prepare(_write(tmp_path / "scan.nii.gz", (14, 12, 5), (1.0, 1.0, 4.0)))
    net = {"name": "slicenet", "num_features": 4, "num_blocks": 1}
    save_model(model_for(scan, net, "bf16"), scan, net, tmp_path / "model.pt")
    info = read_model_info(tmp_path / "model.pt")
    assert info["scale"] == [1, 4] and info["grid"]["slice_axis"] == 2 and info["network"]["args"]["residual_interp"]
    model = load_trained(scan, tmp_path / "model.pt", "fp32")
    assert model(torch.zeros(1, 1, 6, 5)).shape == (1, 1, 6, 20)
    other = prepare(_write(tmp_path / "other.nii.gz", (14, 12, 5), (1.0, 1.0, 3.0)))
    with pytest.raises(ValueError, match="does not fit"):
        load_trained(other, tmp_path / "model.pt")


def test_budget_counts_from_the_commands_start():
    from medsr.pipeline.selfsr.schedule import BudgetCosine

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = BudgetCosine(opt, steps=10**6, minutes=1.0, started=time.time() - 30.0)
    assert 0.5 <= sched.progress() < 0.52


def test_follow_load_backs_off_when_more_threads_do_not_pay():
    from medsr.pipeline.handlers import FollowLoad

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        follow = FollowLoad(threads=0, backoff=30.0)
        assert follow.update(0, 1.0, now=0.0) == 1
        assert follow.update(30, 0.0, now=3.0) == 2  # idle cores: try two threads (10 steps/s on one)
        assert follow.update(36, 0.0, now=6.0) == 1  # 2 steps/s on two: back to one
        assert follow.update(66, 0.0, now=9.0) == 1  # and no new trial for 30 s
        assert follow.update(96, 0.0, now=40.0) == 2  # the next trial
        assert follow.update(400, 0.0, now=43.0) == 2  # faster: kept
        assert [t for _, t in follow.changes] == [2, 1, 2]
    finally:
        torch.set_num_threads(before)
