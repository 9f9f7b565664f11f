"""``--tracking mlflow/tracking.json`` on a two-stage bundle's training and on its ``evaluating``, read back."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from monai.bundle import run

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ROOT / "mlflow" / "tracking.json"
NET = {"num_blocks": 1, "num_features": 8, "growth_channels": 4}


def write_cases(root: Path) -> Path:
    """Three 2D NIfTI cases with a round mask: two for training, one for validation."""
    rng = np.random.default_rng(0)
    shape = (48, 44)
    aff = np.diag([0.8, 0.9, 1.0, 1.0])
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r2 = sum(g**2 for g in grid)
    items = []
    for i in range(3):
        img = (np.exp(-3 * r2) * 800 + 60 * np.sin((6 + i) * grid[0]) + rng.normal(0, 5, shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(img, aff), str(root / f"c{i}.nii.gz"))
        nib.save(nib.Nifti1Image((r2 < 0.6).astype(np.uint8), aff), str(root / f"c{i}_mask.nii.gz"))
        items.append({"image": str(root / f"c{i}.nii.gz"), "mask": str(root / f"c{i}_mask.nii.gz")})
    path = root / "datalist.json"
    path.write_text(json.dumps({"training": items[:2], "validation": items[2:]}))
    return path


def _run(run_id: str, config: str, **overrides) -> None:
    folder = ROOT / "bundles" / "esrgan_se"
    run(run_id, config_file=str(folder / config), meta_file=str(folder / "metadata.json"),
        logging_file=str(folder / "logging.conf"), **overrides)  # fmt: skip


@pytest.mark.slow
def test_two_stage_training_and_evaluation_are_tracked(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    datalist = write_cases(tmp_path)
    out = tmp_path / "run"
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    base = {"datalist": str(datalist), "output_dir": str(out), "spatial_dims": 2, "scale": 2, "val_crop": 64,
            "cache_rate": 0.0, "max_val_items": 1, "tracking": str(SETTINGS), "tracking_uri": uri, **NET}  # fmt: skip
    _run("training", "train.json", patch_size=16, batch_size=2, samples_per_image=1, epochs=1, epoch_length=1,
         pretrain_epochs=1, d_features=8, run_name="esr-train", **base)  # fmt: skip
    _run("evaluating", "evaluate.json", roi_size=16, run_name="esr-eval", **base)

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("medsr/esrgan_se")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"esr-train", "esr-eval"}

    # training: both stages' handlers log into one run; the shared validator logs at the global epoch
    train = runs["esr-train"]
    assert train.info.status == "FINISHED"
    grouped = {"pretrain/loss", "train/loss", "train/loss_d", "val/psnr", "val/region_ssim_inside"}
    assert grouped <= set(train.data.metrics)
    assert [m.step for m in client.get_metric_history(train.info.run_id, "val/psnr")] == [1, 2]

    # evaluation: the report's numbers as metrics, its files as artifacts
    ev = runs["esr-eval"]
    assert ev.info.status == "FINISHED"
    summary = json.loads((out / "latest" / "eval" / "summary.json").read_text())
    for method in ("sr", "cubic"):
        expected = summary["results"]["x2"][method]["inside"]["psnr"]["mean"]
        logged = ev.data.metrics[f"eval/results.x2.{method}.inside.psnr.mean"]
        assert math.isfinite(logged) and logged == pytest.approx(expected)
    assert ev.data.metrics["eval/results.x2.hr_dc.whole.mse.mean"] < 1e-10
    files = {a.path for a in client.list_artifacts(ev.info.run_id, "evaluation")}
    assert {"evaluation/summary.json", "evaluation/metrics.csv"} <= files
    figures = [a.path for a in client.list_artifacts(ev.info.run_id, "evaluation/figures")]
    assert figures == ["evaluation/figures/0_c2.png"]
