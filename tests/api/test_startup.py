"""Start-up: ``medsr --help`` and argument errors import neither torch nor MONAI (nor mlflow); the shipped-model
path (``medsr upscale`` without ``--bundle``, ``medsr.upscale``) imports no MONAI. Checked through
``sys.modules`` in a fresh interpreter, not by timing (``benchmarks/bench_inference.py --cli`` times it)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
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


# ---------------------------------------------------------------------------------------------------------
# the shipped-model path imports no MONAI (issue 25: start-up is `import torch` + at most 1 s beyond compute)
def _monai_after(code: str, cwd) -> tuple[list[str], str]:
    """Run ``code`` in a fresh interpreter in ``cwd``; the MONAI modules imported by then, and the output."""
    probe = (
        code
        + "\nimport json, sys\nprint('MONAI', json.dumps(sorted(m for m in sys.modules if m.startswith('monai'))))\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=cwd, check=True)
    line = [ln for ln in run.stdout.splitlines() if ln.startswith("MONAI ")][-1]
    return json.loads(line[len("MONAI ") :]), run.stdout


def test_upscale_png_with_a_shipped_model_imports_no_monai(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 48)) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    code = (
        "from medsr.pipeline.cli import main\n"
        "assert main(['upscale', 'in.png', 'out.png', '--scale', '2', '--quiet']) == 0\n"
    )
    monai, out = _monai_after(code, tmp_path)
    assert "model rdn_x2" in out  # a shipped model did the work
    assert Image.open(tmp_path / "out.png").size == (96, 80)
    assert monai == [], f"medsr upscale of a PNG imported {len(monai)} MONAI modules, e.g. {monai[:3]}"


def test_upscale_array_api_imports_no_monai(tmp_path):
    code = (
        "import numpy as np, medsr\n"
        "sr, spacing = medsr.upscale(np.zeros((64, 64), 'float32'), scale=2)\n"
        "assert sr.shape == (128, 128) and spacing == (0.5, 0.5), (sr.shape, spacing)\n"
    )
    monai, _ = _monai_after(code, tmp_path)
    assert monai == [], f"medsr.upscale(array) imported {len(monai)} MONAI modules, e.g. {monai[:3]}"


def test_upscale_nifti_with_a_shipped_model_imports_no_monai(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    nib.save(nib.Nifti1Image(rng.random((24, 20, 6)).astype(np.float32) * 100, affine), tmp_path / "in.nii.gz")
    code = (
        "from medsr.pipeline.cli import main\n"
        "assert main(['upscale', 'in.nii.gz', 'out.nii.gz', '--scale', '2', '--quiet']) == 0\n"
    )
    monai, _ = _monai_after(code, tmp_path)
    assert nib.load(tmp_path / "out.nii.gz").shape == (48, 40, 6)  # in-plane, slice by slice
    assert monai == [], f"medsr upscale of a NIfTI imported {len(monai)} MONAI modules, e.g. {monai[:3]}"
