"""``medsr models export-onnx``: the exported file gives PyTorch's output on another input size; skipped without
the optional ``onnx`` package."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from medsr.networks import RDN
from medsr.pipeline.cli import main as medsr_main
from medsr.pipeline.models import save_model


def _model(tmp_path, dims, scale, equivariant=False):
    torch.manual_seed(0)
    net = RDN(dims, 1, 1, scale, num_features=4, num_blocks=1, num_layers=1, growth_channels=2, residual_interp=True,
              equivariant=equivariant)  # fmt: skip
    if equivariant:  # every layer weighted (the output layer starts at zero), so the replicate padding counts
        with torch.no_grad():
            for p in net.parameters():
                p.normal_(0.0, 0.2)
    info = {"name": f"tiny{dims}d", "spatial_dims": dims, "scale": list(net.scale_factor)}
    return net.eval(), save_model(net, tmp_path / f"tiny{dims}.pt", info, half=False)


@pytest.mark.parametrize(
    ("dims", "scale", "equivariant"),
    [(2, 2, False), (3, (1, 1, 3), False), (2, 2, True)],
    ids=["2d", "3d", "2d-equivariant"],
)
def test_export_matches_pytorch_on_another_size(tmp_path, capsys, dims, scale, equivariant):
    onnx = pytest.importorskip("onnx")
    from medsr.pipeline.onnx_export import run_onnx

    net, path = _model(tmp_path, dims, scale, equivariant)
    out = tmp_path / "m.onnx"
    assert medsr_main(["models", "export-onnx", str(path), str(out)]) == 0
    assert "max abs diff" in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    described = json.loads(meta["medsr"])
    assert described["scale"] == list(net.scale_factor) and described["spatial_dims"] == dims
    lr = torch.rand(1, 1, *(9 + a for a in range(dims)))
    got, _ = run_onnx(out, lr)
    with torch.no_grad():
        torch.testing.assert_close(got, net(lr), atol=1e-5, rtol=1e-4)


def test_without_onnx_the_command_says_what_to_install(tmp_path, capsys, monkeypatch):
    _, path = _model(tmp_path, 2, 2)
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    assert medsr_main(["models", "export-onnx", str(path), str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install" in err and "onnx" in err
    assert not (tmp_path / "m.onnx").exists()
