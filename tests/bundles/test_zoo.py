"""Model-zoo conventions: declared scale checked, ckpt_export for every generator, an exported bundle runs elsewhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medsr.networks import get_network, list_networks
from medsr.pipeline.engines.checkpoint import save_checkpoint
from medsr.pipeline.models import model_payload
from medsr.pipeline.zoo import export_bundle, verify_bundle

ROOT = Path(__file__).resolve().parents[2]
TINY = {  # small widths per registered generator (the rest are the defaults)
    "srcnn": {"num_features": (8, 4)},
    "vdsr": {"num_features": 8, "num_layers": 3},
    "espcn": {"num_features": (8, 4)},
    "srresnet": {"num_features": 8, "num_blocks": 1},
    "edsr": {"num_features": 8, "num_blocks": 1},
    "edsr_ise": {"num_features": 8, "num_blocks": 1},
    "slicenet": {"num_features": 8, "num_blocks": 1},
    "rdn": {"num_features": 8, "num_blocks": 1, "num_layers": 2, "growth_channels": 4},
    "srdensenet": {"num_features": 8, "num_blocks": 1, "num_layers": 2, "growth_channels": 4, "bottleneck_channels": 8},
    "rrdbnet": {"num_features": 8, "num_blocks": 1, "growth_channels": 4},
    "esrgan_se": {"num_features": 8, "num_blocks": 1, "growth_channels": 4},
}


def _copy_bundle(name: str, root: Path) -> Path:
    dest = root / "bundles" / name
    shutil.copytree(ROOT / "bundles" / name, dest)
    shutil.copytree(ROOT / "bundles" / "common", root / "bundles" / "common")
    return dest


def test_verify_passes_and_fails_for_a_wrong_declared_scale(tmp_path):
    bundle = _copy_bundle("espcn", tmp_path)
    assert any("output shape = [4, 4] x input" in line for line in verify_bundle(bundle))
    meta = json.loads((bundle / "metadata.json").read_text())
    meta["network_data_format"]["outputs"]["pred"]["scale"] = [2, 2]  # a 4x network declared 2x
    meta["network_data_format"]["outputs"]["pred"]["spatial_shape"] = ["16*n", "16*n"]
    (bundle / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"maps \[8, 8\] to \[32, 32\], not scale \[2, 2\] x input"):
        verify_bundle(bundle)
    del meta["network_data_format"]["outputs"]["pred"]["scale"]
    (bundle / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="'scale' is a required property"):
        verify_bundle(bundle)


def test_verify_runs_the_shipped_files_against_their_recorded_scale(tmp_path):
    """The metadata describes the shipped models/model.pt (rdn: x2, not the x4 training default); every other
    shipped file is checked against its own recorded scale; a metadata that lies about model.pt fails."""
    lines = verify_bundle(ROOT / "bundles" / "rdn")
    assert any(line.startswith("models/model.pt (rdn_x2): output shape = [2, 2] x input") for line in lines)
    assert "model_3d.pt (rdn_3d_x1x1x4): 3D, output = [1, 1, 4] x input as recorded" in " ".join(lines)
    assert "model_mixed.pt (rdn_x2_mixed): 2D, output = [2, 2] x input as recorded" in " ".join(lines)
    bundle = _copy_bundle("rdn", tmp_path)
    meta = json.loads((bundle / "metadata.json").read_text())
    meta["network_data_format"]["outputs"]["pred"]["scale"] = [4, 4]  # what it declared before
    meta["network_data_format"]["outputs"]["pred"]["spatial_shape"] = ["32*n", "32*n"]
    (bundle / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(
        ValueError, match=r"declares pred scale \[4, 4\] \(2D\), but models/model.pt \(rdn_x2\) records \[2, 2\]"
    ):
        verify_bundle(bundle)


def test_export_writes_metadata_that_describes_the_exported_model(tmp_path):
    """``medsr bundles export rdn`` with the 3D shipped model: the exported metadata says 3D (1, 1, 4), not x2."""
    dest = export_bundle(
        ROOT / "bundles" / "rdn", tmp_path / "rdn", ROOT / "bundles" / "rdn" / "models" / "model_3d.pt"
    )
    meta = json.loads((dest / "configs" / "metadata.json").read_text())
    out = meta["network_data_format"]["outputs"]["pred"]
    assert out["scale"] == [1, 1, 4] and out["spatial_shape"] == ["8*n", "8*n", "32*n"]
    assert meta["model_file"] == "models/model.pt"


def test_selfsr_metadata_passes_verify_and_monai_verify_metadata():
    from monai.bundle import verify_metadata

    lines = verify_bundle(ROOT / "bundles" / "selfsr")
    assert lines[0] == "metadata matches bundles/common/meta_schema.json" and lines[1].startswith("scale: per scan")
    verify_metadata(  # MONAI's own check with the local schema (no download); raises on a failure
        meta_file=str(ROOT / "bundles" / "selfsr" / "metadata.json"),
        filepath=str(ROOT / "bundles" / "common" / "meta_schema.json"),
    )


def test_every_generator_is_registered_here():
    assert set(list_networks("generator")) == set(TINY)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_ckpt_export_from_the_checkpoint_for_every_generator(name, tmp_path):
    """``python -m monai.bundle ckpt_export network`` rebuilds the generator from its self-describing file."""
    net = get_network(name, spatial_dims=2, in_channels=1, out_channels=1, scale_factor=2, **TINY[name]).eval()
    ckpt = save_checkpoint(model_payload(net), tmp_path / "best_network.pt")
    ts = tmp_path / "model.ts"
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network", "--filepath", str(ts),
           "--ckpt_file", str(ckpt), "--key_in_ckpt", "state_dict", "--checkpoint", str(ckpt),
           "--config_file", "bundles/espcn/inference.json", "--meta_file", "bundles/espcn/metadata.json",
           "--use_trace", "True", "--input_shape", "[1, 1, 16, 16]", "--device", "$torch.device('cpu')"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    module = torch.jit.load(str(ts))
    x = torch.rand(1, 1, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(module(x), net(x), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_exported_bundle_runs_inferring_from_another_folder(tmp_path):
    net = get_network("espcn", spatial_dims=2, in_channels=1, out_channels=1, scale_factor=2, **TINY["espcn"])
    ckpt = save_checkpoint(model_payload(net), tmp_path / "best_network.pt")
    dest = export_bundle(ROOT / "bundles" / "espcn", tmp_path / "zoo" / "espcn", ckpt)
    assert {p.name for p in dest.iterdir()} >= {"configs", "models", "docs", "LICENSE"}
    text = (dest / "configs" / "inference.json").read_text()
    assert "%bundles/common" not in text  # self-contained
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    img = np.random.default_rng(0).random((20, 18)).astype(np.float32) * 100
    nib.save(nib.Nifti1Image(img, np.diag([0.8, 0.9, 1.0, 1.0])), str(elsewhere / "lr.nii.gz"))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file", str(dest / "configs" / "inference.json"),
           "--meta_file", str(dest / "configs" / "metadata.json"), "--logging_file", str(dest / "configs" / "logging.conf"),
           "--bundle_root", str(dest), "--input_files", "['lr.nii.gz']", "--output_files", "['sr.nii.gz']",
           "--progress", "False"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    out = nib.load(str(elsewhere / "sr.nii.gz"))
    assert out.shape == (40, 36)  # scale 2 from the checkpoint, not the bundle's default 4
    assert np.allclose(np.linalg.norm(out.affine[:3, :2], axis=0), [0.4, 0.45])
