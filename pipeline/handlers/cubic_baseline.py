"""``CubicBaseline``: the interpolation baseline of every validation, so a log shows whether training beats it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric

from medsr.pipeline.evaluation.baselines import upsample
from medsr.pipeline.metrics.functional import psnr, ssim

__all__ = ["CubicBaseline"]


def _pairs(output: Any) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    items = output if isinstance(output, (list, tuple)) else [output]
    out = []
    for item in items:
        lr, sr, hr = item["image"], item["pred"], item["label"]
        if lr.ndim == sr.ndim + 1:  # a batched dict (not decollated): split it
            out += [(lr[i], sr[i], hr[i]) for i in range(lr.shape[0])]
        else:
            out.append((lr, sr, hr))
    return out


class CubicBaseline(Metric):
    """PSNR/SSIM of cubic interpolation of the LR input on the validation crops, next to the model's.

    Each validation case's LR input (``image`` in the evaluator output) is upsampled to the HR grid with
    :func:`medsr.pipeline.evaluation.baselines.upsample` (``mode``, default ``"cubic"``: cubic B-spline, as the
    evaluation report and benchmarks) and scored against the HR target with the same PSNR/SSIM functions as
    the model. The baseline is computed once per validation case and kept (the validation crops do not
    change between epochs), so it costs one interpolation per case per run.

    Puts into ``engine.state.metrics``: ``<prefix>psnr_cubic``, ``<prefix>ssim_cubic`` and, when the model's
    ``<prefix>psnr`` / ``<prefix>ssim`` are there already (the key metric and earlier additional metrics),
    ``<prefix>psnr_gain`` / ``<prefix>ssim_gain`` (model minus cubic). They reach the epoch log line,
    ``metrics.csv``, MLflow and the comparison PNG like any metric.

    Args:
        data_range: intensity range of the images (1.0 after percentile normalization).
        spatial_dims: 2 or 3.
        mode: interpolation mode of :func:`~medsr.pipeline.evaluation.baselines.upsample`.
        prefix: metric name prefix.
        output_transform: ignite output transform (default: the whole output).
    """

    def __init__(
        self,
        data_range: float = 1.0,
        spatial_dims: int = 2,
        mode: str = "cubic",
        prefix: str = "val_",
        output_transform: Callable = lambda x: x,
    ) -> None:
        self.data_range, self.spatial_dims, self.mode, self.prefix = float(data_range), int(spatial_dims), mode, prefix
        self._cache: list[tuple[tuple[int, ...], float, float]] = []
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        self._index = 0
        self._scores: list[tuple[float, float]] = []

    def update(self, output: Any) -> None:
        for lr, _, hr in _pairs(output):
            key = (*lr.shape, *hr.shape, float(lr.float().sum()))
            if self._index < len(self._cache) and self._cache[self._index][0] == key:
                scores = self._cache[self._index][1:]
            else:
                hr_ = hr.detach().float().cpu()
                cubic = upsample(lr.detach().float().cpu(), hr_.shape[1:], self.mode)
                p = float(psnr(cubic[None], hr_[None], self.data_range, spatial_dims=self.spatial_dims)[0])
                s = float(ssim(cubic[None], hr_[None], self.data_range, spatial_dims=self.spatial_dims)[0])
                scores = (p, s)
                self._cache[self._index : self._index + 1] = [(key, *scores)]
            self._scores.append(scores)
            self._index += 1

    def compute(self) -> dict[str, float]:
        if not self._scores:
            return {}
        n = len(self._scores)
        return {
            f"{self.prefix}psnr_cubic": sum(s[0] for s in self._scores) / n,
            f"{self.prefix}ssim_cubic": sum(s[1] for s in self._scores) / n,
        }

    def completed(self, engine: Engine, name: str) -> None:
        result = self.compute()
        metrics = engine.state.metrics
        metrics.update(result)
        for m in ("psnr", "ssim"):
            model, base = metrics.get(f"{self.prefix}{m}"), result.get(f"{self.prefix}{m}_cubic")
            if model is not None and base is not None:
                metrics[f"{self.prefix}{m}_gain"] = float(model) - base

    def attach(self, engine: Engine, name: str = "cubic_baseline", usage: Any = None) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.completed, name)

    def started(self, engine: Engine) -> None:
        self.reset()

    def iteration_completed(self, engine: Engine) -> None:
        self.update(self._output_transform(engine.state.output))


def gain_summary(metrics: dict[str, float], names: Sequence[str] = ("psnr",), prefix: str = "val_") -> str:
    """``"PSNR 31.20 dB vs cubic 30.10 dB (+1.10 dB)"`` for a log line; empty without the baseline."""
    parts = []
    for m in names:
        if f"{prefix}{m}" in metrics and f"{prefix}{m}_cubic" in metrics:
            a, b = float(metrics[f"{prefix}{m}"]), float(metrics[f"{prefix}{m}_cubic"])
            unit = " dB" if m == "psnr" else ""
            parts.append(f"{m.upper()} {a:.4g}{unit} vs cubic {b:.4g}{unit} ({a - b:+.3g}{unit})")
    return "; ".join(parts)
