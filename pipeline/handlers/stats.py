"""``QuietStatsHandler``: MONAI's ``StatsHandler`` without the traceback it logs when a run fails."""

from __future__ import annotations

from ignite.engine import Engine
from monai.handlers import StatsHandler

__all__ = ["QuietStatsHandler"]


class QuietStatsHandler(StatsHandler):
    """MONAI's :class:`~monai.handlers.StatsHandler` (same arguments, same iteration and epoch lines) that
    re-raises an error without logging it: the entry point reports it once, as one line
    (:mod:`medsr.pipeline.errors`; ``--debug`` / ``MEDSR_DEBUG=1`` print the traceback there)."""

    def exception_raised(self, _engine: Engine, e: Exception) -> None:
        """Re-raise ``e`` (MONAI's version logs it with its traceback first)."""
        raise e
