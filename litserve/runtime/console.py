"""What only `run()` does to the process: show litserve's log lines, and stop on SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["StopRequested", "show_logs", "stop_on_sigterm"]


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
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into `StopRequested` while run() blocks; only the main thread may set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise StopRequested()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
