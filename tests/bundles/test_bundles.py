"""Tiny NIfTI cases with masks and a non-identity affine, and the per-bundle tiny overrides (shared by the bundle tests)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ["esrgan_se", "edsr_ise_gan", "srgan", "espcn", "srcnn", "vdsr", "rdn", "srdensenet", "distill"]

SHAPES = {2: (40, 36), 3: (24, 20, 12)}
SPACING = {2: (0.8, 0.9), 3: (1.0, 1.1, 1.5)}
ORIGIN = (10.0, -5.0, 3.0)

# network widths/depths small enough for a 2-core CPU; the names are the bundles' own top-level knobs
NET = {
    "esrgan_se": {"num_blocks": 1, "num_features": 8, "growth_channels": 4},
    "edsr_ise_gan": {"num_blocks": 1, "num_features": 8},
    "srgan": {"num_blocks": 1, "num_features": 8},
    "espcn": {"num_features": [8, 4]},
    "srcnn": {"num_features": [8, 4], "kernel_sizes": [3, 3, 3]},
    "vdsr": {"num_features": 8, "num_layers": 3},
    "rdn": {"num_features": 8, "num_blocks": 1, "num_layers": 2, "growth_channels": 4},
    "srdensenet": {"num_features": 8, "num_blocks": 1, "num_layers": 2, "growth_channels": 4, "bottleneck_channels": 8},
    "distill": {"num_features": 8, "num_blocks": 1, "num_layers": 2, "growth_channels": 4},
}
TRAIN_EXTRA = {
    "esrgan_se": {"d_features": 8, "pretrain_epochs": 1},
    "edsr_ise_gan": {"d_features": 8},
    "srgan": {"d_features": 8},
    "distill": {
        "teacher_features": 8,
        "teacher_blocks": 2,
        "teacher_layers": 2,
        "teacher_growth": 4,
        "teacher_checkpoint": "",
    },
}


def affine_for(dims: int) -> np.ndarray:
    aff = np.diag([*SPACING[dims], *([1.0] if dims == 2 else []), 1.0])
    aff[:3, 3] = ORIGIN
    return aff


def write_cases(root: Path, dims: int, n: int = 3) -> Path:
    """``n`` smooth images with a round mask and a noise floor; returns a datalist (2 training, 1 validation)."""
    rng = np.random.default_rng(dims)
    root.mkdir(parents=True, exist_ok=True)
    shape = SHAPES[dims]
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r2 = sum(g**2 for g in grid)
    items = []
    for i in range(n):
        img = np.exp(-3 * r2) * 800 + 60 * np.sin((6 + i) * grid[0]) * np.cos(5 * grid[1]) + 100
        img = (img + rng.normal(0, 5, shape)).astype(np.float32)
        mask = (r2 < 0.6).astype(np.uint8)
        nib.save(nib.Nifti1Image(img, affine_for(dims)), str(root / f"case{dims}d_{i}.nii.gz"))
        nib.save(nib.Nifti1Image(mask, affine_for(dims)), str(root / f"case{dims}d_{i}_mask.nii.gz"))
        items.append({"image": f"case{dims}d_{i}.nii.gz", "mask": f"case{dims}d_{i}_mask.nii.gz"})
    path = root / f"datalist_{dims}d.json"
    path.write_text(json.dumps({"training": items[:-1], "validation": items[-1:]}), encoding="utf-8")
    return path


def train_overrides(name: str, datalist: Path, output_dir: Path, dims: int = 2) -> dict:
    """One short epoch (one iteration) on a 16-voxel HR patch, validation on one 32-voxel crop."""
    scale = 2 if dims == 2 else (1, 1, 2)
    out = {
        "datalist": str(datalist),
        "output_dir": str(output_dir),
        "spatial_dims": dims,
        "scale": scale,
        "patch_size": 16,
        "batch_size": 2,
        "samples_per_image": 1,
        "epochs": 1,
        "epoch_length": 1,
        "val_crop": 32,
        "cache_rate": 0.0,
        "max_val_items": 1,
        "mlflow_tracking": False,  # tracking (on by default) costs seconds per run; tested in tests/tracking
    }
    out.update(NET[name])
    out.update(TRAIN_EXTRA.get(name, {}))
    return out


# ---------------------------------------------------------------------------------------------------- tests
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from monai.bundle import run  # noqa: E402

from medsr.transforms.geometry import sr_affine  # noqa: E402


@pytest.fixture(scope="module")
def datalists(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    return {2: write_cases(root, 2), 3: write_cases(root, 3)}


def _run(name: str, run_id: str, config: str, **overrides) -> None:
    folder = ROOT / "bundles" / name
    run(
        run_id,
        config_file=str(folder / config),
        meta_file=str(folder / "metadata.json"),
        logging_file=str(folder / "logging.conf"),
        **overrides,
    )


def _check_output(path: Path, lr_shape, scale, lr_affine) -> None:
    out = nib.load(str(path))
    assert out.shape == tuple(n * s for n, s in zip(lr_shape, scale))
    full_scale = (*scale, 1) if len(scale) == 2 else scale
    assert np.allclose(out.affine, sr_affine(lr_affine, full_scale).numpy(), atol=1e-4)
    spacing = np.linalg.norm(out.affine[:3, : len(scale)], axis=0)
    assert np.allclose(spacing, np.array(SPACING[len(scale)]) / np.array(scale), atol=1e-5)
    data = out.get_fdata()
    assert np.isfinite(data).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_bundle_trains_and_infers_2d_and_3d(name, datalists, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # bundle paths (%bundles/common/...) are relative to the repo root
    out = tmp_path / "run"
    _run(name, "training", "train.json", **train_overrides(name, datalists[2], out))
    ckpts = sorted((out / "latest" / "checkpoints").glob("checkpoint_*.pt"))
    assert ckpts, "no checkpoint written"
    saved = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
    assert saved["engine"]["epoch"] == 1
    assert (out / "latest" / "checkpoints" / "best_network.pt").is_file()
    lines = (out / "latest" / "metrics.csv").read_text().strip().splitlines()
    assert lines[0].startswith("epoch,iteration,val_psnr,val_ssim") and len(lines) >= 2
    assert np.isfinite(float(lines[-1].split(",")[2]))
    assert list(
        (out / "latest" / "images").glob("*epoch_*.png")
    )  # two-stage bundles: pretrain_epoch_*.png, gan_epoch_*.png

    # evaluation of the trained run: per-case CSV, summary, comparison PNG
    eval_overrides = {
        k: v for k, v in train_overrides(name, datalists[2], out).items() if k not in TRAIN_EXTRA.get(name, {})
    }
    for k in ("patch_size", "batch_size", "samples_per_image", "epochs", "epoch_length", "mlflow_tracking"):
        eval_overrides.pop(k)
    _run(name, "evaluating", "evaluate.json", roi_size=16, **eval_overrides)
    raw = (out / "latest" / "eval" / "psnr_raw.csv").read_text().splitlines()
    assert raw[1].startswith(str(datalists[2].parent / "case2d_2.nii.gz"))
    assert (out / "latest" / "eval" / "ssim_summary.csv").is_file() and list(
        (out / "latest" / "eval" / "images").glob("*.png")
    )
    assert (out / "latest" / "eval" / "summary.json").is_file() and list(
        (out / "latest" / "eval" / "figures").glob("*.png")
    )

    # 2D inference with the checkpoint just trained (the bundle's run folder, best checkpoint)
    lr2 = datalists[2].parent / "case2d_2.nii.gz"
    pred2 = tmp_path / "pred" / "sr2d.nii.gz"
    _run(name, "inferring", "inference.json", output_dir=str(out), input_files=[str(lr2)], output_files=[str(pred2)],
         scale=2, roi_size=16, progress=False, **NET[name])  # fmt: skip
    _check_output(pred2, SHAPES[2], (2, 2), affine_for(2))

    # 3D inference (per-axis scale on the slice axis), random weights: geometry and units only
    lr3 = datalists[3].parent / "case3d_0.nii.gz"
    pred3 = tmp_path / "pred" / "sr3d.nii.gz"
    _run(name, "inferring", "inference.json", output_dir=str(out), input_files=[str(lr3)], output_files=[str(pred3)],
         spatial_dims=3, scale=(1, 1, 2), checkpoint="", roi_size=(12, 12, 8), progress=False, **NET[name])  # fmt: skip
    _check_output(pred3, SHAPES[3], (1, 1, 2), affine_for(3))


def _cli_args(overrides: dict) -> list[str]:
    import json as _json

    args = []
    for k, v in overrides.items():
        args += [f"--{k}", v if isinstance(v, str) else str(v) if isinstance(v, bool) else _json.dumps(v)]
    return args


@pytest.mark.slow
def test_user_command_shape_in_a_subprocess(datalists, tmp_path):
    """``python -m monai.bundle run training --config_file bundles/<name>/train.json`` from the repo root."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "bundles/espcn/train.json"]
    cmd += _cli_args(train_overrides("espcn", datalists[2], out))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "val_psnr" in proc.stdout + proc.stderr
    assert list((out / "latest" / "checkpoints").glob("checkpoint_*.pt")) and (out / "latest" / "metrics.csv").is_file()


@pytest.mark.slow
def test_mixed_degradation_and_false_flags_from_the_command_line(datalists, tmp_path):
    """``--degradation mixed`` trains (bicubic or physical pairs per item, validated on physical) and a bool
    key takes ``False``; ``--augment false`` (text, which would count as true) is refused in one line."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "bundles/rdn/train.json"]
    cmd += _cli_args(train_overrides("rdn", datalists[2], out))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    bad = subprocess.run([*cmd, "--augment", "false"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and not (out / "latest").exists()
    assert "error: override --augment false:" in bad.stderr and "write --augment False" in bad.stderr
    ok = [*cmd, "--degradation", "mixed", "--augment", "False", "--residual_interp", "True"]
    proc = subprocess.run(ok, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    saved = torch.load(out / "latest" / "checkpoints" / "best_network.pt", map_location="cpu", weights_only=False)
    assert saved["network"]["args"]["residual_interp"] is True and (out / "latest" / "metrics.csv").is_file()


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu_with_multi_gpu_config(datalists, tmp_path):
    """``torchrun --nproc_per_node 2`` with ``multi_gpu_train.json`` merged over ``train.json`` (gloo)."""
    out = tmp_path / "ddp"
    overrides = train_overrides("srgan", datalists[2], out)
    overrides["samples_per_image"] = 2  # batch of 2 per rank (SRGAN has batch norm)
    cfg = "['bundles/srgan/train.json','bundles/srgan/multi_gpu_train.json']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "monai.bundle", "run",
           "training", "--config_file", cfg, "--meta_file", "bundles/srgan/metadata.json", "--logging_file",
           "bundles/srgan/logging.conf", *_cli_args(overrides)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert log.count("GANTrainer - INFO - Engine run finished") == 2  # both ranks trained
    (ckpt,) = (out / "latest" / "checkpoints").glob("checkpoint_*.pt")  # written once (rank 0)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert not any(k.startswith("module.") for k in state["objects"]["generator"])


@pytest.mark.slow
def test_medsr_upscale_and_bundles_commands(datalists, tmp_path, monkeypatch, capsys):
    from medsr.pipeline.cli import main

    monkeypatch.chdir(ROOT)
    assert main(["bundles"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in BUNDLES)
    src = datalists[2].parent / "case2d_1.nii.gz"
    dst = tmp_path / "up" / "case_sr.nii.gz"
    args = [
        "upscale",
        str(src),
        str(dst),
        "--bundle",
        "vdsr",
        "--scale",
        "2",
        "--roi_size",
        "16",
        "--set",
        "checkpoint=''",
    ]
    for k, v in NET["vdsr"].items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    _check_output(dst, SHAPES[2], (2, 2), affine_for(2))
    # --compile (frozen weights) and --reuse-memory (process-wide allocator setting: its own process) give
    # the same image as the eager channels-last run (same seed, so the same random weights)
    fast = tmp_path / "up" / "case_sr_compiled.nii.gz"
    cmd = [sys.executable, "-m", "medsr.pipeline.cli", *args[:2], str(fast), *args[3:], "--compile", "--reuse-memory"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    np.testing.assert_allclose(nib.load(str(fast)).get_fdata(), nib.load(str(dst)).get_fdata(), rtol=1e-4, atol=1e-4)
    assert main(["upscale", str(tmp_path / "missing.nii.gz"), str(dst), "--bundle", "vdsr"]) == 2
    capsys.readouterr()
    assert main(["upscale", str(src), str(dst), "--bundle", "nope"]) == 1  # one line, no traceback
    err = capsys.readouterr().err
    assert "bundle 'nope': not found" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["edsr_ise_gan", "espcn"])
def test_bundle_trains_in_3d_by_override(name, datalists, tmp_path, monkeypatch):
    """``--spatial_dims 3 --scale "(1,1,2)"``: the same train.json trains a 3D generator on thick-slice pairs."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run3d"
    overrides = train_overrides(name, datalists[3], out, dims=3)
    overrides.update(patch_size=(16, 16, 8), val_crop=16)
    _run(name, "training", "train.json", **overrides)
    state = torch.load(
        next((out / "latest" / "checkpoints").glob("checkpoint_*.pt")), map_location="cpu", weights_only=False
    )
    weights = state["objects"].get("generator") or state["objects"]["network"]
    first = next(v for k, v in weights.items() if k.endswith("weight") and v.ndim > 2)
    assert first.ndim == 5  # Conv3d weights
    assert (out / "latest" / "metrics.csv").read_text().startswith("epoch,iteration,val_psnr,val_ssim")
