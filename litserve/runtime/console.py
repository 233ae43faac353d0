"""What only `run()` does to the process: show litserve's log lines, and stop on SIGINT or SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["StopRequested", "show_logs", "stop_on_signals"]


class StopRequested(BaseException):
    """Raised in run()'s thread by SIGTERM, so it unwinds like Ctrl+C (a BaseException on purpose)."""


def show_logs(level: str) -> None:
    """Send litserve's log lines to stderr unless the user configured logging already."""
    logger = logging.getLogger("litserve")
    logger.setLevel(level.upper())
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(handler)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While run() blocks, SIGINT and SIGTERM raise `StopRequested` once; later ones are ignored.

    Only the first signal interrupts: a second one (GNU `timeout` signals the process and its group)
    must not break the stop that the first one started. SIGINT is handled even when the process was
    started with it ignored (`cmd &` in a script). Only the main thread may set handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not received.is_set():
            received.set()
            raise StopRequested()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
