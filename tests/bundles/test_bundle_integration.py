"""Bundles wired to the evaluation report, per-epoch region SSIM and two-stage (pretrain then GAN) bookkeeping."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import run
from monai.data import MetaTensor
from PIL import Image

from medsr.pipeline.bundle import key_if_present, label_names
from medsr.pipeline.handlers import TrainingStage
from medsr.transforms import MakeSRPaird, PairDegradation

ROOT = Path(__file__).resolve().parents[2]
SHAPES = {2: (48, 44), 3: (28, 26, 16)}
NAMES = {"0": "background", "1": "healthy", "2": "tumour"}


def write_cases(root: Path, dims: int) -> Path:
    """Two training cases and one validation case with a mask, a 3-class label map and ``label_names``."""
    rng = np.random.default_rng(dims)
    shape = SHAPES[dims]
    aff = np.diag([0.8, 0.9, 1.5 if dims == 3 else 1.0, 1.0])
    aff[:3, 3] = (10.0, -5.0, 3.0)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r2 = sum(g**2 for g in grid)
    items = []
    for i in range(3):
        img = np.exp(-3 * r2) * 800 + 60 * np.sin((6 + i) * grid[0]) * np.cos(5 * grid[1]) + 100
        img = (img + rng.normal(0, 5, shape)).astype(np.float32)
        label = np.where(r2 < 0.15, 2, np.where(r2 < 0.7, 1, 0)).astype(np.uint8)
        stem = root / f"c{dims}d_{i}"
        nib.save(nib.Nifti1Image(img, aff), f"{stem}.nii.gz")
        nib.save(nib.Nifti1Image((label > 0).astype(np.uint8), aff), f"{stem}_mask.nii.gz")
        nib.save(nib.Nifti1Image(label, aff), f"{stem}_label.nii.gz")
        items.append({"image": f"{stem}.nii.gz", "mask": f"{stem}_mask.nii.gz", "label": f"{stem}_label.nii.gz"})
    path = root / f"datalist_{dims}d.json"
    path.write_text(json.dumps({"training": items[:2], "validation": items[2:], "label_names": NAMES}))
    return path


def common(datalist: Path, out: Path, dims: int) -> dict:
    return {
        "datalist": str(datalist),
        "output_dir": str(out),
        "spatial_dims": dims,
        "scale": 2 if dims == 2 else (1, 1, 2),
        "val_crop": 64,
        "cache_rate": 0.0,
        "max_val_items": 1,
    }


def _run(name: str, run_id: str, config: str, **overrides) -> None:
    folder = ROOT / "bundles" / name
    run(run_id, config_file=str(folder / config), meta_file=str(folder / "metadata.json"),
        logging_file=str(folder / "logging.conf"), **overrides)  # fmt: skip


def _finite(stats: dict, metric: str) -> bool:
    return isinstance(stats.get(metric, {}).get("mean"), float) and math.isfinite(stats[metric]["mean"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,dims,net",
    [
        ("esrgan_se", 2, {"num_blocks": 1, "num_features": 8, "growth_channels": 4}),
        ("espcn", 3, {"num_features": [8, 4]}),
    ],
)
def test_evaluating_writes_the_report(name, dims, net, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    datalist = write_cases(tmp_path, dims)
    out = tmp_path / "run"
    _run(name, "evaluating", "evaluate.json", checkpoint="", roi_size=16, **common(datalist, out, dims), **net)
    ev = out / "eval"
    summary = json.loads((ev / "summary.json").read_text())
    scale = "x2" if dims == 2 else "x1x1x2"
    assert summary["protocol"]["scales"] == [scale] and summary["protocol"]["data_consistency"] is True
    assert summary["protocol"]["baselines"] == ["nearest", "linear", "cubic"]
    results = summary["results"][scale]
    for method in ("sr", "nearest", "linear", "cubic"):
        for region in ("whole", "inside", "outside", "healthy", "tumour"):
            assert _finite(results[method][region], "psnr") and _finite(results[method][region], "mse"), (
                method,
                region,
            )
        assert _finite(results[method]["whole"], "ssim")
        if dims == 2:  # the 3D case is too thin (8 slices) for an 11-voxel window inside the mask
            assert _finite(results[method]["inside"], "ssim")
    # the report degrades HR with the training pairs' own degradation: it reproduces the LR input exactly
    assert results["hr_dc"]["whole"]["mse"]["mean"] < 1e-10
    assert _finite(results["sr_dc"]["whole"], "mse")
    rows = list(csv.DictReader((ev / "metrics.csv").open()))
    assert {r["method"] for r in rows} >= {"sr", "nearest", "linear", "cubic", "sr_dc", "hr_dc", "sr_vs_cubic"}
    assert {r["case"] for r in rows} == {f"0_c{dims}d_2"}
    figures = sorted((ev / "figures").glob("*.png"))
    assert [f.name for f in figures] == [f"0_c{dims}d_2.png"]
    with Image.open(figures[0]) as im:
        assert im.size[0] > 100 and im.size[1] > 50
    assert (ev / "psnr_raw.csv").is_file()  # MONAI's per-case CSVs are kept alongside


@pytest.mark.slow
def test_two_stage_training_marks_stages_and_logs_region_ssim(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    datalist = write_cases(tmp_path, 2)
    out = tmp_path / "run"
    _run("esrgan_se", "training", "train.json", **common(datalist, out, 2), patch_size=16, batch_size=2,
         samples_per_image=1, epochs=1, epoch_length=1, pretrain_epochs=1, num_blocks=1, num_features=8,
         growth_channels=4, d_features=8, mlflow_tracking=False)  # fmt: skip
    rows = list(csv.DictReader((out / "latest" / "metrics.csv").open()))
    assert [(r["stage"], r["epoch"], r["global_epoch"]) for r in rows] == [("pretrain", "1", "1"), ("gan", "1", "2")]
    for r in rows:
        assert -1.0 <= float(r["val_region_ssim_inside"]) <= 1.0
    names = sorted(p.name for p in (out / "latest" / "images").glob("*.png"))
    assert names == ["gan_epoch_0001.png", "pretrain_epoch_0001.png"]
    assert list((out / "latest" / "checkpoints" / "pretrain").glob("*.pt")) and list(
        (out / "latest" / "checkpoints").glob("checkpoint_*.pt")
    )


@pytest.mark.parametrize("dims,scale,mode", [(2, 2, "physical"), (2, 3, "bicubic"), (3, (1, 1, 2), "physical")])
def test_pair_degradation_reproduces_the_training_pair(dims, scale, mode):
    shape = (24, 21) if dims == 2 else (12, 10, 9)
    affine = torch.diag(torch.tensor([0.7, 0.9, 1.3, 1.0]))
    img = MetaTensor(torch.rand(1, *shape), affine=affine)
    pair = MakeSRPaird(scale_factor=scale, mode=mode)({"image": img})
    lr = PairDegradation(pair=MakeSRPaird(scale_factor=scale, mode=mode))(pair["hr"])
    assert lr.shape == pair["lr"].shape
    assert torch.allclose(lr, pair["lr"].as_tensor(), atol=1e-6)
    # an SR output on the HR grid with no (or the wrong) affine degrades the same way
    assert torch.allclose(PairDegradation(scale_factor=scale, mode=mode)(pair["hr"].as_tensor()), lr, atol=1e-6)


def test_pair_degradation_errors():
    with pytest.raises(ValueError, match="scale_factor"):
        PairDegradation()
    with pytest.raises(ValueError, match="thickness/gap"):
        PairDegradation(pair=MakeSRPaird(scale_factor=2, gap=0.5))
    with pytest.raises(ValueError, match="channel-first"):
        PairDegradation(scale_factor=2)(torch.zeros(8, 8))


def test_label_names_and_key_if_present(tmp_path):
    dl = tmp_path / "d.json"
    dl.write_text(json.dumps({"training": [], "label_names": {"1": "tumour", "2": "healthy"}}))
    assert label_names(None, dl) == {1: "tumour", 2: "healthy"}
    assert label_names('{"3": "wm"}', dl) == {3: "wm"}
    assert label_names(None, None, tmp_path) is None
    with pytest.raises(ValueError, match="key 'x' is not an integer"):
        label_names({"x": "a"})
    assert key_if_present([{"mask": "a"}, {"mask": "b"}], "mask") == "mask"
    assert key_if_present([{"mask": "a"}, {"image": "b"}], "mask") is None
    with pytest.raises(ValueError, match="TrainingStage name"):
        TrainingStage(None, "bad name")
