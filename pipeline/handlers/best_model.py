"""``BestModelSaver``: keep the best generator of each training stage as a self-describing model file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from medsr.pipeline.engines.checkpoint import BEST_FILE
from medsr.pipeline.engines.distributed import is_main_process
from medsr.pipeline.handlers.training_stage import OFFSET_ATTR, STAGE_ATTR
from medsr.pipeline.models import read_model_info, save_model

__all__ = ["BestModelSaver"]

logger = logging.getLogger(__name__)


class BestModelSaver:
    """Save the generator whenever a validation beats the best so far *of its training stage*.

    Attach to the validator. The final stage's best goes to ``best_network.pt`` (what inference serves); an
    earlier stage named in ``stage_files`` keeps its own (``best_pretrain.pt``), so the GAN bundles serve
    their GAN generator even when the L1 pre-training scored a higher PSNR. Single-stage bundles (no
    :class:`~medsr.pipeline.handlers.TrainingStage`) write ``best_network.pt`` only.

    Each file is a model file with the score in ``metric`` and the stage in ``stage``, written atomically by
    :func:`medsr.pipeline.models.save_model` (rank 0, float32 weights).

    Not ignite's ``Checkpoint(score_function=..., n_saved=1)``: it removes the previous best file before writing
    the new one under the same name, so a kill in between would leave no ``best_network.pt``.

    Args:
        network: the generator (DDP wrappers are unwrapped).
        save_dir: output folder (the run's ``checkpoints``).
        metric_name: the metric to compare (default: the validator's key metric).
        higher_is_better: direction of ``metric_name``.
        filename: the final stage's file.
        stage_files: earlier stages and their files.
        resume: a resumed run: a stage's existing file is replaced only by a better score than the one it holds.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        save_dir: str | os.PathLike,
        metric_name: str | None = None,
        higher_is_better: bool = True,
        filename: str = BEST_FILE,
        stage_files: dict[str, str] | None = None,
        resume: bool = False,
    ) -> None:
        self.network = network
        self.save_dir = Path(save_dir)
        self.metric_name = metric_name
        self.higher_is_better = bool(higher_is_better)
        self.filename = filename
        self.stage_files = dict({"pretrain": "best_pretrain.pt"} if stage_files is None else stage_files)
        self.best: dict[str | None, float] = {}
        self.resume = bool(resume)

    def attach(self, engine: Engine) -> None:
        """Run after every validation (the validator's ``EPOCH_COMPLETED``)."""
        if self.resume:
            for stage in (None, *self.stage_files):
                path = self.path_for(stage)
                if path.is_file():
                    try:
                        metric = read_model_info(path).get("metric") or {}
                    except Exception:  # an unreadable file: the next best replaces it
                        continue
                    if metric.get("value") is not None:
                        self.best[stage] = float(metric["value"])
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def path_for(self, stage: str | None) -> Path:
        """The file of ``stage`` (``None``: a single-stage run)."""
        return self.save_dir / self.stage_files.get(stage, self.filename) if stage else self.save_dir / self.filename

    def __call__(self, engine: Engine) -> None:
        name = self.metric_name or getattr(engine.state, "key_metric_name", None)
        value = engine.state.metrics.get(name) if name else None
        if value is None:
            return
        value = float(value)
        stage = getattr(engine.state, STAGE_ATTR, None)
        best = self.best.get(stage)
        if best is not None and not (value > best if self.higher_is_better else value < best):
            return
        self.best[stage] = value
        if not is_main_process():
            return
        epoch = int(engine.state.epoch)
        metric = {
            "name": name,
            "value": value,
            "epoch": epoch,
            "global_epoch": int(getattr(engine.state, OFFSET_ATTR, 0) or 0) + epoch,
        }
        path = self.path_for(stage)
        save_model(self.network, path, {"metric": metric, "stage": stage}, half=False)
        logger.info(f"best {stage or 'model'}: {name} = {value:.4f}, saved {path}")
