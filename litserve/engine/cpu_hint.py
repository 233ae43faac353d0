"""A one-time hint that thread-mode workers are CPU-bound, so worker processes would likely serve faster.

In thread mode the HTTP thread and every worker thread share one interpreter lock. When the hooks hold
it most of the time, the HTTP thread waits for it and the server runs at the speed of one core, while
`worker_mode="process"` would put the hooks on other cores. Measured on the benchmark machine
(README, "Performance"), that is the case for small CPU models served unbatched under concurrency.

`CpuMeter` is shared by an endpoint's worker threads. Around each batch a worker reads its own thread's
CPU clock (`time.thread_time`, which only advances while the thread runs, that is while it holds the
lock in pure-Python code and, in C code that releases it, while it computes); the meter sums these over
a window of at least `MIN_REQUESTS` requests and `MIN_WINDOW_S` seconds. If the workers' CPU time is at
least `GIL_SHARE` of the window's wall time, and the machine lets this process use more than one core,
it logs the hint once and measures no more; otherwise a new window begins. A sleeping or waiting hook
(IO, a remote call, a GPU kernel being awaited) uses no CPU and never triggers it.

The sums are updated by several threads without a lock: a lost update only shifts a hint's timing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import final

__all__ = ["GIL_SHARE", "MIN_REQUESTS", "MIN_WINDOW_S", "CpuMeter", "usable_cores"]

logger = logging.getLogger(__name__)

MIN_REQUESTS = 32
MIN_WINDOW_S = 0.5
GIL_SHARE = 0.5

HINT = (
    "workers of %s are CPU-bound in thread mode (their hooks used %.0f%% of a core over the last %d requests, "
    "sharing the interpreter lock with the HTTP server): worker_mode='process' may be faster on this "
    "%d-core machine (see the README's performance section)"
)


def usable_cores() -> int:
    """How many cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@final
class CpuMeter:
    """Worker threads' CPU time against wall time, for one endpoint; see the module docstring.

    Stability: internal.
    """

    __slots__ = ("_cores", "_cpu_s", "_path", "_requests", "_since_s", "_wall", "active")

    def __init__(self, path: str, cores: int | None = None, wall: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._cores = usable_cores() if cores is None else cores
        self._wall = wall
        self.active = self._cores > 1  # read by the workers before each batch: off once the hint is given
        self._since_s: float | None = None
        self._cpu_s = 0.0
        self._requests = 0

    def ran(self, cpu_s: float, requests: int) -> None:
        """A worker's batch of `requests` used `cpu_s` of its thread's CPU time."""
        now_s = self._wall()
        since_s = self._since_s
        if since_s is None:
            self._since_s = now_s
            return  # the window starts with the first batch seen: its time before now is not in it
        self._cpu_s += cpu_s
        self._requests += requests
        elapsed_s = now_s - since_s
        if self._requests < MIN_REQUESTS or elapsed_s < MIN_WINDOW_S:
            return
        share = self._cpu_s / elapsed_s
        if share >= GIL_SHARE:
            self.active = False
            logger.info(HINT, self._path, share * 100, self._requests, self._cores)
        self._since_s, self._cpu_s, self._requests = now_s, 0.0, 0
