"""Evaluation: baselines, reports (CSV/JSON/PNG), data consistency, the report handler, downstream accuracy."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from PIL import Image

from medsr.pipeline.evaluation import (
    downstream_accuracy,
    evaluate_cases,
    resolve_scale,
    upsample,
)
from medsr.pipeline.handlers import EvaluationReportHandler


def _degrade(scale):
    def fn(x):
        x = torch.as_tensor(x)
        return F.avg_pool2d(x[None], scale)[0] if x.ndim == 3 else F.avg_pool3d(x[None], scale)[0]

    return fn


def _case(nd: int, i: int, scale) -> dict:
    g = torch.Generator().manual_seed(i)
    shape = (48, 48) if nd == 2 else (24, 24, 24)
    coords = torch.meshgrid(*[torch.linspace(0, 1, s) for s in shape], indexing="ij")
    hr = 0.5 + 0.4 * torch.sin(6 * coords[0]) * torch.cos(5 * coords[-1]) + 0.05 * torch.rand(shape, generator=g)
    hr = hr.clamp(0, 1)[None]
    lr = _degrade(scale)(hr)
    mask = torch.zeros_like(hr)
    mask[(slice(None),) + (slice(2, shape[0] - 2),) * nd] = 1
    sr = hr.clone()
    sr[mask == 0] = 0.0  # perfect inside, wrong outside
    return {"id": f"c{i}", "hr": hr, "lr": lr, "sr": sr, "mask": mask}


@pytest.mark.parametrize("nd", [2, 3])
def test_baselines_shapes_and_exactness(nd):
    lr = torch.rand(1, *([6] * nd))
    scale = (2,) * nd if nd == 2 else (1, 2, 4)
    out_shape = tuple(int(s * f) for s, f in zip(lr.shape[1:], scale))
    assert resolve_scale(lr.shape[1:], out_shape, scale) == tuple(float(s) for s in scale)
    for mode in ("nearest", "linear", "cubic"):
        up = upsample(lr, out_shape, mode)
        assert up.shape == (1, *out_shape)
        # averaging back to the LR grid roughly recovers the input (centres aligned, align_corners=False)
        back = F.avg_pool2d(up[None], scale)[0] if nd == 2 else F.avg_pool3d(up[None], scale)[0]
        assert float((back - lr).abs().mean()) < (1e-6 if mode == "nearest" else 0.15)
    const = torch.full((1, *([5] * nd)), 0.3)
    assert torch.allclose(
        upsample(const, out_shape[:nd] if nd == 2 else (5, 10, 20), "cubic"), torch.tensor(0.3), atol=1e-5
    )
    with pytest.raises(ValueError, match="hr shape"):
        resolve_scale((6, 6), (12, 13), 2)


@pytest.mark.parametrize("nd", [2, 3])
def test_evaluate_cases_writes_reports(tmp_path, nd):
    scale = 2
    cases = [_case(nd, i, scale) for i in range(2)]
    summary = evaluate_cases(cases, tmp_path, data_range=1.0, scale_factor=scale, degrade=_degrade(scale), border=1)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    sr_inside = [r for r in rows if r["method"] == "sr" and r["region"] == "inside"]
    assert len(sr_inside) == 2 and all(float(r["ssim"]) == pytest.approx(1.0) for r in sr_inside)
    assert {r["method"] for r in rows} >= {"sr", "nearest", "linear", "cubic", "sr_vs_cubic", "sr_dc", "hr_dc"}
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data == json.loads(json.dumps(summary))
    res = data["results"]["x2"]
    assert res["sr"]["inside"]["ssim"]["mean"] == pytest.approx(1.0) and res["sr"]["inside"]["ssim"]["n"] == 2
    assert res["sr"]["outside"]["mse"]["mean"] > res["cubic"]["outside"]["mse"]["mean"]  # SR is wrong outside
    assert res["hr_dc"]["whole"]["mse"]["mean"] == pytest.approx(0.0, abs=1e-12)  # same degradation model
    assert res["sr_dc"]["whole"]["mse"]["mean"] > 1e-3
    assert data["protocol"]["data_range"] == 1.0 and data["protocol"]["border_crop"] == 1
    assert data["protocol"]["window"]["size"] == 11
    # the 1-voxel thin "outside" frame holds no SSIM window: reported absent with a reason, never NaN
    assert any(a["region"] == "outside" and "window" in a["reason"] for a in data["absent"])
    assert "NaN" not in (tmp_path / "summary.json").read_text() and "nan" not in (tmp_path / "metrics.csv").read_text()
    for rel in data["files"]["figures"]:
        with Image.open(tmp_path / rel) as im:
            im.load()
            arr = np.asarray(im.convert("L"), dtype=np.float64)
        assert im.width > 300 and im.height > 100 and arr.std() > 10  # a real picture, not a blank canvas
    assert not list(tmp_path.glob("**/*.tmp"))


def test_evaluate_cases_empty_mask_and_bad_input(tmp_path):
    case = _case(2, 0, 2)
    case["mask"] = torch.zeros_like(case["mask"])
    summary = evaluate_cases([case], tmp_path, data_range=1.0, figures=False)
    assert "inside" not in summary["results"]["x2"]["sr"] or not summary["results"]["x2"]["sr"]["inside"]
    assert any(a["region"] == "inside" and "empty" in a["reason"] for a in summary["absent"])
    bad = dict(case, sr=case["sr"][:, :40])
    with pytest.raises(ValueError, match="sr shape"):
        evaluate_cases([bad], tmp_path, data_range=1.0)
    nan = dict(case, sr=case["sr"].clone())
    nan["sr"][0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        evaluate_cases([nan], tmp_path, data_range=1.0)
    with pytest.raises(ValueError, match="data_range is required"):
        evaluate_cases([case], tmp_path, data_range=None)  # type: ignore[arg-type]
    aff = torch.eye(4)
    aff[0, 0] = 2
    mt = dict(case, hr=MetaTensor(case["hr"], affine=torch.eye(4)), sr=MetaTensor(case["sr"], affine=aff))
    with pytest.raises(ValueError, match="affine"):
        evaluate_cases([mt], tmp_path, data_range=1.0)
    with pytest.raises(ValueError, match="scale_factor"):
        evaluate_cases([case], tmp_path, data_range=1.0, scale_factor=3)


def test_report_handler_on_an_evaluator(tmp_path):
    from ignite.engine import Engine

    cases = [_case(2, i, 2) for i in range(3)]
    batches = [{k: torch.stack([c[k] for c in cases[s : s + 2]]) for k in ("hr", "lr", "mask")} for s in (0, 2)]
    engine = Engine(lambda e, b: {"pred": upsample_batch(b["lr"]), "label": b["hr"]})
    handler = EvaluationReportHandler(str(tmp_path), data_range=1.0, scale_factor=2)
    handler.attach(engine)
    state = engine.run(batches, max_epochs=1)
    assert state.evaluation_report["n_cases"] == 3
    assert (tmp_path / "metrics.csv").exists() and len(list((tmp_path / "figures").glob("*.png"))) == 3
    assert 0 < state.metrics["report_ssim_whole"] < 1


def upsample_batch(lr):
    return F.interpolate(lr, scale_factor=2, mode="bilinear", align_corners=False)


def test_downstream_accuracy(tmp_path):
    class Bright(torch.nn.Module):
        """Class 1 when fine detail (local variance) is high: LR blur lowers it, HR keeps it."""

        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.tensor(-0.01))

        def forward(self, x):
            hp = x - F.avg_pool2d(x, 3, 1, 1)
            return (hp.square().flatten(1).mean(1) + self.bias)[:, None]

    g = torch.Generator().manual_seed(0)
    cases, labels = [], []
    for i in range(6):
        sharp = i % 2 == 1
        hr = torch.rand(1, 32, 32, generator=g) if sharp else torch.full((1, 32, 32), 0.5)
        lr = F.avg_pool2d(hr[None], 4)[0]
        cases.append({"hr": hr, "lr": lr, "sr": hr.clone()})
        labels.append(int(sharp))
    res = downstream_accuracy(Bright(), cases, labels, methods=("hr", "sr", "linear"))
    assert res["accuracy"]["hr"] == 1.0 and res["accuracy"]["sr"] == 1.0 and res["accuracy"]["linear"] == 0.5
    path = tmp_path / "clf.pt"
    torch.save({"model": Bright().state_dict()}, path)
    res2 = downstream_accuracy(str(path), cases, labels, network=Bright, methods=("hr",))
    assert res2["accuracy"]["hr"] == 1.0
    with pytest.raises(ValueError, match="labels has 2 entries"):
        downstream_accuracy(Bright(), cases, [0, 1])
