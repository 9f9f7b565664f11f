"""End a training run when its wall-time budget is spent (``medsr selfsr --minutes``)."""

from __future__ import annotations

from typing import Any

__all__ = ["StopAtBudget"]


class StopAtBudget:
    """Ends the trainer's run once ``schedule`` (a :class:`medsr.pipeline.selfsr.schedule.BudgetCosine`) is
    done, i.e. its wall-time budget is spent; a no-op when the schedule runs on steps alone."""

    def __init__(self, schedule: Any) -> None:
        self.schedule = schedule

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine) -> None:
        if self.schedule.seconds and self.schedule.done() and engine.state.iteration < engine.state.epoch_length:
            engine.logger.info(
                f"selfsr: time budget of {self.schedule.seconds / 60:g} min spent after {engine.state.iteration} iterations"
            )
            engine.terminate()
