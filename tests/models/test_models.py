"""Self-describing model files, choosing a shipped model, slice-wise 2D-on-3D, upscaling without a checkpoint."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medsr.networks import RDN, SliceWise
from medsr.pipeline.cli import main as medsr_main
from medsr.pipeline.inference import upscale_with_model
from medsr.pipeline.models import (
    MODEL_FORMAT,
    export_bundle_model,
    find_model,
    init_network,
    load_model,
    pick_model,
    read_model_info,
    save_model,
    shipped_models,
)
from tests.data.test_readers import _series


def _tiny(scale=2, dims=2):
    torch.manual_seed(0)
    net = RDN(dims, 1, 1, scale, num_features=4, num_blocks=1, num_layers=1, growth_channels=2, residual_interp=True)
    with torch.no_grad():  # a non-trivial residual so outputs differ from interpolation
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return net


def test_save_and_load_rebuild_the_network_from_the_file_alone(tmp_path):
    net = _tiny(scale=(1, 1, 4), dims=3)
    path = save_model(net, tmp_path / "models" / "model.pt", {"name": "t3d", "spatial_dims": 3, "scale": [1, 1, 4]})
    record = torch.load(path, weights_only=True)  # plain types and tensors only
    assert record["format"] == MODEL_FORMAT and record["network"]["target"] == "medsr.networks.RDN"
    assert all(v.dtype == torch.float16 for v in record["state_dict"].values() if v.is_floating_point())
    loaded, info = load_model(path)
    assert info["name"] == "t3d" and info["scale"] == [1, 1, 4] and "state_dict" not in info
    x = torch.rand(1, 1, 6, 5, 3)
    torch.testing.assert_close(loaded(x), net.eval()(x), atol=2e-3, rtol=1e-2)  # fp16 storage
    norm = read_model_info(path)["normalization"]
    assert (norm["lower"], norm["upper"]) == (0.5, 99.5)


def test_export_keeps_the_checkpoint_weights_when_its_network_differs_from_the_config(tmp_path):
    """The checkpoint's recorded network wins (other widths, or ``residual_interp`` recorded as the text 'true'
    by a ``--residual_interp true`` command line): the exported file holds the checkpoint's weights, not a
    freshly initialised network."""
    net = _tiny()
    net.init_args["residual_interp"] = "true"  # as fire passes it
    ckpt = save_model(net, tmp_path / "best_network.pt", {"name": "c", "spatial_dims": 2, "scale": [2, 2]}, half=False)
    out = export_bundle_model("rdn", ckpt, tmp_path / "models" / "model.pt", "exported",
                              overrides={"scale": 2, "num_features": 4, "num_blocks": 1, "num_layers": 1,
                                         "growth_channels": 2, "residual_interp": True})  # fmt: skip
    loaded, info = load_model(out)
    assert info["name"] == "exported" and info["scale"] == [2, 2]
    x = torch.rand(1, 1, 7, 6)
    torch.testing.assert_close(loaded(x), net.eval()(x), atol=2e-3, rtol=1e-2)


def test_export_ema_takes_the_averaged_weights_of_a_training_checkpoint(tmp_path):
    from medsr.pipeline.engines import ModelEMA
    from medsr.pipeline.engines.checkpoint import FORMAT, save_checkpoint

    net = _tiny()
    ema = ModelEMA(net, decay=0.5)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5)  # the raw weights move away from the average
    ema.update(net)
    ckpt = save_checkpoint({"format": FORMAT, "objects": {"network": net.state_dict(), "ema": ema.state_dict()}},
                           tmp_path / "checkpoint_00000010.pt")  # fmt: skip
    sets = {"scale": 2, "num_features": 4, "num_blocks": 1, "num_layers": 1, "growth_channels": 2,
            "residual_interp": True}  # fmt: skip
    x = torch.rand(1, 1, 7, 6)
    for use_ema, reference in ((True, ema.module), (False, net)):
        out = export_bundle_model("rdn", ckpt, tmp_path / f"m{use_ema}.pt", "e", overrides=sets, half=False,
                                  use_ema=use_ema)  # fmt: skip
        torch.testing.assert_close(load_model(out)[0](x), reference.eval()(x))
    args = ["models", "export", "rdn", str(ckpt), str(tmp_path / "cli.pt"), "--name", "e", "--ema"]
    assert medsr_main(args + [f"--set={k}={v}" for k, v in sets.items()]) == 0  # the command line takes the EMA
    torch.testing.assert_close(load_model(tmp_path / "cli.pt")[0](x), ema.module(x), atol=2e-3, rtol=1e-2)  # fp16
    plain = save_model(net, tmp_path / "best_network.pt", {"name": "c", "spatial_dims": 2, "scale": [2, 2]})
    with pytest.raises(ValueError, match="--ema: .*best_network.pt' is not a medsr training checkpoint with EMA"):
        export_bundle_model("rdn", plain, tmp_path / "x.pt", "e", overrides=sets, use_ema=True)


def test_bad_model_files_are_named(tmp_path):
    (tmp_path / "text.pt").write_text("not a model")
    with pytest.raises(ValueError, match="text.pt"):
        load_model(tmp_path / "text.pt")
    torch.save({"network": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="not a medsr model file"):
        load_model(tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="no such file or shipped model; shipped"):
        find_model("nonexistent_model")


MODELS = [
    {"name": "a2", "spatial_dims": 2, "scale": [2, 2], "path": "a2.pt"},
    {"name": "a4", "spatial_dims": 2, "scale": [4, 4], "path": "a4.pt"},
    {"name": "a4gan", "spatial_dims": 2, "scale": [4, 4], "path": "a4gan.pt", "gan": True},
    {"name": "t3", "spatial_dims": 3, "scale": [1, 1, 4], "path": "t3.pt"},
]


@pytest.mark.parametrize(
    "dims,scale,name,expected,slice_wise",
    [
        (2, 2, None, "a2", False),
        (2, "4", None, "a4", False),
        (3, 2, None, "a2", True),  # a 3D volume with a single factor: in-plane, slice by slice
        (3, "(1,1,4)", None, "t3", False),
        (3, (1, 1, 4), None, "t3", False),
        (2, 4, "a4gan", "a4gan", False),  # GAN-stage models only when named
        (3, 2, "a4", "a4", True),
    ],
)
def test_pick_model(dims, scale, name, expected, slice_wise):
    info, sw = pick_model(dims, scale, name, models=MODELS)
    assert (info["name"], sw) == (expected, slice_wise)


def test_pick_model_prefers_a_model_trained_on_both_degradations():
    both = {"name": "b4", "spatial_dims": 2, "scale": [4, 4], "path": "b4.pt", "degradation": "mixed"}
    assert pick_model(2, 4, models=[*MODELS, both])[0]["name"] == "b4"
    assert pick_model(2, 2, models=[*MODELS, both])[0]["name"] == "a2"
    assert pick_model(2, 4, "a4", models=[*MODELS, both])[0]["name"] == "a4"
    real = {"name": "r4", "spatial_dims": 2, "scale": [4, 4], "path": "r4.pt", "degradation": "realistic"}
    assert pick_model(2, 4, models=[both, *MODELS, real])[0]["name"] == "r4"  # the realistic mix comes first


def test_pick_model_prefers_the_model_exported_as_default():
    real = {"name": "r2", "spatial_dims": 2, "scale": [2, 2], "path": "r2.pt", "degradation": "realistic"}
    chosen = {
        "name": "d2",
        "spatial_dims": 2,
        "scale": [2, 2],
        "path": "d2.pt",
        "degradation": "bicubic",
        "default": True,
    }
    assert pick_model(2, 2, models=[real, *MODELS, chosen])[0]["name"] == "d2"
    assert pick_model(2, 4, models=[real, *MODELS, chosen])[0]["name"] == "a4"  # only for its own scale
    assert pick_model(2, 2, "r2", models=[real, *MODELS, chosen])[0]["name"] == "r2"  # a name still wins


@pytest.mark.parametrize(
    "dims,scale,name,message",
    [
        (2, 8, None, "no shipped 2D model for x8"),
        (2, "(1,1,4)", None, "needs a 3D input"),
        (2, 2, "t3", "cannot upscale"),
    ],
)
def test_pick_model_errors_list_the_shipped_models(dims, scale, name, message):
    with pytest.raises(ValueError, match=message):
        pick_model(dims, scale, name, models=MODELS)


def test_slice_wise_equals_the_2d_network_on_every_slice():
    net = _tiny().eval()
    x = torch.rand(1, 1, 5, 6, 4)
    for axis in range(3):
        sw = SliceWise(net, axis)
        y = sw(x)
        idx = [slice(None)] * 5
        for k in range(x.shape[2 + axis]):
            idx[2 + axis] = k
            torch.testing.assert_close(y[tuple(idx)], net(x[tuple(idx)]))
        assert sw.scale_factor == tuple(1 if a == axis else 2 for a in range(3))


def test_init_network_takes_the_model_architecture(tmp_path):
    net = _tiny()
    path = save_model(net, tmp_path / "m.pt", {"name": "m", "spatial_dims": 2, "scale": [2, 2]}, half=False)
    configured = RDN(2, 1, 1, 2, num_features=8, num_blocks=2, num_layers=2, growth_channels=4)
    with pytest.warns(UserWarning, match="num_features"):
        started = init_network(configured, path)
    assert started.init_args == net.init_args and started.training
    x = torch.rand(1, 1, 5, 5)
    torch.testing.assert_close(started.eval()(x), net.eval()(x))
    assert init_network(configured, None) is configured


def _nifti(path: Path, data: np.ndarray, spacing) -> Path:
    affine = np.diag([*spacing, *([1.0] * (4 - len(spacing)))])
    affine[:3, 3] = (-10.0, 5.0, 2.0)
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    return path


def test_upscale_with_a_2d_model_on_a_thick_slice_volume_works_in_plane(tmp_path):
    net = _tiny()
    path = save_model(net, tmp_path / "m.pt", {"name": "m", "spatial_dims": 2, "scale": [2, 2]})
    rng = np.random.default_rng(0)
    src = _nifti(tmp_path / "in.nii.gz", rng.random((12, 10, 4)) * 300, (0.9, 0.9, 5.0))
    rec = upscale_with_model(src, tmp_path / "out.nii.gz", model=path, roi_size=(8, 8, 2))
    assert rec["slice_axis"] == 2 and rec["model"] == "m"
    out = nib.load(rec["output"])
    assert out.shape == (24, 20, 4)
    np.testing.assert_allclose(out.header.get_zooms(), (0.45, 0.45, 5.0), rtol=1e-5)
    # same world extent: the first voxel's centre moves by a quarter of the LR spacing in-plane
    np.testing.assert_allclose(out.affine[:3, 3], (-10.0 - 0.225, 5.0 - 0.225, 2.0), atol=1e-5)
    assert 0 < float(np.asarray(out.dataobj).mean()) < 300  # intensities back in input units


SHIPPED = {m["name"]: m for m in shipped_models()}
needs_shipped = pytest.mark.skipif(
    not any(m["spatial_dims"] == 2 and m["scale"] == [2, 2] and not m.get("gan") for m in SHIPPED.values()),
    reason="no shipped 2D x2 model",
)


@needs_shipped
def test_medsr_upscale_without_checkpoint_on_png_nifti_and_dicom_series(tmp_path, capsys):
    rng = np.random.default_rng(1)
    png = tmp_path / "in.png"
    Image.fromarray((rng.random((20, 24)) * 255).astype(np.uint8)).save(png)
    assert medsr_main(["upscale", str(png), str(tmp_path / "out.png"), "--scale", "2"]) == 0
    with Image.open(tmp_path / "out.png") as im:
        assert im.size == (48, 40) and im.mode == "L"
    line = capsys.readouterr().out
    assert "out.png" in line and "model rdn_x2_equivariant" in line  # the x2 model exported with --default
    report = tmp_path / "report.json"
    args = ["upscale", str(png), str(tmp_path / "tta.png"), "--scale", "2", "--tta", "8", "--report", str(report)]
    assert medsr_main(args) == 0
    assert "tta 8" in capsys.readouterr().out
    dc = json.loads(report.read_text())["data_consistency"]
    assert dc["medsr_rmse"] >= 0 and dc["cubic_rmse"] > 0 and "bicubic x2x2" in dc["what"]

    src = _nifti(tmp_path / "in.nii.gz", rng.random((16, 14)) * 100, (0.8, 0.8))
    assert medsr_main(["upscale", str(src), str(tmp_path / "out.nii.gz"), "--scale", "2"]) == 0
    assert nib.load(tmp_path / "out.nii.gz").shape[:2] == (32, 28)

    vol = _series(tmp_path / "series", n=3)
    assert medsr_main(["upscale", str(tmp_path / "series"), str(tmp_path / "out_series"), "--scale", "2"]) == 0
    written = sorted((tmp_path / "out_series").glob("*.dcm"))
    assert len(written) == vol.shape[2]
    import pydicom

    ds = pydicom.dcmread(written[0])
    assert (ds.Rows, ds.Columns) == (2 * vol.shape[0], 2 * vol.shape[1])
    assert "slice by slice across axis 2" in capsys.readouterr().out


def test_medsr_models_lists_the_shipped_models(capsys):
    assert medsr_main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed] == sorted(SHIPPED)


def test_medsr_models_marks_what_upscale_picks(capsys):
    assert medsr_main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    marked = {line.split()[0] for line in lines if line.split()[1:2] == ["*"]}
    expected = {pick_model(2, 2)[0]["name"], pick_model(2, 4)[0]["name"], pick_model(3, (1, 1, 4))[0]["name"]}
    assert marked == expected


def test_at_most_one_shipped_default_per_dims_and_scale():
    """Two files exported with ``--default`` for one scale would leave ``medsr upscale``'s pick to file order."""
    defaults = Counter((m["spatial_dims"], tuple(m["scale"])) for m in SHIPPED.values() if m.get("default"))
    assert defaults and max(defaults.values()) == 1, defaults


def test_the_2d_defaults_are_the_equivariant_rdns():
    """``medsr upscale`` picks the intensity-equivariant RDNs at x2 and x4: the files rebuild them as such, and
    their output follows a change of the input's window (the same image in other units gives the same image)."""
    for scale in (2, 4):
        info, _ = pick_model(2, scale)
        assert info["name"] == f"rdn_x{scale}_equivariant"
        net, _ = load_model(info["path"])
        assert net.init_args["equivariant"] is True
        x = torch.rand(1, 1, 12, 10)
        with torch.no_grad():
            torch.testing.assert_close(net(40.0 * x - 3.0), 40.0 * net(x) - 3.0, atol=1e-3, rtol=1e-4)
