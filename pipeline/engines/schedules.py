"""Learning-rate schedules as bundle options: ``constant``, ``cosine`` and ``step`` (as in the studies), each with
an optional linear warm-up, stepped once per iteration by the medsr trainers."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["SCHEDULES", "make_lr_scheduler", "schedule_factor"]

SCHEDULES = ("constant", "cosine", "step")


def schedule_factor(
    it: int,
    schedule: str,
    total_iters: int,
    warmup_iters: int = 0,
    step_iters: int | None = None,
    gamma: float = 0.5,
    min_factor: float = 0.0,
) -> float:
    """Multiplier of the base learning rate after ``it`` iterations.

    Args:
        it: iterations done.
        schedule: ``"constant"``, ``"cosine"`` (half cosine from 1 to ``min_factor`` over ``total_iters``) or
            ``"step"`` (times ``gamma`` every ``step_iters``; default: at 50 % and 75 % of ``total_iters``).
        total_iters: length of the run in iterations.
        warmup_iters: linear warm-up from ``1 / warmup_iters`` to 1 first.
        step_iters: step interval of ``"step"``.
        gamma: factor of each step.
        min_factor: floor of ``"cosine"``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule: expected one of {SCHEDULES}, got {schedule!r}")
    if warmup_iters > 0 and it < warmup_iters:
        return (it + 1) / warmup_iters
    if schedule == "constant":
        return 1.0
    span = max(1, total_iters - warmup_iters)
    t = min(1.0, max(0, it - warmup_iters) / span)
    if schedule == "cosine":
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
    if step_iters:
        return gamma ** (max(0, it - warmup_iters) // step_iters)
    return gamma ** ((t >= 0.5) + (t >= 0.75))


def make_lr_scheduler(
    optimizer: Optimizer,
    schedule: str = "constant",
    total_iters: int = 1,
    warmup_iters: int = 0,
    step_iters: int | None = None,
    gamma: float = 0.5,
    min_factor: float = 0.0,
) -> LambdaLR | None:
    """A per-iteration :class:`~torch.optim.lr_scheduler.LambdaLR` for :func:`schedule_factor`
    (``None`` for a constant rate without warm-up, so nothing is stepped)."""
    if schedule == "constant" and warmup_iters <= 0:
        return None
    if total_iters < 1:
        raise ValueError(f"lr_schedule: total_iters must be >= 1, got {total_iters}")
    return LambdaLR(
        optimizer,
        lambda it: schedule_factor(it, schedule, total_iters, warmup_iters, step_iters, gamma, min_factor),
    )
