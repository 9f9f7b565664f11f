"""Two default training runs of one bundle (tracking is on by default): two run folders, two MLflow runs that
differ only in the changed param."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest

from medsr.pipeline.runs import list_runs
from tests.tracking.test_server import TINY as SERVER_TINY

ROOT = Path(__file__).resolve().parents[2]
TINY = {**SERVER_TINY, "epochs": 2, "epoch_length": 2}  # two validations per run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def two_tracked_runs(out: Path, bundle: str = "srcnn") -> tuple[mlflow.MlflowClient, list]:
    """Train ``bundle`` twice into ``out`` with the default tracking (no ``--tracking``): ``medsr train``, then
    ``monai.bundle.run`` with ``lr=0.0005``; return the client and both runs."""
    from monai.bundle import run

    from medsr.pipeline.cli import main as medsr_main

    sets = [x for k, v in TINY.items() for x in ("--set", f"{k}={v!r}")]
    assert medsr_main(["train", bundle, "--output-dir", str(out), *sets]) == 0
    run("training", config_file=str(ROOT / "bundles" / bundle / "train.json"), output_dir=str(out), lr=0.0005,
        **TINY)  # fmt: skip
    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlruns.db'}")
    experiment = client.get_experiment_by_name(f"medsr/{bundle}")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return client, runs


def test_two_runs_two_folders_params_differ_only_where_changed(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MEDSR_RUN_NAME", raising=False)
    out = tmp_path / "srcnn"
    client, runs = two_tracked_runs(out)
    assert len(runs) == 2
    folders = {p.name for p in list_runs(out)}
    assert {r.info.run_name for r in runs} == folders  # run folder = MLflow run name
    for r in runs:
        folder = out / r.info.run_name
        assert (folder / "checkpoints" / "best_network.pt").is_file() and (folder / "metrics.csv").is_file()
        assert r.data.tags["medsr.checkpoint"] == str((folder / "checkpoints" / "best_network.pt").resolve())
    a, b = (r.data.params for r in runs)
    assert set(a) == set(b)
    assert {k for k in a if a[k] != b[k]} == {"lr"}, {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}
    assert len(a) < 60 and "num_features" in a and not any(k.startswith(("_meta_", "train.")) for k in a)

    run_id = runs[1].info.run_id
    keys = set(runs[1].data.metrics)
    assert {"val/psnr", "val/ssim", "train/loss", "train/lr", "perf/time_per_iteration_s"} <= keys, keys
    assert not any(k.startswith("val_") or k == "loss" for k in keys)
    assert [m.step for m in client.get_metric_history(run_id, "train/lr")] == [1]  # constant: logged once
    tags = runs[1].data.tags
    assert tags["mlflow.user"] and "monai" in tags["mlflow.source.name"] or tags["mlflow.source.name"]
    assert tags["mlflow.source.type"] == "LOCAL"
    # datalist as dataset inputs
    contexts = {
        t.value for d in runs[1].inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context"
    }  # fmt: skip
    assert {"training", "validation"} <= contexts
    # figures with a step slider, and a real logged model
    images = [f.path for f in client.list_artifacts(run_id, "images")]
    assert images, "log_image writes under images/"
    models = client.search_logged_models([runs[1].info.experiment_id])
    assert any(m.source_run_id == run_id for m in models)
    files = [f.path for f in client.list_artifacts(run_id, "checkpoints")]
    assert files == ["checkpoints/best_network.pt"]  # no 14 MB training state by default
    assert [f.path for f in client.list_artifacts(run_id, "config")] == ["config/config.json"]  # executed config
    assert (
        json.loads(Path(client.download_artifacts(run_id, "config/config.json", str(out / "dl"))).read_text())["lr"]
        == 0.0005
    )
    assert os.path.islink(out / "latest")


def test_monai_tracking_mlflow_gives_the_medsr_run(tmp_path, monkeypatch):
    """``python -m monai.bundle run ... --tracking mlflow`` (MONAI's default settings) leaves medsr's run only:
    MONAI's own MLFlowHandler is detached (no ``monai_experiment``, no flat ``val_psnr``/``train_loss``)."""
    from monai.bundle import run

    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "srcnn"
    run("training", config_file=str(ROOT / "bundles" / "srcnn" / "train.json"), tracking="mlflow",
        output_dir=str(out), **{**TINY, "epochs": 1})  # fmt: skip
    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlruns.db'}")
    assert {e.name for e in client.search_experiments()} == {"medsr/srcnn", "Default"}  # MLflow's own Default
    (tracked,) = client.search_runs([client.get_experiment_by_name("medsr/srcnn").experiment_id])
    keys = set(tracked.data.metrics)
    assert {"val/psnr", "val/psnr_cubic", "train/loss"} <= keys and not any("/" not in k for k in keys), keys
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, "train/loss")] == [1, 2]  # logged once
    assert "lr" in tracked.data.params and "max_epochs" not in tracked.data.params
