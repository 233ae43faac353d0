"""Synchronisation between a test and its LitAPI's hooks, in worker threads or in worker processes.

A LitAPI is deep-copied per worker thread and pickled into worker processes, so plain threading
events would not reach the test from a child process. These primitives are named pipes (FIFOs) and
files in a private temporary folder: the test process holds each FIFO open read-write, so any
process can open it and nobody ever waits on a FIFO with no other end. They pickle by path and
deep-copy to themselves. Every wait is bounded; nothing polls.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import tempfile
import time
import uuid
from typing import Any

_directories: list[str] = []


def _directory() -> str:
    if not _directories:
        _directories.append(tempfile.mkdtemp(prefix="litserve-test-sync-"))
    return _directories[0]


def remove_all() -> None:
    """Delete every FIFO and file made by this module (called once at the end of the session)."""
    while _directories:
        shutil.rmtree(_directories.pop(), ignore_errors=True)


class CrossSemaphore:
    """A counting semaphore any process can release or acquire (a token is one byte in a FIFO)."""

    def __init__(self) -> None:
        self.path = os.path.join(_directory(), f"fifo-{uuid.uuid4().hex}")
        os.mkfifo(self.path)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        self._owner: int | None = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._fd = None
        self._owner = None

    def __deepcopy__(self, memo: dict[int, Any]) -> CrossSemaphore:
        return self

    def _owned_fd(self) -> int | None:
        return self._fd if self._owner == os.getpid() else None

    def release(self, count: int = 1) -> None:
        fd = self._owned_fd()
        if fd is not None:
            os.write(fd, b"x" * count)
            return
        # The test process holds the FIFO open, so this open returns at once.
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.write(fd, b"x" * count)
        finally:
            os.close(fd)

    def acquire(self, timeout: float = 10.0) -> bool:
        """Take one token, waiting up to `timeout` seconds; False if none came."""
        fd = self._owned_fd()
        opened = fd is None
        if fd is None:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                readable, _, _ = select.select([fd], [], [], remaining)
                if not readable:
                    return False
                try:
                    if os.read(fd, 1):
                        return True
                except BlockingIOError:
                    continue  # another waiter took this token first
        finally:
            if opened:
                os.close(fd)


class CrossEvent:
    """A one-way gate: `set()` lets every present and future `wait()` through (up to 10,000 waits)."""

    def __init__(self) -> None:
        self._tokens = CrossSemaphore()
        self._flag = os.path.join(_directory(), f"flag-{uuid.uuid4().hex}")

    def __deepcopy__(self, memo: dict[int, Any]) -> CrossEvent:
        return self

    @property
    def path(self) -> str:
        """The FIFO a process outside Python's reach can read one byte from to wait for the gate."""
        return self._tokens.path

    def set(self) -> None:
        if not os.path.exists(self._flag):
            open(self._flag, "w").close()
            self._tokens.release(10_000)

    def is_set(self) -> bool:
        return os.path.exists(self._flag)

    def wait(self, timeout: float = 10.0) -> bool:
        return self._tokens.acquire(timeout)


class CrossLog:
    """An append-only list of JSON-able values that worker processes write and the test reads."""

    def __init__(self) -> None:
        self.path = os.path.join(_directory(), f"log-{uuid.uuid4().hex}")
        open(self.path, "w").close()

    def __deepcopy__(self, memo: dict[int, Any]) -> CrossLog:
        return self

    def append(self, value: Any) -> None:
        # One short write with O_APPEND: lines from several processes never interleave.
        with open(self.path, "a") as log:
            log.write(json.dumps(value) + "\n")

    def values(self) -> list[Any]:
        with open(self.path) as log:
            return [json.loads(line) for line in log if line.strip()]
