"""Start and stop the MONAI Label server (in the label env) from the main environment.

``start_server`` copies ``main.py`` into a runtime app folder (MONAI Label writes ``logs/``, ``model/``,
``lib/`` and ``bin/`` into its app folder, so the repo folder stays clean), then launches
``<env>/bin/python -m monailabel.main start_server`` on a loopback address with the env's ``bin`` first on
``PATH``, in its own process group. ``wait_ready`` polls ``/info/`` with a deadline; ``stop_server`` sends
SIGTERM to that group, waits, then SIGKILL: every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medsr.pipeline.io import write_bytes_atomic
from medsr.pipeline.label_app.env import env_for_subprocess, env_python, label_env_dir

__all__ = ["APP_DIR", "free_port", "prepare_app_dir", "server_command", "start_server", "wait_ready", "stop_server"]

APP_DIR = Path(__file__).resolve().parent
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Server-side settings: no training/scoring/watchers; the app only serves inference.
SERVER_SETTINGS = {
    "MONAI_LABEL_TASKS_TRAIN": "false",
    "MONAI_LABEL_TASKS_SCORING": "false",
    "MONAI_LABEL_TASKS_BATCH_INFER": "false",
    "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
    "MONAI_LABEL_TRACKING_ENABLED": "false",
    "MONAI_LABEL_SESSIONS": "false",
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def prepare_app_dir(workdir: str | os.PathLike) -> Path:
    """Copy the app's ``main.py`` into ``<workdir>/app`` and return that folder."""
    app = Path(workdir).expanduser().resolve() / "app"
    app.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(app / "main.py", (APP_DIR / "main.py").read_bytes())
    return app


def server_command(
    env_dir: str | os.PathLike,
    app_dir: str | os.PathLike,
    datastore: str | os.PathLike,
    port: int,
    host: str = "127.0.0.1",
    conf: Mapping[str, Any] | None = None,
) -> list[str]:
    """The ``monailabel start_server`` command line (run with :func:`env_for_subprocess`)."""
    if host not in LOOPBACK:
        raise ValueError(f"host '{host}': only loopback addresses are served ({', '.join(LOOPBACK)})")
    if not 0 < int(port) < 65536:
        raise ValueError(f"port: expected 1..65535, got {port}")
    cmd = [str(env_python(env_dir)), "-m", "monailabel.main", "start_server", "--app", str(app_dir)]
    cmd += ["--studies", str(datastore), "--host", host, "--port", str(int(port))]
    for key, value in (conf or {}).items():
        if value is None:
            continue
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        cmd += ["--conf", str(key), text]
    return cmd


def start_server(
    datastore: str | os.PathLike,
    port: int,
    workdir: str | os.PathLike,
    env_dir: str | os.PathLike | None = None,
    host: str = "127.0.0.1",
    conf: Mapping[str, Any] | None = None,
    log_file: str | os.PathLike | None = None,
) -> subprocess.Popen:
    """Launch the server in the background (own process group); returns the process.

    Args:
        datastore: folder of images (NIfTI etc.); MONAI Label keeps its ``datastore_v2.json`` there.
        port: TCP port on ``host``.
        workdir: runtime folder (the app copy and, by default, ``server.log``).
        env_dir: the label env (default :func:`medsr.pipeline.label_app.env.label_env_dir`); build it first
            with :func:`medsr.pipeline.label_app.env.ensure_label_env`.
        host: a loopback address.
        conf: app config (``bundles``, ``runs_dir``, ``models``, ``overrides``, ``allow_untrained``).
        log_file: server output (default ``<workdir>/server.log``).
    """
    env_dir = label_env_dir(env_dir)
    if not env_python(env_dir).exists():
        raise FileNotFoundError(f"label env '{env_dir}': no python there (run `medsr label setup-env` first)")
    datastore = Path(datastore).expanduser().resolve()
    if not datastore.is_dir():
        raise ValueError(f"datastore '{datastore}': no such folder")
    app = prepare_app_dir(workdir)
    cmd = server_command(env_dir, app, datastore, port, host, conf)
    env = env_for_subprocess(env_dir)
    env.update(SERVER_SETTINGS)
    log_path = Path(log_file) if log_file else Path(workdir).resolve() / "server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            cwd=str(app),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def wait_ready(
    url: str, proc: subprocess.Popen | None = None, timeout: float = 180.0, log_file: str | os.PathLike | None = None
) -> dict:
    """Poll ``<url>/info/`` until it answers (returns the JSON), the process exits, or ``timeout`` passes.

    Raises:
        RuntimeError: with the end of ``log_file`` when the server died or never answered.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"MONAI Label server exited with code {proc.returncode} before answering\n{_tail(log_file)}"
            )
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/info/", timeout=10) as resp:
                return json.loads(resp.read().decode())
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError) as err:
            last = err
            time.sleep(0.5)
    raise RuntimeError(f"MONAI Label server at {url} did not answer within {timeout:.0f} s ({last})\n{_tail(log_file)}")


def stop_server(proc: subprocess.Popen, timeout: float = 20.0) -> int | None:
    """Stop the server's process group: SIGTERM, wait up to ``timeout`` s, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=timeout)
    return proc.returncode


def _tail(log_file: str | os.PathLike | None, n: int = 60) -> str:
    if not log_file or not Path(log_file).exists():
        return ""
    return "\n".join(Path(log_file).read_text(errors="replace").splitlines()[-n:])
