"""A cosine learning-rate schedule over steps or a wall-time budget, whichever ends first.

Self-supervised SR is trained per scan, so what a user has is minutes, not epochs. With ``minutes`` set, the
schedule's progress is ``max(step / steps, elapsed / budget)``: on a busy machine training ends on time with a
fully annealed learning rate, on a quiet one it ends after ``steps``.
:class:`medsr.pipeline.handlers.StopAtBudget` ends the ignite run when the schedule is done. The elapsed time is part of the state, so a resumed run continues the budget.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.optim import Optimizer

__all__ = ["BudgetCosine", "default_budget", "CPU_MINUTES", "GPU_STEPS", "UNLIMITED_STEPS"]

#: the training budget of a CPU run given neither steps nor minutes: training plus the reconstruction of the demo
#: MNI T1 (197 x 233 x 38 slices) end within 10 minutes on a shared 2-core CPU (start-up and reconstruction
#: took 47 s there at a load average of 14)
CPU_MINUTES = 8.5
#: the training steps of a GPU run given neither steps nor minutes
GPU_STEPS = 30_000
#: the step count of a run on a time budget alone (the budget ends it)
UNLIMITED_STEPS = 1_000_000


def default_budget(steps: int | None, minutes: float | None, device: Any) -> tuple[int, float | None]:
    """The ``(steps, minutes)`` a run trains for: as given; with neither, :data:`CPU_MINUTES` on a CPU and
    :data:`GPU_STEPS` elsewhere; with minutes alone, the budget ends the run."""
    import torch

    if steps is None and minutes is None:
        if torch.device(device).type == "cpu":
            return UNLIMITED_STEPS, CPU_MINUTES
        return GPU_STEPS, None
    if steps is None:
        return UNLIMITED_STEPS, minutes
    return int(steps), minutes


class BudgetCosine:
    """``lr = base · (floor + (1 - floor) · (1 + cos(π · progress)) / 2)``, stepped once per iteration.

    Args:
        optimizer: the optimizer (its current learning rates are the bases).
        steps: iterations of the full schedule.
        minutes: wall-time budget of the full schedule (``None`` or 0: steps only).
        floor: final learning rate as a fraction of the base.
        started: ``time.time()`` when the budget began (default: now); ``medsr selfsr``'s default CPU budget
            counts from the command's start, so reading the scan and building the pairs are inside it.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        steps: int,
        minutes: float | None = None,
        floor: float = 0.0,
        started: float | None = None,
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps: must be >= 1, got {steps}")
        self.optimizer = optimizer
        self.steps = int(steps)
        self.seconds = float(minutes) * 60.0 if minutes else None
        self.floor = float(floor)
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.step_count = 0
        # the budget counts from ``started`` (a ``time.time()`` stamp: the command's start, set-up included)
        self.elapsed_before = max(0.0, time.time() - float(started)) if started else 0.0
        self._t0 = time.perf_counter()

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._t0

    def progress(self) -> float:
        p = self.step_count / self.steps
        if self.seconds:
            p = max(p, self.elapsed() / self.seconds)
        return min(1.0, p)

    def done(self) -> bool:
        return self.progress() >= 1.0

    def step(self) -> None:
        self.step_count += 1
        c = 0.5 * (1.0 + math.cos(math.pi * self.progress()))
        for g, b in zip(self.optimizer.param_groups, self.base):
            g["lr"] = b * (self.floor + (1.0 - self.floor) * c)

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count, "elapsed": self.elapsed(), "base": list(self.base)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self.elapsed_before = float(state["elapsed"])
        self.base = list(state["base"])
        self._t0 = time.perf_counter()
