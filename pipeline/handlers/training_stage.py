"""``TrainingStage``: tell a validator shared by several training stages which stage runs it."""

from __future__ import annotations

import re
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["OFFSET_ATTR", "STAGE_ATTR", "TrainingStage"]

STAGE_ATTR = "medsr_stage"
OFFSET_ATTR = "medsr_epoch_offset"


class TrainingStage:
    """Mark a shared validator with the stage of the trainer that runs it (``pretrain``, ``gan``, ...).

    Attach to each stage's trainer (an item of ``pretrain#handlers`` / ``train#handlers``). When the trainer
    starts, it sets ``validator.state.medsr_stage = name`` and ``validator.state.medsr_epoch_offset =
    epoch_offset``; :class:`ValidationLog` then writes ``stage`` and ``global_epoch`` columns and
    :class:`ComparisonImages` prefixes its PNGs with the stage, so a GAN stage does not overwrite the
    pre-training stage's images or repeat its epoch numbers.

    Args:
        validator: the evaluator shared by the stages (``@validate#evaluator``).
        name: the stage name (letters, digits, ``_`` and ``-``).
        epoch_offset: epochs run by earlier stages (``global_epoch = epoch_offset + epoch``).
    """

    def __init__(self, validator: Any, name: str, epoch_offset: int = 0) -> None:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"TrainingStage name: expected letters, digits, '_' or '-', got {name!r}")
        if int(epoch_offset) < 0:
            raise ValueError(f"TrainingStage epoch_offset: expected >= 0, got {epoch_offset}")
        self.validator, self.name, self.epoch_offset = validator, name, int(epoch_offset)

    def attach(self, engine: Engine) -> None:
        """Run at the trainer's ``STARTED`` event."""
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        state = self.validator.state
        setattr(state, STAGE_ATTR, self.name)
        setattr(state, OFFSET_ATTR, self.epoch_offset)
