"""``EvaluationReportHandler``: collect cases from an evaluator and write the report when it completes.

One line in a bundle's ``evaluating`` handlers::

    {"_target_": "medsr.pipeline.handlers.EvaluationReportHandler", "output_dir": "@output_dir",
     "data_range": 1.0, "scale_factor": "@scale_factor"}

It reads ``hr``, ``lr`` and optional ``mask``/``label`` from ``engine.state.batch`` and ``pred`` from
``engine.state.output`` (batched dicts or decollated lists both work), then calls
:func:`medsr.pipeline.evaluation.evaluate_cases` on ``Events.COMPLETED``. The summary is kept on
``engine.state.evaluation_report`` and the SR means go into ``engine.state.metrics`` as ``report_<metric>_<region>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from medsr.pipeline.evaluation.report import evaluate_cases

__all__ = ["EvaluationReportHandler"]


def _items(obj: Any) -> list[Mapping[str, Any]]:
    """A batched dict ``{k: (B, ...)}`` or a decollated list of dicts -> list of per-sample dicts."""
    if isinstance(obj, Mapping):
        sizes = {len(v) for v in obj.values() if isinstance(v, torch.Tensor) and v.ndim > 0}
        if not sizes:
            return [obj]
        n = min(sizes)
        return [{k: (v[i] if isinstance(v, torch.Tensor) and v.ndim > 0 else (v[i] if isinstance(v, list) and len(v) == n else v))
                 for k, v in obj.items()} for i in range(n)]  # fmt: skip
    if isinstance(obj, (list, tuple)) and all(isinstance(o, Mapping) for o in obj):
        return list(obj)
    raise TypeError(f"expected a dict or a list of dicts, got {type(obj).__name__}")


def _file_id(image: Any, n: int) -> str:
    """``<n>_<file stem>`` from a MetaTensor's ``filename_or_obj`` (unique per case), else ``case_<n>``."""
    name = getattr(image, "meta", {}).get("filename_or_obj") if hasattr(image, "meta") else None
    if isinstance(name, (list, tuple)):
        name = name[0] if len(name) == 1 else None
    if not isinstance(name, str) or not name:
        return f"case_{n}"
    stem = Path(name).name
    for suffix in (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".mha", ".nrrd"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return f"{n}_{stem}"


class EvaluationReportHandler:
    """Collect ``(hr, lr, sr, mask, label)`` per sample during an evaluation; write the report at the end.

    Args:
        output_dir: report folder (``metrics.csv``, ``summary.json``, ``figures/``).
        data_range: intensity range (required).
        pred_key: key of the SR output in ``engine.state.output``.
        hr_key: key of the HR image in the batch.
        lr_key: key of the LR image in the batch.
        mask_key: key of the binary mask in the batch (skipped when absent).
        label_key: key of a label map in the batch (skipped when absent).
        id_key: key of a case id in the batch; default ``<n>_<file stem>`` from the HR MetaTensor's
            ``filename_or_obj`` (``case_<n>`` without one).
        max_cases: stop collecting after this many cases (memory bound for 3D).
        report_kwargs: passed to :func:`evaluate_cases` (``scale_factor``, ``regions``, ``border``, ``degrade``,
            ``baselines``, ``normalization``, ``figures``, ``boundary_width``, ``label_names``, ``rule``).
    """

    def __init__(
        self,
        output_dir: str,
        data_range: float,
        pred_key: str = "pred",
        hr_key: str = "hr",
        lr_key: str = "lr",
        mask_key: str | None = "mask",
        label_key: str | None = "label",
        id_key: str | None = None,
        max_cases: int | None = None,
        **report_kwargs: Any,
    ) -> None:
        self.output_dir = output_dir
        self.data_range = data_range
        self.pred_key, self.hr_key, self.lr_key = pred_key, hr_key, lr_key
        self.mask_key, self.label_key, self.id_key = mask_key, label_key, id_key
        self.max_cases = max_cases
        self.report_kwargs = report_kwargs
        self.cases: list[dict[str, Any]] = []
        self.summary: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        """Register on ``EPOCH_STARTED`` (reset), ``ITERATION_COMPLETED`` (collect) and ``COMPLETED`` (report)."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.report)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget collected cases."""
        self.cases = []

    def collect(self, engine: Engine) -> None:
        """Add this iteration's samples."""
        batch = _items(engine.state.batch)
        output = _items(engine.state.output)
        if len(batch) != len(output):
            raise ValueError(f"EvaluationReportHandler: batch has {len(batch)} samples but output has {len(output)}")
        for b, o in zip(batch, output):
            if self.max_cases is not None and len(self.cases) >= self.max_cases:
                return
            src = {**b, **{k: v for k, v in o.items() if k == self.pred_key}}
            for key in (self.pred_key, self.hr_key, self.lr_key):
                if key not in src:
                    raise KeyError(f"EvaluationReportHandler: no {key!r} in the batch/output (keys: {sorted(src)})")
            case = {
                "sr": src[self.pred_key].detach().cpu(),
                "hr": b[self.hr_key].detach().cpu(),
                "lr": b[self.lr_key].detach().cpu(),
            }
            for k, name in ((self.mask_key, "mask"), (self.label_key, "label")):
                if k and b.get(k) is not None:
                    case[name] = b[k].detach().cpu()
            if self.mask_key and b.get(f"{self.mask_key}_lr") is not None:
                case["mask_lr"] = b[f"{self.mask_key}_lr"].detach().cpu()
            case["id"] = (
                str(b.get(self.id_key))
                if self.id_key and b.get(self.id_key) is not None
                else _file_id(b[self.hr_key], len(self.cases))
            )
            self.cases.append(case)

    def report(self, engine: Engine | None = None) -> dict[str, Any]:
        """Write the report for the collected cases; store the summary on the engine."""
        self.summary = evaluate_cases(self.cases, self.output_dir, data_range=self.data_range, **self.report_kwargs)
        if engine is not None:
            engine.state.evaluation_report = self.summary
            for scale in self.summary["results"].values():
                for region, stats in scale.get("sr", {}).items():
                    for metric in ("psnr", "ssim"):
                        if metric in stats and isinstance(stats[metric]["mean"], float):
                            engine.state.metrics[f"report_{metric}_{region}"] = stats[metric]["mean"]
                break
        return self.summary
