"""A built wheel is the whole tool: bundle configs, shipped models and tracking settings inside, working from
any folder. Builds the wheel from a copy of the checkout (what git tracks), installs it into a fresh venv,
then runs ``medsr upscale`` and ``medsr.upscale`` from a folder that is not the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.slow
def test_wheel_carries_bundles_and_models_and_works_from_any_folder(tmp_path):
    start = time.perf_counter()
    src = tmp_path / "clone"
    files = _run(["git", "ls-files", "-co", "--exclude-standard"], ROOT).splitlines()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    # --without-pip: the venv uses the system's pip and setuptools (which builds wheels); the system's
    # packages (torch, monai, ...) are visible, and the wheel installed into the venv comes first on sys.path
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], tmp_path)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)], src)
    (wheel,) = (tmp_path / "dist").glob("medsr-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for want in ("medsr/__init__.py", "medsr/bundles/common/train.json", "medsr/bundles/espcn/train.json",
                 "medsr/bundles/rdn/models/model.pt", "medsr/mlflow/tracking.json"):  # fmt: skip
        assert want in names, f"{want} not in the wheel"
    shipped = {n for n in files if n.startswith("bundles/") and n.endswith((".json", ".pt", ".conf"))}
    assert {f"medsr/{n}" for n in shipped} <= names
    assert not any(n.startswith("medsr/mlflow/__init__") for n in names)
    _run([*pip, "install", "--no-deps", "--no-build-isolation", str(wheel)], tmp_path)

    away = tmp_path / "elsewhere"
    away.mkdir()
    Image.fromarray((np.random.default_rng(0).random((24, 32)) * 255).astype(np.uint8)).save(away / "x.png")
    where = _run([python, "-c", "import medsr.pipeline; print(medsr.pipeline.__file__)"], away).strip()
    assert Path(where).is_relative_to(venv), f"medsr.pipeline imported from {where}, not the wheel"
    out = _run([str(venv / "bin" / "medsr"), "upscale", "x.png", "y.png", "--quiet"], away)
    assert "y.png" in out
    with Image.open(away / "y.png") as im:
        assert im.size == (64, 48)
    code = (
        "import sys, medsr, numpy as np; print(medsr.upscale(np.zeros((64,64),'float32'), scale=2)[0].shape, "
        "sum(m.startswith('monai') for m in sys.modules))"
    )
    assert _run([python, "-c", code], away).strip().splitlines()[-1] == "(128, 128) 0"  # installed: no MONAI import
    print(f"wheel built, installed and used in {time.perf_counter() - start:.0f} s")
