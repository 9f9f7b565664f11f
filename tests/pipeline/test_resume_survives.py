"""A failed start never breaks resume: ``latest`` moves only with a run's first checkpoint, override types are
checked before anything is created, and ``--resume`` finds the newest run that has a checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsr.pipeline.cli import main as medsr_main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, own_logging):  # own_logging: no handler left on a closed stream
    monkeypatch.chdir(REPO)
    yield


def _datalist(tmp_path: Path) -> Path:
    items = []
    for k in range(2):
        data = np.random.default_rng(k).random((32, 32), dtype=np.float32) * 100
        nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 1.0, 1.0])), str(tmp_path / f"case{k}.nii.gz"))
        items.append({"image": str(tmp_path / f"case{k}.nii.gz")})
    path = tmp_path / "dl.json"
    path.write_text(json.dumps({"training": items, "validation": items[:1]}))
    return path


def test_wrong_override_type_is_one_line_before_anything_is_created(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert medsr_main(["train", "espcn", "--output-dir", str(runs), "--set", "epochs=abc"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "override --epochs 'abc': expected an integer" in err[0], err
    assert not runs.exists()
    assert medsr_main(["train", "espcn", "--output-dir", str(runs), "--set", "lr=fast"]) == 1
    assert "override --lr 'fast': expected a number" in capsys.readouterr().err


def test_run_dir_moves_latest_only_with_the_first_checkpoint(tmp_path):
    from medsr.pipeline.runs import LATEST, checkpoint_written, find_run, resume_path, run_dir

    first = Path(run_dir(tmp_path, "first"))
    assert not (tmp_path / LATEST).exists()
    (first / "checkpoints").mkdir()
    (first / "checkpoints" / "checkpoint_00000001.pt").write_bytes(b"x")
    checkpoint_written(first / "checkpoints")
    assert Path(find_run(tmp_path)).name == "first"
    run_dir(tmp_path, "failed")  # starts, never writes a checkpoint
    assert os.readlink(tmp_path / LATEST) == "first"
    os.utime(tmp_path / "failed")  # the newest folder
    assert Path(resume_path(tmp_path, "latest")).parent.name == "first"


@pytest.mark.slow
def test_resume_latest_after_a_failed_start_resumes_the_trained_run(tmp_path, capsys):
    runs = tmp_path / "runs"
    base = ["train", "espcn", "--datalist", str(_datalist(tmp_path)), "--output-dir", str(runs), "--epoch-length",
            "2", "--batch-size", "1", "--patch-size", "4", "--set", "num_features=[4, 4]", "--set", "val_crop=16",
            "--set", "samples_per_image=1", "--tracking", "none"]  # fmt: skip
    assert medsr_main([*base, "--epochs", "1"]) == 0, capsys.readouterr().err[-2000:]
    from medsr.pipeline.runs import list_runs

    (first,) = list_runs(runs)
    assert sorted(p.name for p in (first / "checkpoints").glob("checkpoint_*.pt")) == ["checkpoint_00000002.pt"]
    # failed starts: a wrong type (nothing created) and a missing datalist (a run folder, no checkpoint)
    assert medsr_main([*base, "--set", "epochs=abc"]) == 1
    bad = [*base, "--epochs", "1"]
    bad[bad.index("--datalist") + 1] = str(tmp_path / "missing.json")
    assert medsr_main(bad) == 1
    capsys.readouterr()
    assert os.readlink(runs / "latest") == first.name
    assert medsr_main([*base, "--epochs", "2", "--resume"]) == 0, capsys.readouterr().err[-2000:]
    assert (first / "checkpoints" / "checkpoint_00000004.pt").is_file()  # the first run went on, in its folder
    assert os.readlink(runs / "latest") == first.name


def test_monai_bundle_command_line_types_are_checked(tmp_path):
    """``python -m monai.bundle run … --epochs abc`` (the argv that ``mb.check_overrides()`` reads): one line."""
    from medsr.pipeline.bundles import check_overrides
    from medsr.pipeline.errors import MedsrError

    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({"epochs": 100, "lr": 0.001, "patch_size": 96, "amp": False, "run_name": "$x"}))
    base = ["run", "training", "--config_file", str(cfg)]
    with pytest.raises(
        MedsrError, match=r"override --epochs 'abc': expected an integer \(the config's default is 100\)"
    ):
        check_overrides(argv=[*base, "--epochs", "abc"])
    with pytest.raises(MedsrError, match="override --lr 'fast': expected a number"):
        check_overrides(argv=[*base, "--lr", "fast"])
    for ok in (["--epochs", "3"], ["--lr", "1e-4"], ["--patch_size", "(64, 64, 16)"], ["--amp", "True"],
               ["--run_name", "anything"]):  # fmt: skip
        assert check_overrides(argv=[*base, *ok]) == []
