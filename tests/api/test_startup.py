"""Start-up: ``medsr --help`` and argument errors import neither torch nor MONAI (nor mlflow). Checked through
``sys.modules`` in a fresh interpreter, not by timing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "monai", "mlflow", "numpy")


def _imported_after(argv: list[str]) -> tuple[int, list[str]]:
    code = (
        "import json, sys\n"
        "from medsr.pipeline.cli import main\n"
        "try:\n"
        f"    code = main({argv!r})\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        f"print(json.dumps([code, [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    code, heavy = json.loads(out.strip().splitlines()[-1])
    return code, heavy


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["upscale", "--help"], ["train", "--help"], ["upscale"], ["train", "espcn", "--epochs", "x"]],
    ids=["help", "upscale-help", "train-help", "missing-argument", "bad-argument"],
)
def test_help_and_argument_errors_import_no_heavy_package(argv):
    code, heavy = _imported_after(argv)
    assert code in (0, 2)
    assert heavy == [], f"medsr {' '.join(argv)} imported {heavy}"


def test_import_medsr_imports_no_heavy_package():
    code = f"import sys, medsr; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
