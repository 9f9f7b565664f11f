"""A server that is down at the start: the run goes to the local store at once, with a warning."""

from __future__ import annotations

import socket
import time

import mlflow
import pytest

from medsr.pipeline.tracking import TrackingSession
from medsr.pipeline.tracking.session import OFFLINE_DB, TAG_OFFLINE, TAG_REMOTE_URI


def test_unreachable_server_at_start_goes_local(tmp_path, monkeypatch):
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    session = TrackingSession(None, "medsr/test", "offline-run", tmp_path)
    start = time.monotonic()
    with pytest.warns(RuntimeWarning, match=f"medsr mlflow-sync --from {tmp_path / OFFLINE_DB} --to {uri}"):
        session.log_params({"lr": "0.001"})
    assert time.monotonic() - start < 30 and session.offline
    session.log_metrics({"loss": 0.5}, step=3)
    session.end()
    local = mlflow.MlflowClient(f"sqlite:///{tmp_path / OFFLINE_DB}")
    run = local.get_run(session.run_id)
    assert run.data.params == {"lr": "0.001"} and run.info.status == "FINISHED"
    assert run.data.tags[TAG_OFFLINE] == "true" and run.data.tags[TAG_REMOTE_URI] == uri
    assert [(m.step, m.value) for m in local.get_metric_history(run.info.run_id, "loss")] == [(3, 0.5)]
