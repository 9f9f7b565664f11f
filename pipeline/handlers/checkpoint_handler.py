"""``CheckpointHandler``: save the whole training state of a medsr trainer (one atomic ``.pt`` file)."""

from __future__ import annotations

import os
from pathlib import Path

from ignite.engine import Engine, Events

from medsr.pipeline.engines.checkpoint import checkpoint_payload, save_checkpoint
from medsr.pipeline.engines.distributed import is_main_process
from medsr.pipeline.io import remove_stale_temps
from medsr.pipeline.runs import checkpoint_written

__all__ = ["CheckpointHandler"]


class CheckpointHandler:
    """Save the whole training state every ``every_n_iterations`` / ``every_n_epochs`` and at the end (rank 0).

    Files are ``{save_dir}/{prefix}_{iteration:08d}.pt``, written atomically; only the newest ``keep_last``
    are kept; temporary files that a killed run left in ``save_dir`` are removed at attach. Resume with
    ``resume(trainer, save_dir)`` or the trainers' ``resume_from=save_dir``.

    Not ignite's ``Checkpoint`` + ``DiskSaver(atomic=True)``: it deletes the oldest file before writing the new
    one (with ``n_saved=1`` a kill during the write leaves no checkpoint), writes without ``fsync`` into visible
    ``tmp*`` files, and does not know the files of the run it resumes. Here the new file is complete before an old
    one goes.

    Args:
        save_dir: output folder.
        every_n_iterations: save period in iterations (``None``: off).
        every_n_epochs: save period in epochs (``None``: off).
        keep_last: how many checkpoints to keep (``None`` or 0 keeps all).
        prefix: file name prefix.
        save_final: also save when the run completes.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        every_n_iterations: int | None = None,
        every_n_epochs: int | None = 1,
        keep_last: int | None = 2,
        prefix: str = "checkpoint",
        save_final: bool = True,
    ) -> None:
        for name, v in (("every_n_iterations", every_n_iterations), ("every_n_epochs", every_n_epochs)):
            if v is not None and int(v) < 1:
                raise ValueError(f"CheckpointHandler: {name} must be >= 1 or None, got {v}")
        self.save_dir = Path(save_dir)
        self.every_n_iterations = every_n_iterations
        self.every_n_epochs = every_n_epochs
        self.keep_last = keep_last
        self.prefix = prefix
        self.save_final = save_final
        self.saved: list[Path] = []

    def attach(self, engine: Engine) -> None:
        """Save on the periods given and at ``COMPLETED``; ``engine`` must be a medsr trainer."""
        if not hasattr(engine, "checkpoint_objects"):
            raise TypeError(
                f"CheckpointHandler needs a medsr trainer (with checkpoint_objects()), got {type(engine).__name__}"
            )
        if self.every_n_iterations:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=int(self.every_n_iterations)), self)
        if self.every_n_epochs:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=int(self.every_n_epochs)), self)
        if self.save_final:
            engine.add_event_handler(Events.COMPLETED, self)
        if is_main_process():  # what a killed run left half-written never counts and is removed now
            remove_stale_temps(self.save_dir)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        path = self.save_dir / f"{self.prefix}_{engine.state.iteration:08d}.pt"
        if self.saved and self.saved[-1] == path:
            return  # e.g. the last iteration is also an epoch end
        save_checkpoint(checkpoint_payload(engine), path)
        checkpoint_written(self.save_dir)  # a new run becomes runs/<bundle>/latest with its first checkpoint
        self.saved.append(path)
        if self.keep_last:
            existing = sorted(self.save_dir.glob(f"{self.prefix}_*.pt"))
            for old in existing[: max(0, len(existing) - int(self.keep_last))]:
                old.unlink(missing_ok=True)
