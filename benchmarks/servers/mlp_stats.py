"""What the litserve MLP server counts in predict, per process: batch sizes and time in the model.

A module of its own (not globals of litserve_mlp.py) so that process mode works: litserve cloudpickles
the LitAPI, defined in litserve_mlp.py's `__main__`, by value into each worker process, and a
`threading.Lock` among its globals could not travel. This module is imported by reference instead,
so every process (the server, and each worker process) has its own counters.

A worker process ends with `os._exit` when the server stops it, so atexit hooks never run there: in a
worker process `start_reporter()` prints the counters to stderr (inherited: the server's log) as one
line, `child stats: {"pid": ..., "batch_sizes": {...}, ...}`, whenever they changed, at most every
`REPORT_INTERVAL_S`. benchmarks/mlp.py keeps the last line of each pid and waits longer than that
interval after the measured run before it stops the server, so the last line has every request.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
from typing import Any

REPORT_INTERVAL_S = 0.2
# "0" in the server's environment: its worker processes do not report (litserve_mlp.py reads it).
CHILD_STATS_ENV = "LITSERVE_MLP_CHILD_STATS"

BATCH_SIZES: collections.Counter[int] = collections.Counter()
PREDICT_S = [0.0]  # total wall-clock seconds inside the model
PREDICT_CPU_S = [0.0]  # total CPU seconds of the worker threads inside the model (time.thread_time)
FIRST_LAST_S = [0.0, 0.0]  # monotonic time of the first predict start and the last predict end
_lock = threading.Lock()  # workers_per_device > 1 means several threads count
_reporter: list[threading.Thread] = []


def record(size: int, start_s: float, end_s: float, cpu_s: float) -> None:
    """One predict call on a batch of `size` requests."""
    with _lock:
        BATCH_SIZES[size] += 1
        PREDICT_S[0] += end_s - start_s
        PREDICT_CPU_S[0] += cpu_s
        if not FIRST_LAST_S[0]:
            FIRST_LAST_S[0] = start_s
        FIRST_LAST_S[1] = end_s


def batch_sizes() -> dict[str, int]:
    with _lock:
        return {str(size): count for size, count in sorted(BATCH_SIZES.items())}


def predict_time() -> dict[str, float]:
    with _lock:
        return {
            "predict_s": round(PREDICT_S[0], 4),
            "predict_cpu_s": round(PREDICT_CPU_S[0], 4),
            "span_s": round(FIRST_LAST_S[1] - FIRST_LAST_S[0], 4),
        }


def start_reporter(extra: dict[str, Any] | None = None) -> None:
    """In a worker process: print the counters whenever they change (once per process, daemon thread).

    `extra` goes into every line as it is (the server passes `torch_threads`, to show that setup()'s
    `torch.set_num_threads(1)` holds in the worker process too).
    """
    with _lock:
        if _reporter:
            return
        thread = threading.Thread(target=_report_loop, args=(dict(extra or {}),), name="mlp-stats", daemon=True)
        _reporter.append(thread)
    thread.start()


def _report_loop(extra: dict[str, Any]) -> None:
    last: Any = None
    while True:
        now = {"pid": os.getpid(), **extra, "batch_sizes": batch_sizes(), **predict_time()}
        if now != last:
            # One write(2) per line: the server process writes to the same log, and print() under
            # PYTHONUNBUFFERED writes the text and its newline separately, so lines could run together.
            os.write(sys.stderr.fileno(), f"child stats: {json.dumps(now)}\n".encode())
            last = now
        time.sleep(REPORT_INTERVAL_S)
