"""A bounded, closable, thread-safe queue of requests shared by the workers of one endpoint."""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Final, Generic, TypeVar, final

from litserve.exceptions import QueueClosedError, QueueFullError

__all__ = ["RequestQueue"]

T = TypeVar("T")


class _Closed:
    """Marker put on the queue by close(); each consumer that takes it puts it back for the next."""


_CLOSED: Final = _Closed()


@final
class RequestQueue(Generic[T]):
    """Many producers (the HTTP loop), many consumers (workers).

    Built on `queue.SimpleQueue`, whose put and get are implemented in C: the hot path costs one
    put and one get. The size bound is checked before the put, so under a burst it can be exceeded by
    at most the number of concurrent producers; the HTTP loop is one thread, so it is exact there.
    `on_put`, when set, is called after each put, on the putting thread (process mode sends the
    request to a worker process right there).
    """

    def __init__(self, max_size: int | None = None) -> None:
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_queue_size must be >= 1 or None for no bound, got {max_size}")
        self._items: queue.SimpleQueue[T | _Closed] = queue.SimpleQueue()
        self._max_size = max_size
        self._is_closed = False
        self.on_put: Callable[[], None] | None = None

    @property
    def is_closed(self) -> bool:
        return self._is_closed

    def qsize(self) -> int:
        """How many requests wait (the close marker, when present, is not counted)."""
        return max(0, self._items.qsize() - (1 if self._is_closed else 0))

    def put_nowait(self, item: T) -> None:
        """Add a request, or raise QueueClosedError / QueueFullError without waiting."""
        if self._is_closed:
            raise QueueClosedError("the server is stopping and takes no new requests")
        if self._max_size is not None and self._items.qsize() >= self._max_size:
            raise QueueFullError(f"{self._max_size} requests are already waiting")
        self._items.put(item)
        on_put = self.on_put
        if on_put is not None:
            on_put()

    def get(self, timeout_s: float | None = None) -> T | None:
        """Take the next request, waiting up to `timeout_s` (None: until one comes or the queue closes).

        Returns None when the queue is closed. Raises `queue.Empty` when `timeout_s` passes first.
        """
        item = self._items.get(timeout=timeout_s)
        if isinstance(item, _Closed):
            self._items.put(item)  # wake the next consumer too
            return None
        return item

    def get_nowait(self) -> T | None:
        """Take a request that is already waiting; raises `queue.Empty` if none, None if closed."""
        item = self._items.get_nowait()
        if isinstance(item, _Closed):
            self._items.put(item)
            return None
        return item

    def close(self) -> None:
        """Refuse new requests and wake every consumer. Requests already queued are still handed out."""
        if not self._is_closed:
            self._is_closed = True
            self._items.put(_CLOSED)

    def drain_nowait(self) -> list[T]:
        """Remove and return every waiting request (used at stop to answer them)."""
        drained: list[T] = []
        while True:
            try:
                item = self._items.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, _Closed):
                drained.append(item)
        if self._is_closed:
            self._items.put(_CLOSED)
        return drained
