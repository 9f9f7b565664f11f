"""``BestCheckpoint``: keep the network of the best validation in one file, replaced atomically."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from medsr.pipeline.engines.common import unwrap_model
from medsr.pipeline.engines.distributed import is_main_process
from medsr.pipeline.io import remove_stale_temps

__all__ = ["BestCheckpoint"]

logger = logging.getLogger(__name__)


class BestCheckpoint:
    """Save ``save_dict`` to ``save_dir/filename`` whenever the evaluator's key metric improves.

    Replaces MONAI's ``CheckpointSaver(save_key_metric=True, key_metric_filename=...)``, which deletes the old
    best file before writing the new one (a kill in between loses it). Here the new file is written next to
    the old one and renamed over it (:func:`medsr.pipeline.engines.checkpoint.save_checkpoint`), so
    ``best_network.pt`` is always a complete file. The file holds ``{name: state_dict}`` as
    ``CheckpointSaver`` wrote it, plus ``"best_metric": {"name", "value", "epoch"}``; a resumed run
    (``resume=True``) starts from that value, so it only replaces the file with a better network. Stale
    temporary files of this name are removed at attach.

    Args:
        save_dir: output folder (e.g. ``runs/<bundle>/checkpoints``).
        save_dict: objects with ``state_dict()`` (DDP wrappers are unwrapped), e.g. ``{"network": net}``.
        filename: the best checkpoint's file name.
        metric_name: metric to follow (default: the evaluator's ``key_metric_name``).
        resume: start from the score stored in an existing file instead of saving at the first validation.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str = "best_network.pt",
        metric_name: str | None = None,
        resume: bool = False,
    ) -> None:
        if not save_dict:
            raise ValueError("BestCheckpoint: save_dict is empty")
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.filename = filename
        self.metric_name = metric_name
        self.resume = bool(resume)
        self.best: float | None = None

    @property
    def path(self) -> Path:
        return self.save_dir / self.filename

    def attach(self, engine: Engine) -> None:
        """Check after each validation (``EPOCH_COMPLETED`` of the evaluator)."""
        if is_main_process():
            remove_stale_temps(self.save_dir, self.filename)
            if self.resume:
                self.best = self._stored_best()
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _stored_best(self) -> float | None:
        if not self.path.is_file():
            return None
        try:
            ckpt = torch.load(self.path, map_location="cpu", weights_only=False)
            value = ckpt.get("best_metric", {}).get("value") if isinstance(ckpt, dict) else None
        except Exception as err:  # noqa: BLE001 - an unreadable old best is replaced by the next validation
            logger.warning(f"best checkpoint '{self.path}' could not be read ({err}); the next validation replaces it")
            return None
        return float(value) if value is not None else None

    def _better(self, engine: Engine, value: float) -> bool:
        if self.best is None:
            return True
        cmp = getattr(engine, "metric_cmp_fn", None)
        return bool(cmp(value, self.best)) if callable(cmp) else value > self.best

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        name = self.metric_name or getattr(engine.state, "key_metric_name", None)
        if name is None or name not in engine.state.metrics:
            return
        value = float(engine.state.metrics[name])
        if math.isnan(value) or not self._better(engine, value):
            return
        from medsr.pipeline.engines.checkpoint import save_checkpoint

        payload: dict[str, Any] = {k: unwrap_model(v).state_dict() for k, v in self.save_dict.items()}
        payload["best_metric"] = {"name": name, "value": value, "epoch": int(engine.state.epoch)}
        save_checkpoint(payload, self.path)
        self.best = value
