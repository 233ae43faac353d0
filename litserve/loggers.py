"""Loggers: where `LitAPI.log(key, value)` entries go, processed off the request path.

A worker's `log()` only appends to a bounded queue (it never waits); one `litserve-loggers` thread in
the server process hands each entry to every `Logger`. In process mode the entries of a worker
process travel to the server process first, so loggers always run in the server process.
"""

from __future__ import annotations

import collections
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, final

from litserve.arguments import instances_of

__all__ = ["DEFAULT_LOG_CAPACITY", "LogDrain", "LogSink", "Logger", "check_loggers", "mount_of", "warn_unlogged"]

logger = logging.getLogger(__name__)

LogSink = Callable[[str, Any], None]
DEFAULT_LOG_CAPACITY = 10_000  # entries waiting for the loggers; beyond that new ones are dropped
_STOP_TIMEOUT_S = 5.0


class Logger(ABC):
    """Receives every `LitAPI.log(key, value)` entry; pass instances as `LitServer(..., loggers=[...])`.

    `process` runs on the server's `litserve-loggers` thread, one entry at a time, in the order the
    entries were logged by each worker; it may be slow without slowing requests down. An exception
    it raises is logged and the next entry is processed.

    Example:
        >>> class PrintLogger(Logger):
        ...     def process(self, key, value):
        ...         logging.getLogger("metrics").info("%s=%s", key, value)

    Stability: beta (the names are LitServe's).
    """

    def __init__(self) -> None:
        self._config: dict[str, Any] = {}

    def mount(self, path: str, app: Any) -> None:
        """Serve the ASGI `app` under `path` of the server (e.g. a Prometheus `make_asgi_app()` on /metrics).

        Call it before the logger is passed to LitServer (e.g. in `__init__`).
        """
        if not hasattr(self, "_config"):  # a subclass that did not call super().__init__()
            self._config = {}
        self._config["mount"] = {"path": path, "app": app}

    @abstractmethod
    def process(self, key: str, value: Any) -> None:
        """Handle one entry that a LitAPI logged with `self.log(key, value)`."""


def mount_of(logger: Logger) -> tuple[str, Any] | None:
    """The (path, ASGI app) a logger asked to mount, if any."""
    mount = getattr(logger, "_config", {}).get("mount")
    return None if mount is None else (mount["path"], mount["app"])


def check_loggers(loggers: Logger | Sequence[Logger] | None) -> tuple[Logger, ...]:
    """LitServer's `loggers` argument as a tuple; a TypeError says what was wrong."""
    how_to = "subclass litserve.Logger, implement process(key, value) and pass an instance, e.g. loggers=[MyLogger()]"
    return instances_of(loggers, Logger, "loggers", how_to)


_warned = threading.Event()


def warn_unlogged(key: str, value: Any) -> None:
    """What `LitAPI.log` does without loggers: warn once per process, never fail."""
    if not _warned.is_set():
        _warned.set()
        logger.warning(
            "LitAPI.log(%r, ...) was called but the server has no loggers, so the entry is dropped; "
            "pass LitServer(..., loggers=[MyLogger()]) to receive them (this warning is shown once)",
            key,
        )


@final
class LogDrain:
    """A bounded queue of log entries and the `litserve-loggers` thread that feeds them to the loggers.

    `put` may be called from any thread and never blocks: when `capacity` entries wait already, the
    new one is dropped (counted in `dropped`, warned about once). `stop` lets the thread process what
    is queued (bounded), then joins it.
    """

    def __init__(self, loggers: Sequence[Logger], capacity: int = DEFAULT_LOG_CAPACITY) -> None:
        self._loggers = tuple(loggers)
        self._capacity = capacity
        self._entries: collections.deque[tuple[str, Any]] = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._main, name="litserve-loggers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, key: str, value: Any) -> None:
        """Queue one entry for the loggers (called by `LitAPI.log` on a worker; returns at once)."""
        with self._ready:
            if self._closed:
                return
            if len(self._entries) >= self._capacity:
                self.dropped += 1
                if self.dropped == 1:
                    logger.warning("the loggers fall behind: %d entries wait; new ones are dropped", self._capacity)
                return
            self._entries.append((key, value))
            self._ready.notify()

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> bool:
        """Take no more entries, let the thread finish the queued ones and join it; True if it ended."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        if self._thread.ident is None:
            return True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning("the litserve-loggers thread did not finish within %.1f s (a slow process())", timeout_s)
            return False
        return True

    def _main(self) -> None:
        while (entry := self._next()) is not None:
            key, value = entry
            for each in self._loggers:
                try:
                    each.process(key, value)
                except Exception:
                    logger.exception("%s.process raised for the entry %r; going on", type(each).__name__, key)

    def _next(self) -> tuple[str, Any] | None:
        """The next entry, waiting for one; None once stopped and empty."""
        with self._ready:
            while not self._entries:
                if self._closed:
                    return None
                self._ready.wait()
            return self._entries.popleft()
