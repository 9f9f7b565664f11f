"""Every script in ``benchmarks/`` runs to the end in its smallest setting (a smoke run, not a measurement):
a refactor that breaks a benchmark fails here. The figures in the README come from full runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SMOKE = {
    "bench_degradation": (["--size", "48", "--repeats", "1"], "torchio"),
    "bench_training": (["--iters", "2"], "it/s"),
    "bench_networks": (["--quick", "--only", "2d", "--variants", "fp32,channels_last", "--threads", "1", "--repeats", "1"], "% pk"),
    "bench_inference": (["--shape", "48", "48", "12", "--roi", "32", "32", "8", "--threads", "1"], "peak RSS growth"),
    "bench_quality": (["--models", "rdn_x2_realistic", "--limit", "2", "--degradations", "bicubic", "--threads", "1",
                       "--sets", "heldout", "indist", "--tta", "2"], "rdn_x2_realistic+tta2"),
    "bench_intensity": (["--models", "rdn_x2_realistic", "--sets", "heldout", "--threads", "1"], "heldout mean"),
    "bench_convergence": (["--choices", "study", "residual_interp", "--epochs", "1", "--epoch_length", "2",
                           "--max_val_items", "1", "--val_crop", "64", "--batch_size", "2", "--threads", "1"],
                          "residual_interp"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMOKE))
def test_benchmark_script_runs(name, tmp_path):
    args, expected = SMOKE[name]
    extra = ["--json", str(tmp_path / "out.json")] if name in ("bench_quality", "bench_convergence") else []
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, f"benchmarks/{name}.py", *args, *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert expected in out, out[-3000:]
    if extra:
        rows = json.loads((tmp_path / "out.json").read_text())["rows"]
        assert rows and all("psnr" in r or "val_psnr" in r for r in rows)


@pytest.mark.slow
def test_inference_benchmark_cli_mode_runs():
    """``bench_inference.py --cli``: medsr upscale end to end against its compute, import torch and PIL."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "benchmarks/bench_inference.py", "--cli", "--sizes", "32"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "import torch" in out and "32x32" in out and "PIL bicubic" in out, out[-3000:]
