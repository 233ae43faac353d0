"""A bounded, closable, thread-safe queue of requests shared by the workers of one endpoint."""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar, final

from litserve.exceptions import QueueClosedError, QueueFullError

__all__ = ["RequestQueue"]

T = TypeVar("T")


@final
class RequestQueue(Generic[T]):
    """Many producers (the HTTP loop), many consumers (workers).

    A deque under one condition. Not `queue.SimpleQueue`: on CPython 3.11 its `get(timeout=...)` can
    block forever when two consumers race for one item (the one that loses loops again with a
    deadline already past, which its C code turns into "no timeout"), which stranded a half-collected
    batch until the next request came.

    `on_put`, when set, is called after each put, on the putting thread (process mode sends the
    request to a worker process right there).
    """

    def __init__(self, max_size: int | None = None) -> None:
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_queue_size must be >= 1 or None for no bound, got {max_size}")
        self._items: collections.deque[T] = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self._max_size = max_size
        self._is_closed = False
        self.on_put: Callable[[], None] | None = None

    @property
    def is_closed(self) -> bool:
        return self._is_closed

    def qsize(self) -> int:
        """How many requests wait."""
        return len(self._items)

    def put_nowait(self, item: T) -> None:
        """Add a request, or raise QueueClosedError / QueueFullError without waiting."""
        with self._ready:
            if self._is_closed:
                raise QueueClosedError("the server is stopping and takes no new requests")
            if self._max_size is not None and len(self._items) >= self._max_size:
                raise QueueFullError(f"{self._max_size} requests are already waiting")
            self._items.append(item)
            self._ready.notify()
        on_put = self.on_put
        if on_put is not None:
            on_put()

    def put_back(self, item: T) -> None:
        """Return a request a consumer took but could not hand on, to the head of the queue (no bound, no on_put)."""
        with self._ready:
            self._items.appendleft(item)
            self._ready.notify()

    def get(self, timeout_s: float | None = None) -> T | None:
        """Take the next request, waiting up to `timeout_s` (None: until one comes or the queue closes).

        Returns None when the queue is closed and empty. Raises `queue.Empty` when `timeout_s` passes first.
        """
        with self._ready:
            if not self._items and not self._is_closed:
                if timeout_s is None:
                    while not self._items and not self._is_closed:
                        self._ready.wait()
                else:
                    deadline_s = time.monotonic() + timeout_s
                    while not self._items and not self._is_closed:
                        remaining_s = deadline_s - time.monotonic()
                        if remaining_s <= 0:
                            raise queue.Empty
                        self._ready.wait(remaining_s)
            if self._items:
                return self._items.popleft()
            return None  # closed and empty

    def get_nowait(self) -> T | None:
        """Take a request that is already waiting; raises `queue.Empty` if none, None if closed and empty."""
        with self._ready:
            if self._items:
                return self._items.popleft()
            if self._is_closed:
                return None
            raise queue.Empty

    def close(self) -> None:
        """Refuse new requests and wake every consumer. Requests already queued are still handed out."""
        with self._ready:
            self._is_closed = True
            self._ready.notify_all()

    def drain_nowait(self) -> list[T]:
        """Remove and return every waiting request (used at stop to answer them)."""
        with self._ready:
            drained = list(self._items)
            self._items.clear()
            return drained
