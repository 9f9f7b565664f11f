"""A progress bar for a run that ends on a wall-time budget: elapsed time against the budget, not a step count."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["BudgetProgress"]


class BudgetProgress:
    """A tqdm bar over the run's schedule (a :class:`medsr.pipeline.selfsr.schedule.BudgetCosine`).

    With a time budget the bar counts seconds against it (``143/540 s``), with steps, speed, loss and threads
    after it; a schedule on steps alone counts steps. The bar is redrawn at most every ``refresh`` seconds.

    Args:
        schedule: the schedule that ends the run (``seconds``, ``steps``, ``step_count``, ``elapsed()``).
        refresh: seconds between redraws.
        desc: the bar's label.
    """

    def __init__(self, schedule: Any, refresh: float = 0.5, desc: str = "selfsr training") -> None:
        self.schedule = schedule
        self.refresh = float(refresh)
        self.desc = desc
        self.bar = None
        self._next = 0.0
        self._start_step = 0
        self._t0 = 0.0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.COMPLETED, self.close)
        engine.add_event_handler(Events.TERMINATE, self.close)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.close)

    @property
    def timed(self) -> bool:
        return bool(self.schedule.seconds)

    def start(self, engine) -> None:
        from tqdm.auto import tqdm

        self._start_step, self._t0 = self.schedule.step_count, time.perf_counter()
        if self.timed:
            fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s{postfix}"
            self.bar = tqdm(total=round(self.schedule.seconds), desc=self.desc, bar_format=fmt, leave=False)
        else:
            self.bar = tqdm(total=self.schedule.steps, desc=self.desc, unit="step", leave=False)

    def _postfix(self, engine) -> str:
        import torch

        steps = self.schedule.step_count
        rate = (steps - self._start_step) / max(1e-9, time.perf_counter() - self._t0)
        loss = engine.state.output.get("loss") if isinstance(engine.state.output, dict) else None
        text = f"step {steps}, {rate:.1f} steps/s, threads {torch.get_num_threads()}"
        return text + (f", loss {float(loss):.4g}" if loss is not None else "")

    def update(self, engine) -> None:
        now = time.perf_counter()
        if self.bar is None or now < self._next:
            return
        self._next = now + self.refresh
        if self.timed:
            self.bar.n = min(self.schedule.elapsed(), self.schedule.seconds)
            self.bar.set_postfix_str(self._postfix(engine), refresh=False)
            self.bar.refresh()
        else:
            self.bar.n = self.schedule.step_count
            self.bar.set_postfix_str(self._postfix(engine))

    def close(self, engine) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
