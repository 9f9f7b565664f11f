"""The embedded demo dataset, built once per session from nilearn/scikit-image package files."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from monai.transforms import LoadImaged

from medsr.pipeline.data import MedicalImageReader, ensure_demo_dataset, load_datalist, slab_ranges
from medsr.pipeline.data import demo as demo_module


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("medsr_cache")
    start = time.perf_counter()
    result = ensure_demo_dataset(root, progress=False)
    result["seconds"] = time.perf_counter() - start
    return result


def test_build_time_counts_and_masks(demo):
    assert demo["built"] and demo["seconds"] < 120
    train_2d = load_datalist(demo["datalist_2d"], "training")
    train_3d = load_datalist(demo["datalist_3d"], "training")
    assert len(train_2d) >= 300 and len(train_3d) >= 1
    for entries in (train_2d, train_3d):
        assert all({"image", "mask", "modality"} <= e.keys() for e in entries)
    assert {e["modality"] for e in train_2d} == {"MR", "OP", "SM"}
    assert {e["plane"] for e in train_2d if e["modality"] == "MR"} == {"axial", "coronal", "sagittal"}
    assert all("label" in e for e in train_2d + train_3d if e["modality"] == "MR")
    counts = demo["summary"]["counts"]
    assert counts["2d"]["training"]["total"] == len(train_2d)
    for section in ("validation", "test"):
        assert load_datalist(demo["datalist_2d"], section) and load_datalist(demo["datalist_3d"], section)
    assert len(load_datalist(demo["datalists"]["2d_OP"], "training")) == counts["2d"]["training"]["OP"]


def test_second_call_is_a_no_op(demo):
    manifest = demo["root"] / "manifest.json"
    before = manifest.stat().st_mtime_ns
    start = time.perf_counter()
    again = ensure_demo_dataset(demo["cache_root"], progress=False, verify=True)
    assert not again["built"] and time.perf_counter() - start < 10
    assert manifest.stat().st_mtime_ns == before and again["summary"] == demo["summary"]


def test_no_slice_has_its_neighbour_in_another_split(demo):
    split_of: dict[tuple[str, int], str] = {}
    for section in ("training", "validation", "test"):
        for e in load_datalist(demo["datalist_2d"], section, modality="MR"):
            split_of[(e["plane"], e["index"])] = section
    for (plane, k), section in split_of.items():
        for near in range(k - demo_module.GAP_SLICES, k + demo_module.GAP_SLICES + 1):
            assert split_of.get((plane, near), section) == section, (plane, k, near)
    slabs = {
        s: [(e["z_start"], e["z_stop"]) for e in load_datalist(demo["datalist_3d"], s)]
        for s in ("training", "validation", "test")
    }
    for s, ranges in slabs.items():
        for t, others in slabs.items():
            if s != t:
                assert all(
                    b + demo_module.GAP_SLICES <= c or d + demo_module.GAP_SLICES <= a
                    for a, b in ranges
                    for c, d in others
                )


def test_entries_load_with_spacing_masks_and_position(demo):
    load = LoadImaged(keys=["image", "mask", "label"], reader=MedicalImageReader(), ensure_channel_first=True)
    volume = LoadImaged(keys=["image"], reader=MedicalImageReader(), ensure_channel_first=True)(
        {"image": str(demo["volumes"]["image"])}
    )["image"]
    assert volume.shape == (1, 197, 233, 189)
    for plane in ("sagittal", "coronal", "axial"):
        entry = next(e for e in load_datalist(demo["datalist_2d"], "training", modality="MR") if e["plane"] == plane)
        item = load(entry)
        img, mask, label = item["image"], item["mask"], item["label"]
        assert img.ndim == 3 and img.shape == mask.shape == label.shape
        np.testing.assert_allclose(img.pixdim[:2].numpy(), [1.0, 1.0])
        axis = ("sagittal", "coronal", "axial").index(plane)
        # the slice's affine puts its voxel (0, 0) where the volume has voxel k along the slice axis
        voxel = np.zeros(4)
        voxel[axis], voxel[3] = entry["index"], 1
        np.testing.assert_allclose(img.affine[:3, 3].numpy(), (volume.affine.numpy() @ voxel)[:3])
        np.testing.assert_array_equal(img[0].numpy(), np.take(volume[0].numpy(), entry["index"], axis=axis))
        assert set(np.unique(mask.numpy())) <= {0, 1} and mask.float().mean() >= 0.1
        np.testing.assert_array_equal(mask.numpy() > 0, img.numpy() > 0)
        assert set(np.unique(label.numpy())) <= {0, 1, 2, 3} and (label[mask == 0] == 0).all()
    tile = load_datalist(demo["datalist_2d"], "training", modality="OP")[0]
    item = LoadImaged(keys=["image", "mask"], reader=MedicalImageReader(luminance=True), ensure_channel_first=True)(
        tile
    )
    assert item["image"].shape == item["mask"].shape == (1, 128, 128) and item["mask"].float().mean() >= 0.5
    entry3d = load_datalist(demo["datalist_3d"], "training")[0]
    item = load(entry3d)
    assert item["image"].shape[1:] == (197, 233, entry3d["z_stop"] - entry3d["z_start"])
    assert item["image"].affine[2, 3] == pytest.approx(float(volume.affine[2, 3]) + entry3d["z_start"])


def test_tampered_dataset_is_detected(demo):
    fingerprint = demo_module._source_fingerprint(demo_module.demo_sources())
    assert demo_module._manifest_problem(demo["root"], fingerprint, verify=True) is None
    manifest = json.loads((demo["root"] / "manifest.json").read_text())
    victim = demo["root"] / next(iter(k for k in manifest["files"] if k.endswith("_mask.png")))
    original = victim.read_bytes()
    try:
        victim.write_bytes(original[:-5])
        assert "missing or changed" in demo_module._manifest_problem(demo["root"], fingerprint, verify=False)
    finally:
        victim.write_bytes(original)


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_module, "_build", boom)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_dataset(tmp_path, progress=False)
    assert not (tmp_path / "demo").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".demo-build")]


def test_slab_ranges_leave_gaps():
    ranges = slab_ranges(10, 110, (("training", 3), ("validation", 1), ("training", 1)), gap=3)
    assert ranges == [("training", 10, 70), ("validation", 73, 90), ("training", 93, 110)]
