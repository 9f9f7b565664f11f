"""``ComparisonImages``: a PNG of the first validation case (LR, cubic, SR, HR, error) after each validation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from medsr.pipeline.engines.distributed import is_main_process
from medsr.pipeline.handlers.training_stage import STAGE_ATTR
from medsr.pipeline.handlers.utils import first_sample

__all__ = ["FIGURE_ATTR", "ComparisonImages"]

#: ``engine.state`` attribute holding the path of this validation's figure (``None`` before it is written):
#: the MLflow validator handler logs this file, so the run folder and MLflow show the same figure
FIGURE_ATTR = "comparison_figure"


class ComparisonImages:
    """After each validation, write a PNG of the first validation case: LR, cubic interpolation, SR, HR, error.

    Uses :func:`medsr.pipeline.tracking.figures.comparison_figure`; files are
    ``<output_dir>/epoch_<NNNN>.png`` (3D: the middle slice of the last axis), or
    ``<output_dir>/<stage>_epoch_<NNNN>.png`` when a :class:`TrainingStage` marks the validator. The SR and
    cubic panels carry the validation's logged metrics (``val/psnr``, ``val/psnr_cubic``, ...: means over the
    validation cases, as in ``metrics.csv`` and MLflow); the path goes to ``engine.state.comparison_figure``.

    Args:
        output_dir: folder for the PNGs.
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.first: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        """Grab the first case of each validation and draw it when the validation completes."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._grab)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self.first = None
        setattr(engine.state, FIGURE_ATTR, None)

    def _grab(self, engine: Engine) -> None:
        if self.first is not None:
            return
        item = first_sample(engine.state.output)
        if item is not None and "pred" in item:
            lr = item.get("image")
            self.first = {
                k: v.detach().float().cpu() if isinstance(v, torch.Tensor) else v
                for k, v in (("pred", item["pred"]), ("label", item.get("label")), ("image", lr))
            }

    def __call__(self, engine: Engine) -> None:
        from medsr.pipeline.tracking.figures import comparison_figure, logged_labels

        if self.first is None or not is_main_process():
            return
        stage = getattr(engine.state, STAGE_ATTR, None)
        prefix = f"{stage}_" if stage else ""
        path = self.output_dir / f"{prefix}epoch_{int(engine.state.epoch):04d}.png"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        dataset = getattr(getattr(engine, "data_loader", None), "dataset", None)
        cases = len(dataset) if hasattr(dataset, "__len__") else 0
        mean = f" (scores: mean of {cases} validation cases)" if cases > 1 else ""
        title = f"{stage + ' ' if stage else ''}epoch {engine.state.epoch}: first validation case{mean}"
        lr, hr = self.first["image"], self.first["label"]
        cubic = None
        if lr is not None and hr is not None and lr.ndim == hr.ndim:
            from medsr.pipeline.evaluation.baselines import upsample

            cubic = upsample(lr, hr.shape[1:], "cubic")
        sr_label, cubic_label = logged_labels(engine.state.metrics or {})
        comparison_figure(
            self.first["pred"], hr, lr, path=path, title=title, cubic=cubic, sr_label=sr_label, cubic_label=cubic_label
        )
        setattr(engine.state, FIGURE_ATTR, path)
