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
import signal
import subprocess
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


#: an in-process bundle run points log handlers at this test's captured streams: dropped after each test
pytestmark = pytest.mark.usefixtures("own_logging")


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
    return upscale(str(t / "scan.nii.gz"), str(t / "sr.xyz"))


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
            "--set", "epoch_length=1", "--set", "num_workers=0", "--tracking", "none"]  # fmt: skip


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


def dicom(path: Path, series: str | None = None, k: int = 0, pixels: bool = True) -> Path:
    """A small MR slice written here (pydicom's own test files are kept for reader tests)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", series or generate_uid()
    ds.Modality, ds.PatientID, ds.InstanceNumber = "MR", "P1", k + 1
    ds.PixelSpacing, ds.SliceThickness = ["0.8", "0.8"], "5"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 5.0 * k]
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if pixels:
        ds.PixelData = np.arange(256, dtype=np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = MRImageStorage, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def _dicom_without_pixels(t: Path) -> list[str]:
    dicom(t / "nopix.dcm", pixels=False)
    return upscale(str(t / "nopix.dcm"), str(t / "sr.nii.gz"))


def _two_series_folder(t: Path) -> list[str]:
    for k in range(2):
        dicom(t / "mixed" / f"a{k}.dcm", series="1.2.3.4.1", k=k)
        dicom(t / "mixed" / f"b{k}.dcm", series="1.2.3.4.2", k=k)
    return upscale(str(t / "mixed"), str(t / "sr.nii.gz"), "--spatial_dims", "3")


def _dicom_series_output_exists(t: Path) -> list[str]:
    for k in range(2):
        dicom(t / "series" / f"s{k}.dcm", series="1.2.3.4.1", k=k)
    dicom(t / "sr_series" / "old.dcm", series="1.2.3.4.9")
    return upscale(str(t / "series"), str(t / "sr_series"), "--spatial_dims", "3")


def _output_inside_input_series(t: Path) -> list[str]:
    for k in range(2):
        dicom(t / "series" / f"s{k}.dcm", series="1.2.3.4.1", k=k)
    return upscale(str(t / "series"), str(t / "series" / "s0.dcm"), "--spatial_dims", "3")


def _missing_file_in_datalist(t: Path) -> list[str]:
    items = [{"image": str(nifti(t / f"case{i}.nii.gz", shape=(32, 32)))} for i in range(2)]
    items.append({"image": str(t / "gone.nii.gz")})
    return _train_args(t, _datalist(t, items))


def _volume_in_2d_datalist(t: Path) -> list[str]:
    items = [
        {"image": str(nifti(t / "case0.nii.gz", shape=(32, 32)))},
        {"image": str(nifti(t / "vol.nii.gz", shape=(16, 16, 8)))},
    ]
    return _train_args(t, _datalist(t, items))


def _epochs_not_a_number(t: Path) -> list[str]:
    return ["train", "espcn", "--output_dir", str(t / "run"), "--set", "epochs=abc"]


def _selfsr_bad_extension(t: Path) -> list[str]:
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.diag([1.0, 1.0, 4.0, 1.0])), str(t / "thick.nii.gz"))
    return ["selfsr", str(t / "thick.nii.gz"), str(t / "out.xyz"), "--steps", "2"]


def _png(t: Path, name: str = "a.png") -> Path:
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((24, 24)) * 255).astype(np.uint8)).save(t / name)
    return t / name


def _3d_model_on_png(t: Path) -> list[str]:
    return ["upscale", str(_png(t)), str(t / "b.png"), "--model", "rdn_3d_x1x1x4"]


def _model_scale_contradicts(t: Path) -> list[str]:
    return ["upscale", str(_png(t)), str(t / "b.png"), "--model", "rdn_x2", "--scale", "4"]


def _mixed_slice_sizes(t: Path) -> list[str]:
    import pydicom

    for k in range(3):
        dicom(t / "series" / f"s{k}.dcm", series="1.2.3.4.7", k=k)
    ds = pydicom.dcmread(t / "series" / "s2.dcm")
    ds.Rows, ds.PixelData = 8, np.arange(128, dtype=np.uint16).tobytes()
    ds.save_as(t / "series" / "s2.dcm")
    return ["upscale", str(t / "series"), str(t / "sr.nii.gz")]


def _nan_shipped_model(t: Path) -> list[str]:
    nifti(t / "nan.nii.gz", value=float("nan"))
    return ["upscale", str(t / "nan.nii.gz"), str(t / "sr.nii.gz")]


def _two_thick_axes(t: Path) -> list[str]:
    nifti(t / "vol.nii.gz", shape=(5, 5, 12), affine=np.diag([4.0, 4.0, 1.0, 1.0]))
    return ["upscale", str(t / "vol.nii.gz"), str(t / "sr.nii.gz"), "--scale", "(1,1,4)"]


CASES = [
    # DATA LOSS 1: the output is the input (same path, through .., a hard link, a symlink)
    Case("output is the input", _same_path, r"output '.*scan\.nii\.gz': is the input .*choose another output"),
    Case("output is the input via ..", _dotdot, r"output '.*in/\.\./in/scan\.nii\.gz': is the input"),
    Case("output is a hard link to the input", _hardlink, r"output '.*link\.nii\.gz': is the input"),
    Case("output is a symlink to the input", _symlink, r"output '.*alias\.nii\.gz': is the input"),
    Case("output is a folder", _folder_output, r"output '.*out': is a folder; give a file name"),
    Case("output has an unsupported suffix", _bad_suffix, r"output '.*sr\.xyz': unsupported output type"),
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
    Case("checkpoint of another network", _wrong_checkpoint, r"'.*other\.pt'.*do not fit", rc=2),
    Case("misspelt override (train --set)", _misspelt_set, r"--epoch_lenght: no config defines it.*did you mean --epoch_length\?"),
    Case("misspelt override (upscale --set)", _misspelt_upscale_set, r"--roi_sise: .*did you mean --roi_size\?"),
    Case("unknown bundle", _unknown_bundle, r"bundle 'espnc': not found"),
    Case("NaN image inside a datalist", _nan_in_datalist, r"datalist item '.*case1\.nii\.gz'.*contains NaN"),
    Case("mask that does not match its image", _mismatched_mask, r"'.*mask2\.nii\.gz'.*(shape|match)"),
    Case("DICOM file without pixel data", _dicom_without_pixels, r"nopix\.dcm'?: DICOM file has no pixel data"),
    Case("DICOM folder with two series", _two_series_folder, r"mixed.*(two|2|several) series|series.*1\.2\.3\.4\.1.*1\.2\.3\.4\.2"),
    Case("DICOM series output folder exists", _dicom_series_output_exists, r"output '.*sr_series': folder already exists"),
    Case("output inside the input series", _output_inside_input_series, r"output '.*series/s0\.dcm': is the input"),
    # issue 22
    Case("datalist names a missing file", _missing_file_in_datalist, r"datalist\.json: image '.*gone\.nii\.gz': no such file"),
    Case("3D volume in a 2D datalist", _volume_in_2d_datalist, r"image '.*vol\.nii\.gz': a 3D volume .*--spatial-dims 3"),
    Case("--set epochs=abc", _epochs_not_a_number, r"override --epochs 'abc': expected an integer"),
    Case("selfsr output with an unsupported extension", _selfsr_bad_extension, r"output '.*out\.xyz': unsupported output type", rc=2),
    Case("3D model on a PNG", _3d_model_on_png, r"--model rdn_3d_x1x1x4: a 3D model cannot upscale the 2D image '.*a\.png'"),
    Case("named model's scale contradicts --scale", _model_scale_contradicts, r"--model rdn_x2 upscales by 2x2, but --scale 4"),
    Case("DICOM series with mixed slice sizes", _mixed_slice_sizes, r"series.*mixes slice sizes .*16x16 .*8x16"),
    Case("NaN voxels (shipped model)", _nan_shipped_model, r"input '.*nan\.nii\.gz'.*contains NaN"),
    Case("per-axis scale, two thick axes", _two_thick_axes, r"input '.*vol\.nii\.gz': --scale \(1, 1, 4\) upscales axis 2"),
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


# ------------------------------------------------------------------------------- kill -9 (subprocesses)
SLOW_SAVE = """
import sys, time, torch
real_save = torch.save
calls = [0]
def slow_save(obj, f, *args, **kwargs):  # the N-th save writes a few bytes, says so, and hangs: kill -9 lands here
    calls[0] += 1
    if calls[0] == HANG_AT:
        (f if hasattr(f, "write") else open(f, "wb")).write(b"PK\\x03\\x04 half a checkpoint")
        print("WRITING", flush=True)
        time.sleep(300)
    return real_save(obj, f, *args, **kwargs)
torch.save = slow_save
"""

TRAIN_CHILD = """
from pathlib import Path
from ignite.engine import Engine
from medsr.pipeline.handlers import CheckpointHandler
net = torch.nn.Linear(4, 4)
engine = Engine(lambda e, b: None)
engine.checkpoint_objects = lambda: {"generator": net}
CheckpointHandler(Path(sys.argv[1]), every_n_iterations=1, every_n_epochs=None, keep_last=2).attach(engine)
engine.run(range(3), max_epochs=1)
"""

BEST_CHILD = """
import json
from pathlib import Path
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
cfg = json.loads(Path(sys.argv[2]).read_text())["best_checkpoint"]  # the handler every bundle uses
parser = ConfigParser({"imports": ["$import torch", "$from medsr.networks import ESPCN"], "ckpt_dir": sys.argv[1],
                       "resume_from": None, "network": "$ESPCN(2, 1, 1, 2, (4, 4))", "best": cfg})
best = parser.get_parsed_content("best")
evaluator = Engine(lambda e, b: None)
scores = {1: 10.0, 2: 20.0}
@evaluator.on(Events.EPOCH_COMPLETED)
def _metrics(engine):
    engine.state.key_metric_name = "val_psnr"
    engine.state.metrics = {"val_psnr": scores[engine.state.epoch]}
best.attach(evaluator)
evaluator.run([0], max_epochs=2)
"""


def _run_until_killed(tmp_path: Path, body: str, hang_at: int, *args: str) -> None:
    """Run ``body`` in a fresh Python, wait until its ``hang_at``-th ``torch.save`` is mid-write, kill -9 it."""
    script = tmp_path / "child.py"
    script.write_text(SLOW_SAVE.replace("HANG_AT", str(hang_at)) + body)
    proc = subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    try:
        for line in proc.stdout:  # the child prints WRITING at the save it hangs in
            lines.append(line)
            if line.startswith("WRITING"):
                break
        else:
            pytest.fail("the child ended before the save to kill:\n" + "".join(lines[-30:]))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_kill9_while_a_checkpoint_is_written_keeps_the_previous_one(tmp_path, caplog):
    """DATA LOSS 2: the half-written temp file is never picked, a partial file is skipped, stale temps go."""
    from ignite.engine import Engine

    from medsr.pipeline.engines.checkpoint import find_checkpoint, load_checkpoint
    from medsr.pipeline.handlers import CheckpointHandler
    from medsr.pipeline.models import load_generator

    ckpts = tmp_path / "checkpoints"
    _run_until_killed(tmp_path, TRAIN_CHILD, 2, str(ckpts))
    first = ckpts / "checkpoint_00000001.pt"
    temps = [p for p in ckpts.iterdir() if p.name.startswith(".")]
    assert first.is_file() and len(temps) == 1, sorted(p.name for p in ckpts.iterdir())
    assert load_checkpoint(first)["engine"]["iteration"] == 1  # the previous checkpoint is intact
    assert find_checkpoint(ckpts) == str(first) and find_checkpoint(ckpts, prefix="checkpoint") == str(first)
    load_generator(torch.nn.Linear(4, 4), ckpts)  # inference on the folder loads the intact one

    # the same half file under a visible name (copied folder, full disk): skipped with a warning, never loaded
    partial = ckpts / "checkpoint_00000002.pt"
    partial.write_bytes(temps[0].read_bytes())
    with caplog.at_level(logging.WARNING):
        assert find_checkpoint(ckpts, prefix="checkpoint") == str(first)
        assert find_checkpoint(ckpts) == str(first)
    assert "checkpoint_00000002.pt" in caplog.text
    partial.unlink()

    # the next run removes what the killed one left half-written
    engine = Engine(lambda e, b: None)
    engine.checkpoint_objects = lambda: {"generator": torch.nn.Linear(4, 4)}
    CheckpointHandler(ckpts, every_n_epochs=1).attach(engine)
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint_00000001.pt"]


@pytest.mark.slow
def test_kill9_while_a_new_best_is_saved_keeps_best_network(tmp_path):
    """DATA LOSS 3: the bundles' best-checkpoint handler (validate.json) keeps the old best until the new one is whole."""
    from medsr.pipeline.engines.checkpoint import find_checkpoint, load_generator_weights

    ckpts = tmp_path / "checkpoints"
    _run_until_killed(tmp_path, BEST_CHILD, 2, str(ckpts), str(REPO / "bundles" / "common" / "validate.json"))
    best = ckpts / "best_network.pt"
    assert best.is_file(), f"best_network.pt was deleted: {sorted(p.name for p in ckpts.iterdir())}"
    from medsr.networks import ESPCN

    load_generator_weights(ESPCN(2, 1, 1, 2, (4, 4)), best)  # still loads
    assert torch.load(best, weights_only=False)["metric"]["value"] == 10.0  # the previous best
    assert find_checkpoint(ckpts) == str(best)  # the temp file of the new one is not picked


# ------------------------------------------------------------------------------------------ resume
def test_resumed_run_keeps_the_rows_of_metrics_csv(tmp_path):
    """DATA LOSS 4: a resumed run (a new process, a new ValidationLog) continues metrics.csv."""
    import csv
    import stat

    from ignite.engine import Engine

    from medsr.pipeline.handlers import ValidationLog

    path = tmp_path / "metrics.csv"

    def validate(log, epoch, psnr):
        ev = Engine(lambda e, b: None)
        ev.state.epoch, ev.state.iteration, ev.state.metrics = epoch, 1, {"val_psnr": psnr}
        log(ev)

    first = ValidationLog(path)
    for epoch in (1, 2, 3):
        validate(first, epoch, 20.0 + epoch)
    # killed after epoch 3's validation but with the last checkpoint at epoch 2: the resumed run redoes epoch 3
    resumed = ValidationLog(path)
    validate(resumed, 3, 30.0)
    validate(resumed, 4, 31.0)
    rows = list(csv.DictReader(path.open()))
    assert [(int(r["epoch"]), float(r["val_psnr"])) for r in rows] == [(1, 21.0), (2, 22.0), (3, 30.0), (4, 31.0)]
    assert stat.S_IMODE(path.stat().st_mode) & 0o044, "metrics.csv must be readable by others (not 0600)"


# ------------------------------------------------------------------------ python -m monai.bundle run
BUNDLE_CASES = [
    ("output is the input", ["inferring", "bundles/espcn/inference.json"], r"output '.*scan\.nii\.gz': is the input"),
    ("misspelt override", ["training", "bundles/espcn/train.json"], r"--epoch_lenght: .*did you mean --epoch_length\?"),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name,run,expect", BUNDLE_CASES, ids=[c[0] for c in BUNDLE_CASES])
def test_monai_bundle_run_gives_one_line(tmp_path, name, run, expect):
    scan = nifti(tmp_path / "scan.nii.gz")
    run_id, config = run
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config]
    if run_id == "inferring":
        cmd += ["--checkpoint", "''", "--input_files", f"['{scan}']", "--output_files", f"['{scan}']"]
    else:
        cmd += ["--output_dir", str(tmp_path / "run"), "--epoch_lenght", "1"]
    before = snapshot(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "MEDSR_DEBUG"}
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    lines = [ln for ln in error_lines(res.stderr) if not ln.startswith(("parsing config_file", "20"))]
    assert res.returncode == 1, res.stderr[-3000:]
    assert len(lines) == 1 and re.search(expect, lines[0]), res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr
    assert snapshot(tmp_path) == before
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env={**env, "MEDSR_DEBUG": "1"})
    assert res.returncode == 1 and "Traceback" in res.stderr  # the traceback on request


# ------------------------------------------------------------------------------------------ issue 22
def test_bundle_error_is_the_only_line(tmp_path, capsys):
    """No MONAI config summary, security notice or nvImageCodec lines around the one error line."""
    argv = _truncated_checkpoint(tmp_path)
    assert medsr_main(argv) == 1
    out, err = capsys.readouterr()
    lines = [ln for ln in (out + err).splitlines() if ln.strip()]
    assert len(lines) == 1 and "model.pt" in lines[0], lines


def test_disk_full_names_the_file(tmp_path, capsys, monkeypatch):
    import errno

    import nibabel

    nifti(tmp_path / "scan.nii.gz")

    def full(img, filename, *args, **kwargs):  # the library's write fails as on a full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nibabel, "save", full)
    assert medsr_main(["upscale", str(tmp_path / "scan.nii.gz"), str(tmp_path / "sr.nii.gz"), "--quiet"]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "No space left on device while writing" in lines[0] and "sr.nii.gz" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]  # no temp file left


def test_stale_upscale_temp_files_are_removed(tmp_path, capsys):
    """What a kill -9 during an upscale write leaves (a hidden temp file, a DICOM temp folder) goes next time."""
    nifti(tmp_path / "scan.nii.gz")
    stale = tmp_path / ".sr.nii.gz.k1ll3d.tmp.nii.gz"
    stale.write_bytes(b"half an image")
    stale_dir = tmp_path / ".sr.nii.gz.x9y8.tmp"
    stale_dir.mkdir()
    (stale_dir / "IM00001.dcm").write_bytes(b"half")
    other = tmp_path / ".other.nii.gz.aaaa.tmp.nii.gz"  # another output's temp file: not ours to remove
    other.write_bytes(b"x")
    assert medsr_main(["upscale", str(tmp_path / "scan.nii.gz"), str(tmp_path / "sr.nii.gz"), "--quiet"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, "scan.nii.gz", "sr.nii.gz"])


@pytest.mark.slow
def test_missing_datalist_file_exits_1_not_an_abort(tmp_path):
    """A datalist naming a missing file (worker threads on) ends with exit 1 and one line, never an abort (134)."""
    argv = _missing_file_in_datalist(tmp_path) + ["--set", "num_workers=2"]
    res = subprocess.run(
        [sys.executable, "-m", "medsr.pipeline.cli", *argv], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    lines = [ln for ln in error_lines(res.stderr) if ln.startswith("medsr")]
    assert len(lines) == 1 and "gone.nii.gz': no such file" in lines[0]
    assert "terminate called" not in res.stderr


UPSCALE_CHILD = """
import sys, time
import nibabel
def slow_save(img, filename, *args, **kwargs):  # writes a few bytes of the temp file, says so, and hangs
    open(filename, "wb").write(b"half an image")
    print("WRITING", flush=True)
    time.sleep(300)
nibabel.save = slow_save
from medsr.pipeline.cli import main
main(["upscale", sys.argv[1], sys.argv[2], "--quiet"])
"""


@pytest.mark.slow
def test_kill9_during_an_upscale_write_leaves_nothing_the_next_run_keeps(tmp_path, capsys):
    """The killed write leaves a hidden temp file and no output; the next upscale removes it and writes."""
    src, out = nifti(tmp_path / "scan.nii.gz"), tmp_path / "sr.nii.gz"
    _run_until_killed(tmp_path, UPSCALE_CHILD, 0, str(src), str(out))  # no torch.save hangs: nib.save does
    temps = [p.name for p in tmp_path.iterdir() if p.name.startswith(".sr.nii.gz.")]
    assert len(temps) == 1 and not out.exists(), sorted(p.name for p in tmp_path.iterdir())
    assert medsr_main(["upscale", str(src), str(out), "--quiet"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.py", "scan.nii.gz", "sr.nii.gz"]
    assert nib.load(str(out)).shape == (32, 32)
