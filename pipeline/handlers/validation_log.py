"""``ValidationLog``: one CSV row per validation, rewritten atomically; a resumed run keeps the earlier rows."""

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

    Rows already in the file are kept (a resumed run continues the same file); a row for epoch ``e`` replaces
    the rows of epochs ``>= e`` of the same stage, which a killed run wrote after its last checkpoint (and a
    new run in the same folder starts the file over).

    Args:
        path: the CSV file, e.g. ``runs/esrgan_se/metrics.csv``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self._loaded = False

    def _load_existing(self) -> None:
        """Start from the rows already in the file (a resumed run continues its history)."""
        self._loaded = True
        if not self.path.is_file():
            return
        with open(self.path, newline="", encoding="utf-8") as fh:
            old = [{k: v for k, v in r.items() if k is not None and v not in (None, "")} for r in csv.DictReader(fh)]
        self.rows = old + self.rows

    @staticmethod
    def _superseded(old: dict[str, Any], new: dict[str, Any]) -> bool:
        """A new row for epoch e of a stage replaces the rows of epochs >= e of that stage (a rerun after resume)."""
        if str(old.get("stage", "")) != str(new.get("stage", "")):
            return False
        try:
            return int(float(old["epoch"])) >= int(new["epoch"])
        except (KeyError, TypeError, ValueError):
            return False

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
        if not self._loaded:
            self._load_existing()
        self.rows = [r for r in self.rows if not self._superseded(r, row)] + [row]
        fields = list(dict.fromkeys(k for r in self.rows for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, buf.getvalue())
