"""Hostile names: no file name, datalist entry or override value is ever evaluated as code or as a reference.

MONAI's config parser evaluates text starting with ``$``, resolves ``@id`` and ``%file#id`` and splits ids at
``#``/``::``. Each name below goes through a ``medsr`` command (in this process) as an input, an output, a
datalist entry or a ``--set`` value. The ``$`` name runs ``touch $MEDSR_MARKER`` if it is ever evaluated;
every test checks that the marker is never created and that the file is processed (an output with the
literal name) or refused in one line that quotes the name literally.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsr.pipeline.cli import main as medsr_main

REPO = Path(__file__).resolve().parents[1]

#: evaluated as Python, this creates the marker file (the shell expands $MEDSR_MARKER)
CODE = "$__import__('os').system('touch $MEDSR_MARKER') or 'x'"
NAMES = {
    "dollar-code": CODE,
    "at-reference": "@bundle_root",
    "percent-macro": "%epochs",
    "hash": "a#b",
    "double-colon": "a::b",
    "spaces": "my scan 01",
    "unicode": "hirn_ünïcødé_脑",
}
IDS = list(NAMES)


@pytest.fixture
def marker(tmp_path, monkeypatch):
    path = tmp_path / "MARKER"
    monkeypatch.setenv("MEDSR_MARKER", str(path))
    monkeypatch.chdir(REPO)  # bundles reference bundles/common/*.json relative to the working directory
    yield path
    assert not path.exists(), "a user-given name was evaluated as code"


#: an in-process bundle run points log handlers at this test's captured streams: dropped after each test
pytestmark = pytest.mark.usefixtures("own_logging")


def _image(path: Path, shape=(16, 16)) -> Path:
    data = (np.random.default_rng(0).random(shape, dtype=np.float32) * 100.0).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 1.0, 1.0])), str(path))
    return path


def _png(path: Path, shape=(24, 20)) -> Path:
    from PIL import Image

    Image.fromarray((np.random.default_rng(1).random(shape) * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("name", NAMES.values(), ids=IDS)
def test_upscale_shipped_model(name, tmp_path, marker, capsys):
    src = _image(tmp_path / f"{name}.nii.gz")
    out = tmp_path / f"{name}_sr.nii.gz"
    assert medsr_main(["upscale", str(src), str(out), "--quiet"]) == 0, capsys.readouterr().err[-2000:]
    assert nib.load(str(out)).shape == (32, 32)
    assert str(out) in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES.values(), ids=IDS)
def test_upscale_bundle_input_and_output(name, tmp_path, marker, capsys):
    src = _image(tmp_path / f"{name}.nii.gz")
    out = tmp_path / f"{name} out" / f"{name}_sr.nii.gz"
    argv = ["upscale", str(src), str(out), "--bundle", "espcn", "--checkpoint", "", "--quiet"]
    assert medsr_main(argv) == 0, capsys.readouterr().err[-2000:]
    assert nib.load(str(out)).shape == (64, 64)  # espcn's config scale 4, random weights
    assert f"{out}:" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", [CODE, "a#b"], ids=["dollar-code", "hash"])
def test_selfsr_input_and_output(name, tmp_path, marker, capsys):
    data = np.random.default_rng(0).random((12, 10, 4), dtype=np.float32) * 500
    src = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 3.0, 1.0])), str(src))
    out = tmp_path / f"{name}_sr.nii.gz"
    argv = [
        "selfsr", str(src), str(out), "--steps", "2", "--threads", "1",
        "--network", '{"name": "slicenet", "num_features": 4, "num_blocks": 1}',
        "--set", "batch_size=2", "--set", "patch_rows=8", "--set", "lr_length=3", "--set", "ckpt_every=2",
    ]  # fmt: skip
    assert medsr_main(argv) == 0, capsys.readouterr().err[-2000:]
    assert nib.load(str(out)).shape[:2] == (12, 10)


@pytest.mark.parametrize("name", NAMES.values(), ids=IDS)
def test_train_set_run_name_is_refused_literally(name, tmp_path, marker, capsys):
    argv = ["train", "espcn", "--output-dir", str(tmp_path / "runs"), "--set", f"run_name={name}"]
    assert medsr_main(argv) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("medsr")]
    assert len(lines) == 1 and repr(name) in lines[0], lines
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_train_on_a_datalist_of_hostile_names(tmp_path, marker, capsys):
    """Every name as an image, the datalist file and the runs folder: one tiny training run."""
    folder = tmp_path / f"{CODE} data"
    folder.mkdir()
    items = [{"image": str(_image(folder / f"{n}.nii.gz", shape=(24, 24)))} for n in NAMES.values()]
    datalist = tmp_path / f"{CODE}.json"
    datalist.write_text(json.dumps({"training": items, "validation": items[:1]}))
    runs = tmp_path / "%epochs runs#a"
    argv = ["train", "espcn", "--datalist", str(datalist), "--output-dir", str(runs), "--epochs", "1",
            "--epoch-length", "1", "--batch-size", "1", "--patch-size", "4", "--set", "samples_per_image=1",
            "--set", "max_val_items=1", "--set", "val_crop=16", "--set", "num_features=[4, 4]",
            "--tracking", "none"]  # fmt: skip
    assert medsr_main(argv) == 0, capsys.readouterr().err[-3000:]
    assert list(runs.glob("*/checkpoints/*.pt")), sorted(str(p) for p in runs.rglob("*"))


@pytest.mark.parametrize("name", NAMES.values(), ids=IDS)
def test_datalist_lists_names_literally(name, tmp_path, marker, capsys):
    folder = tmp_path / f"{name} pngs"
    folder.mkdir()
    for k in range(3):
        _png(folder / f"{name}_{k}.png")
    out = tmp_path / f"{name}.json"
    assert medsr_main(["datalist", str(folder), "-o", str(out), "--val-fraction", "0.34", "--test-fraction", "0"]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    listed = sorted(Path(i["image"]).name for s in ("training", "validation") for i in data[s])
    assert listed == [f"{name}_{k}.png" for k in range(3)]


@pytest.mark.parametrize("name", [CODE, "@bundle_root", "a#b"], ids=["dollar-code", "at-reference", "hash"])
def test_models_export_set_value_is_literal(name, tmp_path, marker, capsys):
    import torch

    from medsr.networks import ESPCN
    from medsr.pipeline.models import read_model_info

    ckpt = tmp_path / f"{name}.pt"
    torch.save(ESPCN(2, 1, 1, 4, (4, 4)).state_dict(), ckpt)
    out = tmp_path / f"{name}_model.pt"
    argv = ["models", "export", "espcn", str(ckpt), str(out), "--name", name, "--set", "num_features=[4, 4]",
            "--set", f"degradation={name}"]  # fmt: skip
    assert medsr_main(argv) == 0, capsys.readouterr().err[-2000:]
    info = read_model_info(out)
    assert info["degradation"] == name and info["name"] == name
