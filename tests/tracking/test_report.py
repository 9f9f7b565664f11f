"""The static comparison report, comparison figures and model export."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import mlflow
import pytest
import torch

from medsr.pipeline.cli import main as medsr_main
from medsr.pipeline.tracking.export import export_torchscript
from medsr.pipeline.tracking.figures import comparison_figure

PNG = b"\x89PNG\r\n\x1a\n"


def _log_run(client, experiment_id, name, lr, offset):
    run = client.create_run(experiment_id, run_name=name)
    client.log_param(run.info.run_id, "lr", lr)
    client.log_param(run.info.run_id, "epochs", "3")
    for epoch in (1, 2, 3):
        client.log_metric(run.info.run_id, "val_psnr", 20 + offset + epoch, step=epoch)
        client.log_metric(run.info.run_id, "loss", 1.0 / (epoch + offset), step=epoch * 10)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_report_renders_two_runs_with_curves(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("medsr/srcnn", artifact_location=(tmp_path / "mlruns").as_uri())
    first = _log_run(client, exp, "srcnn-a", "0.001", 0)
    _log_run(client, exp, "srcnn-b", "0.0001", 2)
    out = tmp_path / "report" / "cmp.html"
    # one run by id, one by name
    assert (
        medsr_main(["report", first, "srcnn-b", "--tracking-uri", uri, "--experiment", "medsr/srcnn", "-o", str(out)])
        == 0
    )
    text = out.read_text(encoding="utf-8")
    HTMLParser().feed(text)  # the file opens as HTML
    run_plots = re.findall(r"class='run-plot' data-run-id='([0-9a-f]+)'[^>]*src='data:image/png;base64,([^']+)'", text)
    assert len(run_plots) == 2 and run_plots[0][0] == first
    for _, data in run_plots:
        assert base64.b64decode(data)[:8] == PNG
    curves = re.findall(r"data-metric='([^']+)'><img[^>]*src='data:image/png;base64,([^']+)'", text)
    assert [m for m, _ in curves] == ["val_psnr", "loss"]  # compared metrics first
    assert all(base64.b64decode(d)[:8] == PNG for _, d in curves)
    diff = text.split("Params that differ")[1].split("<details>")[0]
    assert "<td>lr</td>" in diff and "0.0001" in diff and "<td>epochs</td>" not in diff
    assert "23" in text.split("<h2>Runs</h2>")[1].split("</table>")[0]  # last val_psnr of run a


def test_report_names_missing_run(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    mlflow.MlflowClient(uri).create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    assert medsr_main(["report", "nope", "--tracking-uri", uri, "-o", str(tmp_path / "r.html")]) == 2
    assert "run 'nope': no run with this id or name" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("spatial", [(8, 8), (8, 8, 6)], ids=["2d", "3d"])
def test_comparison_figure(tmp_path, spatial):
    hr = torch.rand(1, *spatial)
    lr = hr[(slice(None),) + tuple(slice(None, None, 2) for _ in spatial)]
    path = comparison_figure(hr + 0.1, hr, lr, path=tmp_path / "f.png", title="t")
    assert path.read_bytes()[:8] == PNG and not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(ValueError, match="differ in shape"):
        comparison_figure(hr, torch.rand(1, *[s + 1 for s in spatial]))
    with pytest.raises(ValueError, match="channel-first"):
        comparison_figure(torch.rand(8))


def test_torchscript_export_matches_network(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.PixelShuffle(2))
    x = torch.rand(1, 1, 5, 5)
    path = export_torchscript(net, x, tmp_path / "m.ts")
    loaded = torch.jit.load(str(path))
    y = torch.rand(1, 1, 7, 9)  # scripted: any size
    assert torch.allclose(loaded(y), net(y), atol=1e-6)


def test_torchscript_export_traces_a_generator_and_fails_cleanly_without_example(tmp_path):
    from medsr.networks import get_network

    net = get_network("edsr", spatial_dims=2, num_features=4, num_blocks=1, scale_factor=2).eval()  # not scriptable
    x = torch.rand(1, 1, 6, 5)
    loaded = torch.jit.load(str(export_torchscript(net, x, tmp_path / "g.ts")))  # traced on x
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-6)
    with pytest.raises(ValueError, match=r"torchscript '.*none\.ts': cannot script the network and no example"):
        export_torchscript(net, None, tmp_path / "none.ts")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.ts"]  # nothing half-written
