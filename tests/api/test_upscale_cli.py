"""``medsr upscale`` as a tool: a folder of images, progress and --quiet, PNG from a bundle, a CUDA device on a
CPU build, and the nvImageCodec noise gone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medsr.networks import RDN
from medsr.pipeline.cli import main as medsr_main
from medsr.pipeline.models import save_model


@pytest.fixture
def tiny_model(tmp_path):
    torch.manual_seed(0)
    net = RDN(2, 1, 1, 2, num_features=4, num_blocks=1, num_layers=1, growth_channels=2, residual_interp=True)
    return str(save_model(net, tmp_path / "tiny.pt", {"name": "tiny", "spatial_dims": 2, "scale": [2, 2]}))


def _png(path, shape=(20, 24), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(path)
    return path


def test_a_folder_upscales_every_image_with_one_line_each_and_a_count(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _png(src / "a.png")
    _png(src / "b.jpg", (16, 10), seed=1)
    (src / "notes.txt").write_text("not an image")
    assert medsr_main(["upscale", str(src), str(tmp_path / "out"), "--model", tiny_model, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_sr.png", "b_sr.png"]
    with Image.open(tmp_path / "out" / "b_sr.png") as im:
        assert im.size == (20, 32)
    lines = out.strip().splitlines()
    assert len(lines) == 3 and "a_sr.png" in lines[0] and "b_sr.png" in lines[1]
    assert lines[-1].endswith(f"2 of 2 images upscaled into {tmp_path / 'out'}")
    assert "skipped" in err and "notes.txt" in err


def test_a_bad_file_in_a_folder_is_one_line_and_the_others_go_on(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _png(src / "a.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert medsr_main(["upscale", str(src), str(tmp_path / "out"), "--model", tiny_model, "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert (tmp_path / "out" / "a_sr.png").is_file()
    assert "1 of 2 images upscaled" in out and "failed: broken.png" in out
    assert "broken.png" in err and "Traceback" not in err


def test_progress_over_windows_and_quiet(tmp_path, tiny_model, capsys):
    src = _png(tmp_path / "big.png", (40, 40))
    args = ["upscale", str(src), str(tmp_path / "o.png"), "--model", tiny_model, "--roi-size", "16"]
    assert medsr_main(args) == 0
    err = capsys.readouterr().err
    assert "9/9" in err  # one bar over the 3 x 3 windows
    assert medsr_main([*args[:2], str(tmp_path / "q.png"), *args[3:], "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "%|" not in err and "nvImageCodec" not in out + err
    assert "q.png" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this PyTorch has CUDA")
def test_cuda_on_a_cpu_build_is_one_line(tmp_path, tiny_model, capsys):
    src = _png(tmp_path / "a.png")
    assert medsr_main(["upscale", str(src), str(tmp_path / "o.png"), "--model", tiny_model, "--device", "cuda"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device cuda" in err and "--device cpu" in err


@pytest.mark.slow
def test_bundle_upscale_writes_png_from_any_folder(tmp_path, tiny_model, capsys, monkeypatch):
    """Run from a folder without ``bundles/``: the configs' ``%bundles/common/...`` parts still resolve."""
    monkeypatch.chdir(tmp_path)
    src = _png(tmp_path / "a.png")
    args = ["upscale", str(src), str(tmp_path / "o.png"), "--bundle", "rdn", "--checkpoint", tiny_model, "--quiet"]
    assert medsr_main(args) == 0
    with Image.open(tmp_path / "o.png") as im:
        assert im.size == (48, 40) and im.mode == "L"
    assert "o.png: 48x40 at 0.5x0.5 mm" in capsys.readouterr().out
