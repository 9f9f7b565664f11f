"""Create (once) and locate the separate virtual environment that runs the MONAI Label server.

MONAI Label 0.8.5 declares dependencies that clash with medsr's stack (torchvision, CUDA torch, numpy < 2
through pydicom-seg, pydicom < 3), so its server runs in its own venv:

1. :data:`REQUIREMENTS` (pinned; torch is the local CPU wheel ``torch==2.13.0``) are installed normally;
2. :data:`NO_DEPS` (``monailabel==0.8.5`` and ``pydicom-seg``) are installed with ``--no-deps``;
3. this repository is installed with ``pip install --no-deps -e`` so the app can ``import medsr.…``.

The venv lives in ``$MEDSR_LABEL_ENV`` when set, else ``~/.cache/medsr/label-env-<hash>``, where the hash
covers the requirement lists and the Python version: a changed list builds a new env, an unchanged one is
reused (CI builds it once per machine). A file lock serializes concurrent builds, and a marker file written
last tells a finished env from a half-built one. If the repository moved (a fresh clone), only step 3 is
redone.

Run as ``python -m medsr.pipeline.label_app.env [--force]`` or ``medsr label setup-env``.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from medsr.pipeline.bundles import REPO_ROOT
from medsr.pipeline.io import write_json_atomic

__all__ = [
    "REQUIREMENTS",
    "NO_DEPS",
    "REPO_ROOT",
    "requirements_hash",
    "label_env_dir",
    "env_python",
    "env_bin",
    "is_ready",
    "ensure_label_env",
    "env_for_subprocess",
]


# Found by trying: each import error of `monailabel.main` / `monailabel.app` added a line. torch first, so that
# nothing later can pull a CUDA build; every version is pinned so the env hash names one env.
REQUIREMENTS: tuple[str, ...] = (
    "torch==2.13.0",
    "numpy==2.4.6",
    "monai==1.6.1",  # monailabel 0.8.5 asks for monai>=1.4.0; 1.6.1 works for the custom app
    "nibabel==5.4.2",
    "scipy==1.17.1",
    "pydicom==2.4.4",
    "dicomweb-client[gcp]==0.59.3",  # the [gcp] extra (google-auth) is imported by monailabel.interfaces.app
    "pynetdicom==2.1.1",
    "psutil==7.2.2",
    "SimpleITK==2.5.7",
    "itk==5.4.7",  # monailabel.transform.writer imports itk at module level
    "jsonschema==3.2.0",  # pydicom-seg needs jsonschema < 4
    "fastapi==0.165.0",
    "uvicorn==0.54.0",
    "pydantic==2.14.3",
    "pydantic-settings==2.16.3",
    "python-dotenv==1.2.4",
    "python-multipart==0.0.34",
    "httpx==0.28.1",
    "requests==2.34.2",
    "requests-toolbelt==1.0.0",
    "urllib3==2.8.0",
    "schedule==1.2.2",
    "timeloop==1.0.2",
    "expiringdict==1.2.2",
    "expiring_dict==1.1.2",
    "cachetools==8.0.0",
    "watchdog==7.1.0",
    "pynrrd==1.1.3",
    "filelock==4.2.11",
    "passlib==1.7.4",
    "PyJWT==2.15.1",
    "bcrypt==5.0.0",
    "PyYAML==6.0.3",
    "einops==0.8.2",
    "girder-client==5.0.21",  # monailabel.datastore.dsa imports it at module level
    "pytorch-ignite==0.5.5",  # medsr.pipeline.engines (checkpoint loading) imports ignite
    "tqdm==4.70.1",
    "setuptools",  # for the editable install of medsr without build isolation
)
NO_DEPS: tuple[str, ...] = ("monailabel==0.8.5", "pydicom-seg==0.4.1")
READY_MARKER = ".medsr-label-env.json"


def requirements_hash() -> str:
    """Twelve hex digits naming this requirement set (lists + Python major.minor)."""
    text = "\n".join([*REQUIREMENTS, "--no-deps", *NO_DEPS, f"python{sys.version_info[0]}.{sys.version_info[1]}"])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def label_env_dir(path: str | os.PathLike | None = None) -> Path:
    """The venv folder: ``path``, else ``$MEDSR_LABEL_ENV``, else ``~/.cache/medsr/label-env-<hash>``."""
    if path:
        return Path(path).expanduser().resolve()
    env = os.environ.get("MEDSR_LABEL_ENV")
    if env:
        return Path(env).expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (cache / "medsr" / f"label-env-{requirements_hash()}").resolve()


def env_bin(env_dir: str | os.PathLike) -> Path:
    """The venv's ``bin`` folder."""
    return Path(env_dir) / "bin"


def env_python(env_dir: str | os.PathLike) -> Path:
    """The venv's interpreter."""
    return env_bin(env_dir) / "python"


def env_for_subprocess(env_dir: str | os.PathLike, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables for a process in the label env: its ``bin`` first on ``PATH`` (the ``monailabel``
    launcher calls bare ``python``), no ``PYTHONPATH``/``PYTHONHOME`` leaking in from the main env."""
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    env["VIRTUAL_ENV"] = str(env_dir)
    env["PATH"] = os.pathsep.join([str(env_bin(env_dir)), env.get("PATH", "")])
    env["MONAILABEL_PYEXE"] = str(env_python(env_dir))
    env.setdefault("OMP_NUM_THREADS", "2")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _read_marker(env_dir: Path) -> dict | None:
    try:
        return json.loads((env_dir / READY_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _medsr_location(env_dir: Path) -> Path | None:
    """Where ``medsr.pipeline`` imports from inside the env (``None`` when it does not import)."""
    code = (
        "import medsr.pipeline, os; print(os.path.dirname(os.path.dirname(os.path.abspath(medsr.pipeline.__file__))))"
    )
    proc = subprocess.run(
        [str(env_python(env_dir)), "-c", code],
        capture_output=True,
        text=True,
        env=env_for_subprocess(env_dir),
        cwd="/",
        timeout=120,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    return Path(proc.stdout.strip().splitlines()[-1]).resolve()


def is_ready(env_dir: str | os.PathLike | None = None, repo_root: str | os.PathLike = REPO_ROOT) -> bool:
    """True when the env was fully built for this requirement set and imports medsr from ``repo_root``."""
    env_dir = label_env_dir(env_dir)
    marker = _read_marker(env_dir)
    if not marker or marker.get("hash") != requirements_hash() or not env_python(env_dir).exists():
        return False
    return _medsr_location(env_dir) == Path(repo_root).resolve()


def _run(cmd: Sequence[str], env_dir: Path, log, timeout: float) -> None:
    log(f"+ {' '.join(cmd)}")
    proc = subprocess.run(
        list(cmd),
        env=env_for_subprocess(env_dir),
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    lines = [ln for ln in proc.stdout.splitlines() if "is ignored: it is neither a file nor a directory" not in ln]
    if proc.returncode != 0:
        tail = "\n".join(lines[-40:])
        raise RuntimeError(f"label env '{env_dir}': command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


def ensure_label_env(
    env_dir: str | os.PathLike | None = None,
    repo_root: str | os.PathLike = REPO_ROOT,
    force: bool = False,
    timeout: float = 1800.0,
    log=None,
) -> Path:
    """Build the MONAI Label venv unless a finished one for the same requirements exists; return its folder.

    Args:
        env_dir: where the venv goes (default :func:`label_env_dir`).
        repo_root: the medsr checkout to install editable into the env.
        force: delete and rebuild even a finished env.
        timeout: seconds allowed for each pip step.
        log: callable taking one line (default: print to stderr).

    Raises:
        RuntimeError: naming the failed command and showing the end of pip's output.
    """
    log = log or (lambda msg: print(f"[medsr label env] {msg}", file=sys.stderr, flush=True))
    env_dir = label_env_dir(env_dir)
    repo_root = Path(repo_root).resolve()
    if not (repo_root / "setup.py").is_file():
        raise ValueError(f"repo_root '{repo_root}': no setup.py there (expected the medsr checkout)")
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = env_dir.parent / f".{env_dir.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second builder waits here, then finds the env ready
        try:
            marker = _read_marker(env_dir)
            if not force and marker and marker.get("hash") == requirements_hash() and env_python(env_dir).exists():
                if _medsr_location(env_dir) == repo_root:
                    log(f"using cached env {env_dir}")
                    return env_dir
                log(f"env {env_dir}: re-installing medsr from {repo_root}")
                _install_medsr(env_dir, repo_root, log, timeout)
                return env_dir
            start = time.monotonic()
            if env_dir.exists():
                log(f"removing incomplete or outdated env {env_dir}")
                shutil.rmtree(env_dir)
            log(f"creating {env_dir} (once per machine; a few minutes)")
            _run([sys.executable, "-m", "venv", str(env_dir)], env_dir, log, timeout)
            py = str(env_python(env_dir))
            pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q"]
            _run([*pip, "torch==2.13.0"], env_dir, log, timeout)  # alone first: the local CPU wheel
            _run([*pip, *REQUIREMENTS], env_dir, log, timeout)
            _run([*pip, "--no-deps", *NO_DEPS], env_dir, log, timeout)
            _install_medsr(env_dir, repo_root, log, timeout)
            check = "import monailabel.main, monailabel.app, torch, monai; print(torch.__version__, monai.__version__)"
            _run([py, "-c", check], env_dir, log, timeout)
            info = {"hash": requirements_hash(), "requirements": list(REQUIREMENTS), "no_deps": list(NO_DEPS)}
            write_json_atomic(info, env_dir / READY_MARKER)
            log(f"env ready in {time.monotonic() - start:.0f} s: {env_dir}")
            return env_dir
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _install_medsr(env_dir: Path, repo_root: Path, log, timeout: float) -> None:
    py = str(env_python(env_dir))
    cmd = [py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(repo_root)]
    _run(cmd, env_dir, log, timeout)
    where = _medsr_location(env_dir)
    if where != repo_root:
        raise RuntimeError(f"label env '{env_dir}': medsr imports from {where}, expected {repo_root}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build (or find) the env and print its folder."""
    parser = argparse.ArgumentParser(prog="python -m medsr.pipeline.label_app.env", description=__doc__.splitlines()[0])
    parser.add_argument("--env-dir", default=None, help="venv folder (default $MEDSR_LABEL_ENV or ~/.cache/medsr/…)")
    parser.add_argument("--force", action="store_true", help="rebuild even a finished env")
    args = parser.parse_args(argv)
    print(ensure_label_env(args.env_dir, force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
