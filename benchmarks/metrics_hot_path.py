"""The per-request work the metrics and timing add, timed in-process (a shared machine's wrk figures are
too noisy for a few microseconds): on the loop, counting an answer; in the worker, its Timing.

Usage: python benchmarks/metrics_hot_path.py
"""

from __future__ import annotations

import collections
import logging
import time
import timeit

from litserve.status import EndpointCounters
from litserve.timing import Timing, set_current
from litserve.web.answer_timing import ACCESS_LOG

N = 200_000


def main() -> None:
    counters = EndpointCounters()
    timing = Timing(0.0002, 1, 0.00001)
    old = collections.deque(maxlen=1000)  # what the route did before: one latency appended

    def before() -> None:
        old.append(0.0007)

    def loop_side() -> None:  # the route's share: answered() and the access-log check
        counters.answered(200, 0.0007, timing)
        ACCESS_LOG.isEnabledFor(logging.DEBUG)

    queued_s = time.monotonic()

    def worker_side() -> None:  # the pipeline's share for a batch of one: two clock reads, a Timing, the contextvar
        started_s = time.monotonic()
        predict_s = time.monotonic() - started_s
        value = Timing(max(0.0, started_s - queued_s), 1, predict_s)
        set_current(value)
        set_current(None)

    for name, work in (("before (latency only)", before), ("loop side", loop_side), ("worker side", worker_side)):
        best = min(timeit.repeat(work, number=N, repeat=5)) / N * 1e6
        print(f"{name:>22}: {best:.3f} us per request")


if __name__ == "__main__":
    main()
