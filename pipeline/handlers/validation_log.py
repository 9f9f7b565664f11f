"""``ValidationLog``: one CSV row per validation, rewritten atomically."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from medsr.pipeline.engines.distributed import is_main_process
from medsr.pipeline.handlers.training_stage import OFFSET_ATTR, STAGE_ATTR
from medsr.pipeline.io import write_text_atomic

__all__ = ["ValidationLog"]


class ValidationLog:
    """Append one row per validation to a CSV (``epoch``, ``iteration`` and every metric), rewriting atomically.

    Attach to the evaluator (``validate#handlers``); the trainer's epoch comes from ``ValidationHandler``.
    When a :class:`TrainingStage` marks the validator (two-stage training), each row also gets ``stage`` and
    ``global_epoch`` (epochs of earlier stages plus this one), so the stages' epoch numbers do not collide.

    Args:
        path: the CSV file, e.g. ``runs/esrgan_se/metrics.csv``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        """Run at the evaluator's ``EPOCH_COMPLETED`` event."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        row: dict[str, Any] = {"epoch": int(engine.state.epoch), "iteration": int(engine.state.iteration)}
        for k, v in engine.state.metrics.items():
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                continue
        stage = getattr(engine.state, STAGE_ATTR, None)
        if stage is not None:  # multi-stage training (e.g. ESRGAN pretrain then GAN): say which stage and where
            row["stage"] = str(stage)
            row["global_epoch"] = int(getattr(engine.state, OFFSET_ATTR, 0) or 0) + int(engine.state.epoch)
        self.rows.append(row)
        fields = list(dict.fromkeys(k for r in self.rows for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, buf.getvalue())
