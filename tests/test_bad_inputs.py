"""Bad inputs and faults, one table: each case exits non-zero with one line naming the file or argument, no
traceback (``--debug`` gives it), and leaves every input byte-identical and nothing new at the output.

Cases run ``medsr …`` in this process (:func:`medsr.pipeline.cli.main`); the ``python -m monai.bundle`` entry
point and the kill -9 faults run as real subprocesses. The four data-loss cases of issue 16 are marked
``DATA LOSS`` in their test: each fails on the code before the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medsr.pipeline.cli import main as medsr_main

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------- files
def nifti(path: Path, shape=(16, 16), value: float | None = None, affine=None) -> Path:
    data = np.random.default_rng(0).random(shape, dtype=np.float32) * 100.0
    if value is not None:
        data.flat[3] = value
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 1.0, 1.0]) if affine is None else affine), str(path))
    return path


def truncated(path: Path) -> Path:
    nifti(path, shape=(32, 32))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def text_file(path: Path, text: str = "this is not an image\n") -> Path:
    path.write_text(text)
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its hash (folders are not counted: a run may create its empty folder)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def error_lines(err: str) -> list[str]:
    """stderr lines that are not progress bars or library warnings printed at import."""
    skip = ("it/s]", "nvImageCodec", "NvImgCodec", "%|")
    return [ln for ln in err.splitlines() if ln.strip() and not any(s in ln for s in skip)]


@pytest.fixture(autouse=True)
def _own_logging():
    """An in-process bundle run points log handlers at this test's captured streams: drop them afterwards."""
    yield
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        for h in list(lg.handlers):
            stream = getattr(h, "stream", None)
            if isinstance(h, logging.StreamHandler) and stream not in (sys.__stdout__, sys.__stderr__):
                lg.removeHandler(h)


# ------------------------------------------------------------------------------------------ the table
@dataclass
class Case:
    name: str
    setup: Callable[[Path], list[str]]  # builds files in tmp_path, returns the medsr argv
    expect: str  # regex the one error line must match
    rc: int = 1
    extra: dict = field(default_factory=dict)


def upscale(inp: str, out: str, *more: str) -> list[str]:
    return ["upscale", inp, out, "--bundle", "espcn", "--checkpoint", "", *more]


def _same_path(t: Path) -> list[str]:
    nifti(t / "scan.nii.gz")
    return upscale(str(t / "scan.nii.gz"), str(t / "scan.nii.gz"))


def _dotdot(t: Path) -> list[str]:
    (t / "in").mkdir()
    nifti(t / "in" / "scan.nii.gz")
    return upscale(str(t / "in" / "scan.nii.gz"), str(t / "in" / ".." / "in" / "scan.nii.gz"))


def _hardlink(t: Path) -> list[str]:
    nifti(t / "scan.nii.gz")
    os.link(t / "scan.nii.gz", t / "link.nii.gz")
    return upscale(str(t / "scan.nii.gz"), str(t / "link.nii.gz"))


def _symlink(t: Path) -> list[str]:
    nifti(t / "scan.nii.gz")
    (t / "alias.nii.gz").symlink_to(t / "scan.nii.gz")
    return upscale(str(t / "scan.nii.gz"), str(t / "alias.nii.gz"))


def _folder_output(t: Path) -> list[str]:
    nifti(t / "scan.nii.gz")
    (t / "out").mkdir()
    return upscale(str(t / "scan.nii.gz"), str(t / "out"))


def _bad_suffix(t: Path) -> list[str]:
    nifti(t / "scan.nii.gz")
    return upscale(str(t / "scan.nii.gz"), str(t / "sr.png"))


def _parent_is_file(t: Path) -> list[str]:
    nifti(t / "scan.nii.gz")
    text_file(t / "notes.txt")
    return upscale(str(t / "scan.nii.gz"), str(t / "notes.txt" / "sr.nii.gz"))


def _truncated_nifti(t: Path) -> list[str]:
    truncated(t / "cut.nii.gz")
    return upscale(str(t / "cut.nii.gz"), str(t / "sr.nii.gz"))


def _text_as_nifti(t: Path) -> list[str]:
    text_file(t / "fake.nii.gz")
    return upscale(str(t / "fake.nii.gz"), str(t / "sr.nii.gz"))


def _four_d(t: Path) -> list[str]:
    nifti(t / "fmri.nii.gz", shape=(8, 8, 4, 3))
    return upscale(str(t / "fmri.nii.gz"), str(t / "sr.nii.gz"))


def _three_d_to_2d(t: Path) -> list[str]:
    nifti(t / "vol.nii.gz", shape=(8, 8, 4))
    return upscale(str(t / "vol.nii.gz"), str(t / "sr.nii.gz"))


def _nan_image(t: Path) -> list[str]:
    nifti(t / "nan.nii.gz", value=float("nan"))
    return upscale(str(t / "nan.nii.gz"), str(t / "sr.nii.gz"))


def _missing_input(t: Path) -> list[str]:
    return upscale(str(t / "nope.nii.gz"), str(t / "sr.nii.gz"))


def _text_checkpoint(t: Path) -> list[str]:
    nifti(t / "scan.nii.gz")
    text_file(t / "model.pt", "version https://git-lfs.github.com/spec/v1\n")
    return [
        "upscale",
        str(t / "scan.nii.gz"),
        str(t / "sr.nii.gz"),
        "--bundle",
        "espcn",
        "--checkpoint",
        str(t / "model.pt"),
    ]


def _truncated_checkpoint(t: Path) -> list[str]:
    nifti(t / "scan.nii.gz")
    torch.save({"network": torch.nn.Linear(64, 64).state_dict()}, t / "model.pt")
    raw = (t / "model.pt").read_bytes()
    (t / "model.pt").write_bytes(raw[: len(raw) // 2])
    return [
        "upscale",
        str(t / "scan.nii.gz"),
        str(t / "sr.nii.gz"),
        "--bundle",
        "espcn",
        "--checkpoint",
        str(t / "model.pt"),
    ]


def _no_intact_checkpoint(t: Path) -> list[str]:
    nifti(t / "scan.nii.gz")
    (t / "ckpts").mkdir()
    text_file(t / "ckpts" / "best_network.pt", "garbage")
    return [
        "upscale",
        str(t / "scan.nii.gz"),
        str(t / "sr.nii.gz"),
        "--bundle",
        "espcn",
        "--checkpoint",
        str(t / "ckpts"),
    ]


def _wrong_checkpoint(t: Path) -> list[str]:
    nifti(t / "scan.nii.gz")
    torch.save({"network": torch.nn.Linear(3, 3).state_dict()}, t / "other.pt")
    return [
        "upscale",
        str(t / "scan.nii.gz"),
        str(t / "sr.nii.gz"),
        "--bundle",
        "espcn",
        "--checkpoint",
        str(t / "other.pt"),
    ]


def _misspelt_set(t: Path) -> list[str]:
    return ["train", "espcn", "--output_dir", str(t / "run"), "--set", "epoch_lenght=1"]


def _misspelt_upscale_set(t: Path) -> list[str]:
    nifti(t / "scan.nii.gz")
    return upscale(str(t / "scan.nii.gz"), str(t / "sr.nii.gz"), "--set", "roi_sise=8")


def _unknown_bundle(t: Path) -> list[str]:
    nifti(t / "scan.nii.gz")
    return ["upscale", str(t / "scan.nii.gz"), str(t / "sr.nii.gz"), "--bundle", "espnc"]


def _datalist(t: Path, items: list[dict]) -> Path:
    path = t / "datalist.json"
    path.write_text(json.dumps({"training": items, "validation": items[:1]}))
    return path


def _train_args(t: Path, datalist: Path) -> list[str]:
    return ["train", "espcn", "--datalist", str(datalist), "--output_dir", str(t / "run"), "--epochs", "1",
            "--set", "epoch_length=1", "--set", "num_workers=0"]  # fmt: skip


def _nan_in_datalist(t: Path) -> list[str]:
    items = [{"image": str(nifti(t / f"case{i}.nii.gz", shape=(32, 32)))} for i in range(3)]
    nifti(t / "case1.nii.gz", shape=(32, 32), value=float("nan"))
    return _train_args(t, _datalist(t, items))


def mask(path: Path, shape=(32, 32)) -> Path:
    data = np.zeros(shape, dtype=np.uint8)
    data[8:20, 8:20] = 1
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 1.0, 1.0])), str(path))
    return path


def _mismatched_mask(t: Path) -> list[str]:
    items = [{"image": str(nifti(t / f"case{i}.nii.gz", shape=(32, 32))),
              "mask": str(mask(t / f"mask{i}.nii.gz"))} for i in range(3)]  # fmt: skip
    mask(t / "mask2.nii.gz", shape=(24, 32))
    return _train_args(t, _datalist(t, items))


CASES = [
    # DATA LOSS 1: the output is the input (same path, through .., a hard link, a symlink)
    Case("output is the input", _same_path, r"output '.*scan\.nii\.gz': is the input .*choose another output"),
    Case("output is the input via ..", _dotdot, r"output '.*in/\.\./in/scan\.nii\.gz': is the input"),
    Case("output is a hard link to the input", _hardlink, r"output '.*link\.nii\.gz': is the input"),
    Case("output is a symlink to the input", _symlink, r"output '.*alias\.nii\.gz': is the input"),
    Case("output is a folder", _folder_output, r"output '.*out': is a folder; give a file name"),
    Case("output has an unsupported suffix", _bad_suffix, r"output '.*sr\.png': unsupported output type"),
    Case("output folder is a file", _parent_is_file, r"output '.*notes\.txt/sr\.nii\.gz': '.*notes\.txt' is a file"),
    Case("truncated NIfTI", _truncated_nifti, r"cut\.nii\.gz.*(truncated|corrupt|not a readable NIfTI)"),
    Case("text file named .nii.gz", _text_as_nifti, r"fake\.nii\.gz.*not a readable NIfTI"),
    Case("4D NIfTI", _four_d, r"input '.*fmri\.nii\.gz': a 4D image .*nib\.save\(i\.slicer\[\.\.\., 0\]"),
    Case("3D volume into a 2D model", _three_d_to_2d, r"input '.*vol\.nii\.gz'.*not a 2D image.*--spatial_dims 3"),
    Case("NaN voxels", _nan_image, r"input '.*nan\.nii\.gz'.*contains NaN"),
    Case("missing input", _missing_input, r"input '.*nope\.nii\.gz' does not exist", rc=2),
    Case("text checkpoint (git-lfs pointer)", _text_checkpoint, r"'.*model\.pt'.*could not be read"),
    Case("truncated checkpoint", _truncated_checkpoint, r"'.*model\.pt'.*could not be read"),
    Case("folder of broken checkpoints", _no_intact_checkpoint, r"checkpoint '.*ckpts': no intact .*best_network\.pt"),
    Case("checkpoint of another network", _wrong_checkpoint, r"'.*other\.pt'.*do not fit"),
    Case("misspelt override (train --set)", _misspelt_set, r"--epoch_lenght: no config defines it.*did you mean --epoch_length\?"),
    Case("misspelt override (upscale --set)", _misspelt_upscale_set, r"--roi_sise: .*did you mean --roi_size\?"),
    Case("unknown bundle", _unknown_bundle, r"bundle 'espnc': not found"),
    Case("NaN image inside a datalist", _nan_in_datalist, r"datalist item '.*case1\.nii\.gz'.*contains NaN"),
    Case("mask that does not match its image", _mismatched_mask, r"'.*mask2\.nii\.gz'.*(shape|match)"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_line_and_changes_nothing(case, tmp_path, capsys):
    argv = case.setup(tmp_path)
    before = snapshot(tmp_path)
    rc = medsr_main(argv)
    out, err = capsys.readouterr()
    lines = error_lines(err)
    assert rc == case.rc, (rc, err[-2000:])
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("medsr"), lines
    assert re.search(case.expect, lines[0]), lines[0]
    assert "Traceback" not in out + err
    assert snapshot(tmp_path) == before, "an input changed or a file (partial, temp) was written"


def test_debug_gives_the_traceback(tmp_path, capsys):
    argv = _same_path(tmp_path)
    assert medsr_main(["--debug", *argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "is the input" in err
