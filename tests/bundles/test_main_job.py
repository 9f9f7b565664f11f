"""The README's main job (fine-tuning the shipped ESRGAN-SE model) ends with SR beating cubic interpolation."""

from __future__ import annotations

import csv
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _main_training_args() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    line = re.search(r"^<!-- main-command --> *(.+)$", readme, flags=re.M).group(1)
    training = line.split("&&")[-1].strip()
    args = shlex.split(training)
    assert args[:4] == ["python", "-m", "monai.bundle", "run"], training
    return args[1:]


@pytest.mark.slow
def test_main_job_last_validation_beats_cubic(tmp_path):
    args = _main_training_args()
    assert "--init_weights" in args  # starts from the shipped weights
    proc = subprocess.run(
        [sys.executable, *args, "--output_dir", str(tmp_path / "run")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = [p.parent for p in (tmp_path / "run").glob("*/metrics.csv") if not p.parent.is_symlink()]
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert rows and rows[-1]["stage"] == "gan"
    last = rows[-1]
    assert float(last["val_psnr"]) > float(last["val_psnr_cubic"]) + 1.0
    assert float(last["val_psnr_gain"]) == pytest.approx(float(last["val_psnr"]) - float(last["val_psnr_cubic"]))
    # the log line the README quotes: each validation with the cubic baseline and the gain
    logged = re.findall(r"Epoch\[1\] Metrics -- val_psnr: ([\d.]+) val_psnr_cubic: ([\d.]+) val_psnr_gain", proc.stdout)
    assert len(logged) == 2 and float(logged[-1][0]) == pytest.approx(float(last["val_psnr"]), abs=1e-3)
    assert sorted(p.name for p in (run / "images").glob("*.png")) == [
        "gan_epoch_0001.png",
        "pretrain_epoch_0001.png",
    ]
