"""The label app's main-env parts: bundle reading, env location, server command line, ``medsr label``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medsr.pipeline.label_app import env as label_env
from medsr.pipeline.label_app.models import discover_models, parse_models_arg
from medsr.pipeline.label_app.server import server_command


def test_parse_models_arg():
    assert parse_models_arg("all") == [] and parse_models_arg(None) == []
    assert parse_models_arg("espcn, e3=espcn") == [("espcn", "espcn"), ("e3", "espcn")]
    with pytest.raises(ValueError, match="bad entry"):
        parse_models_arg("espcn,,srcnn")


def test_discover_skips_models_without_checkpoint(tmp_path, caplog):
    assert discover_models(models="espcn", runs_dir=tmp_path) == {}
    assert "model 'espcn' skipped" in caplog.text
    spec = discover_models(models="espcn", runs_dir=tmp_path, allow_untrained=True)["espcn"]
    assert spec.checkpoint is None and spec.info()["weights"] == "random (untrained)"


@pytest.mark.parametrize("dims,scale", [(2, [4, 4]), (3, [2, 2, 1])], ids=["2d", "3d"])
def test_discover_reads_bundle_and_loads_checkpoint(tmp_path, dims, scale):
    over = {"m": {"spatial_dims": dims, "scale": scale}}
    spec = discover_models(models="m=espcn", runs_dir=tmp_path, overrides=over, allow_untrained=True)["m"]
    assert (spec.spatial_dims, list(spec.scale), spec.bundle.name) == (dims, scale, "espcn")
    net = spec.build_network()
    for p in net.parameters():
        p.data.fill_(0.01)
    (tmp_path / "m" / "checkpoints").mkdir(parents=True)
    torch.save(net.state_dict(), tmp_path / "m" / "checkpoints" / "model_best.pt")
    spec = discover_models(models="m=espcn", runs_dir=tmp_path, overrides=over)["m"]
    assert spec.checkpoint.endswith("model_best.pt")
    loaded = spec.load_network()
    assert not loaded.training and all(torch.all(p == 0.01) for p in loaded.parameters())
    x = torch.rand(1, 1, *([6] * dims))
    assert tuple(loaded(x).shape[2:]) == tuple(6 * s for s in scale)


def test_discover_errors(tmp_path):
    with pytest.raises(ValueError, match="no bundle or shipped model 'nope'"):
        discover_models(models="x=nope", runs_dir=tmp_path)
    with pytest.raises(ValueError, match="not served"):
        discover_models(models="espcn", runs_dir=tmp_path, overrides={"srcnn": {"scale": 2}})
    with pytest.raises(ValueError, match="not valid JSON"):
        discover_models(models="espcn", runs_dir=tmp_path, overrides="{bad")
    with pytest.raises(ValueError, match="no such folder"):
        discover_models(tmp_path / "missing")


def test_default_serves_every_shipped_model_with_its_recorded_scale(tmp_path):
    """``--models all`` (the default): every ``bundles/*/models/*.pt`` under its own name, scale and dims from the
    file; bundles without a trained run are skipped and selfsr (no fixed network) is left out, not an error."""
    from medsr.pipeline.models import shipped_models

    specs = discover_models(runs_dir=tmp_path)
    shipped = {m["name"]: m for m in shipped_models()}
    assert set(specs) == set(shipped) and "selfsr" not in specs
    for name, spec in specs.items():
        assert (spec.spatial_dims, list(spec.scale)) == (shipped[name]["spatial_dims"], shipped[name]["scale"])
        assert spec.info()["scale"] == shipped[name]["scale"] and spec.checkpoint == str(Path(shipped[name]["path"]))
    net = specs["rdn_x2"].load_network()
    assert list(net.scale_factor) == [2, 2] and not net.training
    with pytest.raises(ValueError, match="takes only"):
        discover_models(models="rdn_x2", runs_dir=tmp_path, overrides={"rdn_x2": {"scale": 4}})


def test_a_bundle_pointed_at_a_model_file_reports_the_files_scale(tmp_path):
    """``rdn`` (x4 by default) pointed at the shipped x2 ``model_mixed.pt``: ``/info`` says x2, the network is x2."""
    from medsr.pipeline.bundles import BUNDLES_DIR

    over = {"rdn": {"checkpoint": str(BUNDLES_DIR / "rdn" / "models" / "model_mixed.pt")}}
    spec = discover_models(models="rdn", runs_dir=tmp_path, overrides=over)["rdn"]
    assert spec.info()["scale"] == [2, 2] and spec.spatial_dims == 2
    assert list(spec.load_network().scale_factor) == [2, 2]


def test_env_location_and_hash(monkeypatch, tmp_path):
    h = label_env.requirements_hash()
    assert len(h) == 12 and h == label_env.requirements_hash()
    assert any(r.startswith("torch==2.13.0") for r in label_env.REQUIREMENTS)
    assert "monailabel==0.8.5" in label_env.NO_DEPS
    monkeypatch.delenv("MEDSR_LABEL_ENV", raising=False)
    assert label_env.label_env_dir().name == f"label-env-{h}"
    monkeypatch.setenv("MEDSR_LABEL_ENV", str(tmp_path / "e"))
    assert label_env.label_env_dir() == (tmp_path / "e").resolve()
    assert not label_env.is_ready()
    env = label_env.env_for_subprocess(tmp_path / "e", {"PATH": "/usr/bin", "PYTHONPATH": "/x"})
    assert env["PATH"].split(":")[0] == str(tmp_path / "e" / "bin") and "PYTHONPATH" not in env


def test_server_command_loopback_only(tmp_path):
    cmd = server_command(tmp_path / "e", tmp_path / "app", tmp_path / "ds", 8123, conf={"overrides": {"a": {"b": 1}}})
    assert cmd[1:4] == ["-m", "monailabel.main", "start_server"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "8123"
    assert ["--conf", "overrides", '{"a": {"b": 1}}'] == cmd[-3:]
    with pytest.raises(ValueError, match="loopback"):
        server_command(tmp_path, tmp_path, tmp_path, 8123, host="0.0.0.0")


def test_medsr_label_command(monkeypatch, tmp_path, capsys):
    from medsr.pipeline.cli import build_parser, main

    args = build_parser().parse_args(["label", "serve", "--datastore", str(tmp_path), "--port", "8111"])
    assert (args.port, args.host, args.models) == (8111, "127.0.0.1", "all")
    monkeypatch.setenv("MEDSR_LABEL_ENV", str(tmp_path / "none"))
    assert main(["label", "env-path"]) == 1
    assert "not built" in capsys.readouterr().out
