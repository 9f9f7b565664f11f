"""The validation's cubic baseline: the same interpolation and metrics as the evaluation report, once per case."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from medsr.pipeline.evaluation.baselines import upsample
from medsr.pipeline.handlers import CubicBaseline
from medsr.pipeline.metrics.functional import psnr, ssim


@pytest.mark.parametrize("dims", [2, 3])
def test_cubic_baseline_metrics_and_gain(dims):
    torch.manual_seed(0)
    shape = (24, 22) if dims == 2 else (12, 12, 12)
    hrs = [torch.rand(1, *shape) for _ in range(3)]
    lrs = [
        torch.nn.functional.avg_pool2d(h, 2) if dims == 2 else torch.nn.functional.avg_pool3d(h[None], 2)[0]
        for h in hrs
    ]
    preds = [h + 0.01 * torch.randn_like(h) for h in hrs]
    data = [[{"image": lr, "pred": p, "label": h}] for lr, p, h in zip(lrs, preds, hrs)]
    engine = Engine(lambda e, batch: batch)
    metric = CubicBaseline(data_range=1.0, spatial_dims=dims)
    metric.attach(engine, "val_cubic")

    state = engine.run(data, max_epochs=1)
    cubic = [upsample(lr, h.shape[1:], "cubic") for lr, h in zip(lrs, hrs)]
    want_p = sum(float(psnr(c[None], h[None], 1.0, spatial_dims=dims)[0]) for c, h in zip(cubic, hrs)) / 3
    want_s = sum(float(ssim(c[None], h[None], 1.0, spatial_dims=dims)[0]) for c, h in zip(cubic, hrs)) / 3
    assert state.metrics["val_psnr_cubic"] == pytest.approx(want_p, rel=1e-6)
    assert state.metrics["val_ssim_cubic"] == pytest.approx(want_s, rel=1e-6)
    assert "val_psnr_gain" not in state.metrics  # no model PSNR in this engine


def test_gain_uses_the_model_metric_and_the_baseline_is_computed_once(monkeypatch):
    import medsr.pipeline.handlers.cubic_baseline as cb

    calls = []
    real = cb.upsample
    monkeypatch.setattr(cb, "upsample", lambda *a, **k: calls.append(1) or real(*a, **k))
    hr = torch.rand(1, 16, 16)
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    engine = Engine(lambda e, batch: batch)

    @engine.on(Events.EPOCH_COMPLETED)
    def _model_psnr(e):  # stands in for the key metric, which the evaluator attaches first
        e.state.metrics["val_psnr"] = 40.0

    CubicBaseline().attach(engine, "val_cubic")
    state = engine.run([[{"image": lr, "pred": hr, "label": hr}]] * 2, max_epochs=3)
    assert len(calls) == 2  # two cases, three epochs: interpolated once each
    assert state.metrics["val_psnr_gain"] == pytest.approx(40.0 - state.metrics["val_psnr_cubic"])
