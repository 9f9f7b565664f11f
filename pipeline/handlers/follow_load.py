"""CPU threads that follow the machine's load during a run (``medsr selfsr --threads 0``).

A convolution split over OpenMP threads waits at a barrier for its slowest thread: on a 2-core CPU shared with
one busy process, a 2-thread training step whose threads are descheduled in turn fell from about 27 to under
1 step/s, where one thread keeps running at full speed. Choosing the thread count once at the start is not
enough when the load changes during a run, so :class:`FollowLoad` measures, every few seconds, how much CPU the
*other* processes took (``/proc/stat`` minus this process's own CPU time) and sets ``torch.set_num_threads``
to the cores they leave. Processes niced below this one are not counted when this one runs at nice 0: they
yield their CPU (a background training at nice 19 does not slow a step down).
"""

from __future__ import annotations

import logging
import os
import time

import torch

__all__ = ["CpuShare", "threads_for", "idle_threads", "FollowLoad"]

logger = logging.getLogger(__name__)


def threads_for(cores: int, others: float, current: int | None = None, margin: float = 0.15) -> int:
    """Threads for this process when the other processes keep ``others`` cores busy (at least 1).

    The cores left, rounded (``cores - others + 1/2``); with ``current`` given, a change needs the load to be
    ``margin`` cores past the rounding point, so a load near it does not flip the count at every check.
    """
    cores = max(1, int(cores))
    want = int(max(1, min(cores, int(cores - others + 0.5))))
    if current is not None and want != current:
        edge = cores - min(want, current) - 0.5  # the ``others`` value between the two counts
        if abs(others - edge) < margin:
            return int(current)
    return want


def _proc_stat() -> tuple[float, float] | None:
    """Seconds of CPU all processes used since boot, and the part niced processes used (``/proc/stat``)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:  # not Linux
        return None
    if not fields or fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:9]] + [0] * max(0, 8 - len(fields[1:9]))
    user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
    hz = float(os.sysconf("SC_CLK_TCK"))
    return (user + nice + system + irq + softirq + steal) / hz, nice / hz


class CpuShare:
    """The cores that other processes keep busy, measured between two calls of :meth:`others`.

    Args:
        cores: CPU cores (default ``os.cpu_count()``).
    """

    def __init__(self, cores: int | None = None) -> None:
        self.cores = int(cores or os.cpu_count() or 1)
        # niced processes yield to a nice-0 process: leave them out then (a niced one's own time is in the
        # ``nice`` column too, so this process's time must come out of the right total)
        self.ignore_niced = os.getpriority(os.PRIO_PROCESS, 0) == 0 if hasattr(os, "getpriority") else False
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        stat = _proc_stat()
        if stat is None:
            return None
        t = os.times()
        busy, niced = stat
        if self.ignore_niced:
            busy -= niced
        return time.perf_counter(), busy, t.user + t.system

    def others(self) -> float | None:
        """Cores used by other processes since the last call (``None`` where ``/proc/stat`` is missing)."""
        now = self._sample()
        last, self._last = self._last, now
        if now is None or last is None or now[0] - last[0] <= 0:
            return None
        wall = now[0] - last[0]
        return max(0.0, ((now[1] - last[1]) - (now[2] - last[2])) / wall)


def idle_threads(seconds: float = 0.5) -> int:
    """Threads for a process about to start: the cores the others leave idle over ``seconds`` (at least 1).

    Falls back to the 1-minute load average where ``/proc/stat`` is missing.
    """
    share = CpuShare()
    time.sleep(seconds)
    others = share.others()
    if others is None:
        try:
            others = os.getloadavg()[0]
        except OSError:  # pragma: no cover - not on every platform
            others = 0.0
    return threads_for(share.cores, others)


class FollowLoad:
    """Re-checks the load every ``every`` seconds of a run and sets ``torch.set_num_threads`` to follow it.

    A no-op when ``threads`` is a fixed count (``threads > 0``): only ``0`` ("the idle cores") follows.

    Args:
        threads: the run's ``threads`` setting (0: follow the load).
        every: seconds between checks (each check looks at the CPU used since the one before).
    """

    def __init__(self, threads: int = 0, every: float = 3.0) -> None:
        self.enabled = not threads
        self.every = float(every)
        self.share: CpuShare | None = None
        self.changes: list[tuple[int, int]] = []  # (iteration, threads) at each change
        self._next = 0.0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        if self.enabled:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine) -> None:
        now = time.perf_counter()
        if self.share is None:
            self.share, self._next = CpuShare(), now + self.every
            return
        if now < self._next:
            return
        self._next = now + self.every
        self.update(engine.state.iteration, self.share.others(), engine.logger)

    def update(self, iteration: int, others: float | None, log: logging.Logger | None = None) -> int:
        """Set the threads for ``others`` busy cores; returns the count in use."""
        current = torch.get_num_threads()
        if others is None:
            return current
        cores = self.share.cores if self.share is not None else os.cpu_count() or 1
        want = threads_for(cores, others, current)
        if want != current:
            torch.set_num_threads(want)
            self.changes.append((int(iteration), want))
            (log or logger).info(
                f"threads: {current} -> {want} at iteration {iteration} (other processes: {others:.2f} cores)"
            )
        return want
