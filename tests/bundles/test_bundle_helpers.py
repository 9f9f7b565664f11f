"""The small helpers bundle configs call (medsr.pipeline.bundle)."""

from __future__ import annotations

import json

import pytest
import torch

from medsr.pipeline import bundle as mb
from medsr.pipeline.bundles import bundle_dir, list_bundles


def test_parse_scale_forms_and_errors():
    assert mb.parse_scale(4, 2) == (4, 4)
    assert mb.parse_scale("(1,1,4)", 3) == (1, 1, 4)
    assert mb.parse_scale([2, 2, 1], 3) == (2, 2, 1)
    assert mb.network_scale(4, 3) == 4 and mb.network_scale((1, 1, 4), 3) == (1, 1, 4)
    for bad, dims in (((1, 4), 3), ("x", 2), (0, 2), (2.5, 2)):
        with pytest.raises(ValueError, match="scale"):
            mb.parse_scale(bad, dims)
    with pytest.raises(ValueError, match="spatial_dims"):
        mb.parse_scale(2, 4)


@pytest.mark.parametrize(
    "patch,scale,dims,expected",
    [(30, 4, 2, (32, 32)), ((64, 64, 16), (1, 1, 4), 3, (64, 64, 16)), ("(10,9,5)", (2, 3, 4), 3, (10, 9, 8))],
)
def test_hr_patch_size_rounds_up_to_the_scale(patch, scale, dims, expected):
    assert mb.hr_patch_size(patch, scale, dims) == expected


def test_fit_stages_and_expand_size():
    assert mb.fit_stages((128, 128), 5) == 5
    assert mb.fit_stages((16, 32), 5) == 4
    assert mb.expand_size(8, 3) == (8, 8, 8)
    with pytest.raises(ValueError, match="val_crop"):
        mb.expand_size((8, 8), 3, "val_crop")


def test_split_datalist_holds_out_validation():
    items = [{"image": f"{i}.nii.gz"} for i in range(10)]
    out = mb.split_datalist({"training": items}, 0.2)
    assert len(out["training"]) == 8 and out["validation"] == items[8:]
    assert mb.split_datalist({"training": items[:1]})["validation"] == items[:1]
    with pytest.raises(ValueError, match="no training items"):
        mb.split_datalist({"training": []})


def test_resolve_datalist_reads_sections_and_names_missing_paths(tmp_path):
    import nibabel as nib
    import numpy as np

    for name in ("a.nii.gz", "c.nii.gz"):
        nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(tmp_path / name))
    path = tmp_path / "list.json"
    path.write_text(
        json.dumps({"training": [{"image": "a.nii.gz"}, {"image": "c.nii.gz"}], "validation": [{"image": "a.nii.gz"}]})
    )
    out = mb.resolve_datalist(path)
    assert [i["image"] for i in out["validation"]] == [str(tmp_path / "a.nii.gz")]
    assert len(out["training"]) == 2
    path.write_text(json.dumps({"training": [{"image": "a.nii.gz"}, {"image": "b.nii.gz"}]}))
    with pytest.raises(ValueError, match="b.nii.gz': no such file"):  # every item checked before loading
        mb.resolve_datalist(path)
    with pytest.raises(ValueError, match="nope.json"):
        mb.resolve_datalist(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="missing_dir"):
        mb.resolve_datalist(None, tmp_path / "missing_dir")


def test_find_and_load_checkpoint(tmp_path):
    net = torch.nn.Conv2d(1, 2, 3)
    with pytest.raises(FileNotFoundError, match="train the bundle first"):
        mb.find_checkpoint(tmp_path)
    torch.save({"network": net.state_dict()}, tmp_path / "checkpoint_1.pt")
    torch.save({"network": net.state_dict()}, tmp_path / "best_network.pt")
    assert mb.find_checkpoint(tmp_path).endswith("best_network.pt")
    other = torch.nn.Conv2d(1, 2, 3)
    mb.load_generator(other, tmp_path)
    assert torch.equal(other.weight, net.weight)
    assert mb.load_generator(other, "") is other
    with pytest.raises(FileNotFoundError, match="teacher_checkpoint"):
        mb.teacher_weights(tmp_path / "none")


def test_perceptual_weight_is_off_without_weights(tmp_path):
    with pytest.warns(UserWarning, match="--vgg_weights"):
        assert mb.perceptual_weight(1.0, None) == 0.0
    (tmp_path / "vgg.pth").write_bytes(b"x")
    assert mb.perceptual_weight(0.5, tmp_path / "vgg.pth") == 0.5
    with pytest.raises(ValueError, match="missing.pth"):
        mb.perceptual_weight(1.0, tmp_path / "missing.pth")


def test_list_bundles_and_bundle_dir():
    names = [b["name"] for b in list_bundles()]
    for name in ("esrgan_se", "edsr_ise_gan", "srgan", "espcn", "srcnn", "vdsr", "rdn", "srdensenet", "distill"):
        assert name in names
        for f in (
            "metadata.json",
            "train.json",
            "inference.json",
            "evaluate.json",
            "logging.conf",
            "multi_gpu_train.json",
            "README.md",
        ):
            assert (bundle_dir(name) / f).is_file(), f"{name}/{f}"
    with pytest.raises(ValueError, match="bundle 'nope'"):
        bundle_dir("nope")


def test_get_device():
    assert mb.get_device("cpu") == torch.device("cpu")
    assert mb.get_device(None).type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            mb.get_device("cuda")
