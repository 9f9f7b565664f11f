"""Datalists: patient-grouped deterministic splits, mask pairing, path resolution and the ``medsr datalist`` command."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from medsr.pipeline.cli import main
from medsr.pipeline.data import build_datalist, load_datalist, split_groups


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(path)


def _mat(path: Path, pid: str) -> None:
    with h5py.File(path, "w", userblock_size=512) as fh:
        cj = fh.create_group("cjdata")
        cj.create_dataset("image", data=np.ones((5, 4), np.int16))
        cj.create_dataset("tumorMask", data=np.zeros((5, 4), np.uint8))
        cj.create_dataset("label", data=np.array([[1.0]]))
        cj.create_dataset("PID", data=np.array([[ord(c)] for c in pid], dtype=np.uint16))


def _patients(datalist: dict) -> dict[str, set[str]]:
    return {s: {e["patient"] for e in datalist[s]} for s in ("training", "validation", "test")}


def test_patient_grouping_from_file_names_with_masks(tmp_path):
    for p in range(12):
        for s in range(3):
            _png(tmp_path / f"patient{p:02d}_slice{s}.png", p)
            _png(tmp_path / f"patient{p:02d}_slice{s}_mask.png", 1)
    out = tmp_path / "lists" / "dl.json"
    dl = build_datalist(tmp_path, out, mask_pattern="{stem}_mask{suffix}", val_fraction=0.2, test_fraction=0.2, seed=3)

    pats = _patients(dl)
    assert not (
        pats["training"] & pats["validation"] or pats["training"] & pats["test"] or pats["validation"] & pats["test"]
    )
    assert (len(pats["training"]), len(pats["validation"]), len(pats["test"])) == (8, 2, 2)
    assert dl["numTraining"] + dl["numValidation"] + dl["numTest"] == 36  # masks are not images
    assert all(e["mask"].endswith("_mask.png") and not e["image"].endswith("_mask.png") for e in dl["training"])
    # paths are relative to the datalist's folder, and load_datalist makes them absolute again
    assert dl["training"][0]["image"].startswith("../")
    items = load_datalist(out, "validation")
    assert len(items) == 6 and all(Path(i["image"]).is_file() and Path(i["mask"]).is_file() for i in items)
    # deterministic: same seed same split, another seed another split
    again = build_datalist(
        tmp_path, None, mask_pattern="{stem}_mask{suffix}", val_fraction=0.2, test_fraction=0.2, seed=3
    )
    assert [Path(e["image"]).name for e in again["test"]] == [Path(e["image"]).name for e in dl["test"]]
    other = build_datalist(
        tmp_path, None, mask_pattern="{stem}_mask{suffix}", val_fraction=0.2, test_fraction=0.2, seed=4
    )
    assert _patients(other)["test"] != pats["test"]


def test_mat_files_grouped_by_pid_with_tumour_mask(tmp_path):
    # file numbers interleave patients, so only the PID keeps a patient's slices together
    pids = ["100360", "100360", "98765", "98765", "MR040", "MR040", "112233", "112233", "445566", "445566"]
    for i, pid in enumerate(pids):
        _mat(tmp_path / f"{i + 1}.mat", pid)
    dl = build_datalist(tmp_path / "*.mat", tmp_path / "dl.json", val_fraction=0.2, test_fraction=0.2)
    pats = _patients(dl)
    assert sum(len(v) for v in pats.values()) == 5 and len(set().union(*pats.values())) == 5
    for entry in dl["training"] + dl["validation"] + dl["test"]:
        assert entry["mask"] == entry["image"] + "#tumorMask" and entry["modality"] == "MR"
    counts = {s: len(dl[s]) for s in ("training", "validation", "test")}
    assert all(c % 2 == 0 for c in counts.values())  # both slices of a patient always travel together


def test_split_groups_edge_cases():
    assert set(split_groups(["a", "b", "c"], 0.1, 0.1).values()) == {"training", "validation", "test"}
    assert set(split_groups(["a"], 0.1, 0.1).values()) == {"training"}
    assert split_groups(["c", "a", "b", "d"], 0.25, 0.25, seed=1) == split_groups(
        ["d", "b", "a", "c"], 0.25, 0.25, seed=1
    )
    with pytest.raises(ValueError, match="val_fraction"):
        split_groups(["a"], 1.5, 0.1)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        build_datalist(tmp_path / "missing", None)
    _png(tmp_path / "a.png", 1)
    with pytest.raises(ValueError, match=r"mask_pattern '\{stem\}_seg\{suffix\}': 1 image\(s\) have no mask"):
        build_datalist(tmp_path, None, mask_pattern="{stem}_seg{suffix}")
    dl = tmp_path / "dl.json"
    dl.write_text(json.dumps({"training": [{"image": "a.png"}]}))
    with pytest.raises(ValueError, match=r"dl\.json.*no section 'validation' \(has \['training'\]\)"):
        load_datalist(dl, "validation")


def test_datalist_command(tmp_path, capsys):
    for p in range(5):
        _png(tmp_path / "data" / f"sub-{p}" / "img.png", p)
    code = main(
        [
            "datalist",
            str(tmp_path / "data"),
            "-o",
            str(tmp_path / "dl.json"),
            "--val-fraction",
            "0.2",
            "--test-fraction",
            "0.2",
        ]
    )
    assert code == 0
    assert "training 3 (3 patients)" in capsys.readouterr().out
    dl = json.loads((tmp_path / "dl.json").read_text())
    assert {e["patient"] for e in dl["test"]}.isdisjoint({e["patient"] for e in dl["training"]})
    assert main(["datalist", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.json")]) == 2
    assert "no such folder" in capsys.readouterr().err
