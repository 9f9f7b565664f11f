"""The MLflow UI shows a tracked run as a MONAI/MLflow user expects: a headless Chromium on a loopback ``mlflow ui``."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_server import assert_logged_figure_is_run_folders  # noqa: E402
from test_two_runs import ROOT, TINY  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install -y chromium)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--window-size=1600,1400", "--virtual-time-budget=30000", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_run_page_shows_val_section_and_logged_model(tmp_path, monkeypatch):
    import mlflow
    from monai.bundle import run

    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "srcnn"
    run("training", config_file=str(ROOT / "bundles" / "srcnn" / "train.json"), output_dir=str(out), **TINY)
    uri = f"sqlite:///{out / 'mlruns.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("medsr/srcnn")
    (tracked,) = client.search_runs([experiment.experiment_id])
    # the figure on the run page's step slider is the run folder's, with its cubic panel and the logged numbers
    assert_logged_figure_is_run_folders(client, tracked.info.run_id, out / tracked.info.run_name, tmp_path / "fig")

    port = _free_port()
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 300  # a loaded 2-core machine starts it slowly
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "mlflow ui did not start"
            time.sleep(0.5)
        page = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs/{tracked.info.run_id}"
        dom = _chromium("--dump-dom", page).stdout
        assert tracked.info.run_name in dom, dom[-2000:]
        assert "val/psnr" in dom and "val/ssim" in dom  # the val/ section of the run's metrics
        assert "Logged models" in dom and "model" in dom  # the generator as a logged model
        shot = Path(os.environ.get("MEDSR_SCREENSHOT_DIR", tmp_path)) / "mlflow_run_page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        _chromium(f"--screenshot={shot}", page)
        assert shot.is_file() and shot.stat().st_size > 10_000
        charts = _chromium("--dump-dom", page + "/model-metrics").stdout
        assert "val" in charts
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
