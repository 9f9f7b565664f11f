"""A real MLflow tracking server on a free loopback port (sqlite backend, artifacts folder), always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from medsr.pipeline.tracking import server_alive

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MlflowServer:
    """An ``mlflow server`` process started by ``mlflow/server.sh``; ``stop()`` and ``start()`` may be repeated."""

    folder: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - closed with the process
        env = dict(os.environ, PYTHON=sys.executable, MLFLOW_SERVER_WORKERS="1")
        env.pop("MLFLOW_TRACKING_URI", None)
        self.proc = subprocess.Popen(
            ["bash", str(ROOT / "mlflow" / "server.sh"), str(self.port), str(self.folder)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends the server and its workers
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {self.proc.returncode}; see {self.folder / 'server.log'}"
                )
            if server_alive(self.uri, timeout=2):
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer on {self.uri} within {timeout} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 20
        while server_alive(self.uri, timeout=1) and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A started server shared by a module's tests (a test may stop and start it); stopped at teardown."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fast_http(monkeypatch):
    """Fail over in about a second when the server goes away (restored after the test)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
