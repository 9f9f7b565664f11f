"""A bundle's training tracked to a real MLflow server; the server going away mid-run loses nothing."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from ignite.engine import Events

from medsr.pipeline.cli import main as medsr_main
from medsr.pipeline.tracking.session import OFFLINE_DB, TAG_OFFLINE, TAG_REMOTE_RUN_ID

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "srcnn" / "train.json"
SETTINGS = ROOT / "mlflow" / "tracking.json"
# the smallest bundle with tiny overrides: 2D SRCNN x4, 2 demo images, 16-pixel LR patches
TINY = {
    "epochs": 1,
    "batch_size": 2,
    "patch_size": 16,
    "samples_per_image": 1,
    "max_train_items": 2,
    "max_val_items": 1,
    "val_crop": 32,
    "num_features": [4, 4],
    "num_workers": 0,
}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture
def server(mlflow_server):
    """The module's server, running (a previous test may have stopped it)."""
    if mlflow_server.proc is None or mlflow_server.proc.poll() is not None:
        mlflow_server.start()
    return mlflow_server


def _history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def _artifacts(client, run_id, path=""):
    out = []
    for item in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return out


def assert_logged_figure_is_run_folders(client, run_id: str, run_folder: Path, download: Path) -> None:
    """The MLflow figure of validation 1 is the run folder's ``images/epoch_0001.png`` (same pixels): LR, cubic,
    SR, HR, error panels, the cubic and SR panels titled with the ``val/`` numbers MLflow logged at that step."""
    from PIL import Image

    (logged,) = [f for f in _artifacts(client, run_id) if f.startswith("images/val~comparison+step+1+") and
                 f.endswith(".png")]  # fmt: skip
    local = Path(client.download_artifacts(run_id, logged, str(download)))
    with Image.open(run_folder / "images" / "epoch_0001.png") as shown:
        panels = json.loads(shown.text["Description"])
        assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(Image.open(local).convert("RGB")))
    assert [p.split("\n")[0] for p in panels] == ["LR input", "cubic", "SR output", "HR target", "|SR - HR|"]
    logged_at_1 = {k: dict(_history(client, run_id, k))[1] for k in ("val/psnr", "val/psnr_cubic", "val/ssim")}
    assert f"val/psnr_cubic {logged_at_1['val/psnr_cubic']:.2f} dB" in panels[1]
    assert f"val/psnr {logged_at_1['val/psnr']:.2f} dB, val/ssim {logged_at_1['val/ssim']:.3f}" in panels[2]


def test_bundle_training_tracked_to_server(server, tmp_path, monkeypatch, fast_http):
    from monai.bundle import run

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    out = tmp_path / "run"
    run(
        "training",
        config_file=str(BUNDLE),
        tracking=str(SETTINGS),
        output_dir=str(out),
        run_name="srcnn-server-test",
        epoch_length=2,
        **TINY,
    )
    client = mlflow.MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("medsr/srcnn")
    assert experiment is not None, "one experiment per bundle"
    (found,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'srcnn-server-test'")
    run_id = found.info.run_id
    assert found.info.status == "FINISHED"
    params = found.data.params
    assert params["lr"] == "0.0001" and params["num_features"] == "[4, 4]" and params["epochs"] == "1"
    contexts = {t.value for d in found.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context"}
    assert contexts == {"training", "validation"}  # the datalist as dataset inputs
    tags = found.data.tags
    assert tags["medsr.role"] == "trainer" and ("mlflow.source.git.commit" in tags or "medsr.git_commit" in tags)
    assert [s for s, _ in _history(client, run_id, "train/loss")] == [1, 2]
    assert [s for s, _ in _history(client, run_id, "train/lr")] == [1]  # logged when it changes
    assert all(v > 0 for _, v in _history(client, run_id, "perf/time_per_iteration_s"))
    assert [s for s, _ in _history(client, run_id, "val/psnr")] == [1]
    assert [s for s, _ in _history(client, run_id, "val/ssim")] == [1]

    files = _artifacts(client, run_id)
    figures = [f for f in files if f.startswith("images/") and f.endswith(".png")]
    checkpoints = [f for f in files if f.startswith("checkpoints/") and f.endswith(".pt")]
    configs = [f for f in files if f.startswith("config/") and f.endswith(".json")]
    assert figures and checkpoints == ["checkpoints/best_network.pt"] and configs
    assert "model_torchscript/model.ts" in files
    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "dl")))
    assert (local / figures[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_logged_figure_is_run_folders(client, run_id, out / "srcnn-server-test", tmp_path / "fig")
    assert json.loads((local / configs[0]).read_text())["num_features"] == [4, 4]
    ckpt = torch.load(local / checkpoints[0], map_location="cpu", weights_only=True)  # self-describing
    assert ckpt["network"]["target"] == "medsr.networks.SRCNN" and ckpt["scale"] == [4, 4]

    (logged,) = [m for m in client.search_logged_models([experiment.experiment_id]) if m.source_run_id == run_id]
    model = mlflow.pytorch.load_model(f"models:/{logged.model_id}")
    scripted = torch.jit.load(str(local / "model_torchscript" / "model.ts"))
    x = torch.rand(1, 1, 4, 4)  # one LR training patch (HR 16 / 4): the shape the pt2 graph was exported at
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 1, 16, 16)  # SRCNN x4: LR in, HR out
    assert torch.allclose(y, scripted(x), atol=1e-5)


def test_server_stopped_mid_run_keeps_local_records(server, tmp_path, monkeypatch, fast_http):
    from monai.bundle import ConfigWorkflow

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    out = tmp_path / "run"
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE),
        workflow_type="train",
        run_id="training",
        tracking=str(SETTINGS),
        output_dir=str(out),
        run_name="srcnn-outage-test",
        epoch_length=4,
        **TINY,
    )
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda _: server.stop())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        workflow.run()
        workflow.finalize()
    assert any("medsr mlflow-sync" in str(w.message) for w in caught), "the user is told how to send records later"

    # training finished: its checkpoint is there and the records after the outage are in the local store
    assert sorted((out / "latest" / "checkpoints").glob("checkpoint_*.pt"))
    offline_db = out / OFFLINE_DB
    assert offline_db.is_file()
    local = mlflow.MlflowClient(f"sqlite:///{offline_db}")
    (local_run,) = local.search_runs(
        [e.experiment_id for e in local.search_experiments()], "tags.`medsr.offline` = 'true'"
    )
    assert local_run.info.status == "FINISHED" and local_run.data.tags[TAG_OFFLINE] == "true"
    assert [s for s, _ in _history(local, local_run.info.run_id, "train/loss")] == [3, 4]
    assert local_run.data.params["lr"] == "0.0001"  # params re-logged into the local run
    local_files = _artifacts(local, local_run.info.run_id)
    assert any(f.startswith("images/") for f in local_files)
    local_models = local.search_logged_models([e.experiment_id for e in local.search_experiments()])
    assert any(m.source_run_id == local_run.info.run_id for m in local_models)
    remote_id = local_run.data.tags[TAG_REMOTE_RUN_ID]

    # the server comes back: medsr mlflow-sync appends the local records to the run that started there
    server.start()
    assert medsr_main(["mlflow-sync", "--from", str(out), "--to", server.uri]) == 0
    remote = mlflow.MlflowClient(server.uri)
    synced = remote.get_run(remote_id)
    assert [s for s, _ in _history(remote, remote_id, "train/loss")] == [1, 2, 3, 4]
    assert synced.info.status == "FINISHED"
    assert any(f.startswith("images/") for f in _artifacts(remote, remote_id))
    assert medsr_main(["mlflow-sync", "--from", str(out), "--to", server.uri]) == 0  # nothing sent twice
    assert [s for s, _ in _history(remote, remote_id, "train/loss")] == [1, 2, 3, 4]
