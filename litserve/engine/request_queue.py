"""A bounded, closable, thread-safe queue of requests shared by the workers of one endpoint."""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar, final

from litserve.exceptions import ErrorResponse, QueueClosedError, QueueFullError

__all__ = ["RequestQueue"]

T = TypeVar("T")


@final
class RequestQueue(Generic[T]):
    """Many producers (the HTTP loop), many consumers (workers).

    A deque under one lock, and a stack of sleeping consumers: each put wakes the consumer that went
    to sleep last. So at low load one worker takes request after request with its model warm in
    cache, instead of the workers taking turns (turns cost the MLP benchmark's heavy model about
    0.1 ms per request with two workers), and a worker gathering a batch (it sleeps with a timeout
    after its first item, so it is the latest to sleep) gets the next request before an idle one
    does. A request only ever goes to a sleeping worker, so a busy worker never makes another wait.

    Not `queue.SimpleQueue`: on CPython 3.11 its `get(timeout=...)` can block forever when two
    consumers race for one item (the one that loses loops again with a deadline already past, which
    its C code turns into "no timeout"), which stranded a half-collected batch until the next request
    came. Not `threading.Condition` either: it wakes the consumer that has slept longest.

    `on_put`, when set, is called after each put, on the putting thread (process mode sends the
    request to a worker process right there).
    """

    def __init__(self, max_size: int | None = None) -> None:
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_queue_size must be >= 1 or None for no bound, got {max_size}")
        self._items: collections.deque[T] = collections.deque()
        self._lock = threading.Lock()
        self._sleepers: list[threading.Lock] = []  # one held lock per sleeping consumer, the latest last
        self._max_size = max_size
        self._is_closed = False
        self._closed_answer: ErrorResponse | None = None
        self.on_put: Callable[[], None] | None = None
        # Requests admitted and being read, not yet put (written on the HTTP loop only, read by workers).
        self.coming = 0
        # Requests taken by a worker process that wait inside it to start (process mode; written on the
        # HTTP loop only): they still wait, so they count toward the queue's depth and its bound.
        self.parked = 0

    @property
    def is_closed(self) -> bool:
        return self._is_closed

    def qsize(self) -> int:
        """How many requests wait here."""
        return len(self._items)

    def depth(self) -> int:
        """How many requests wait to start: here, and `parked` in worker processes."""
        return len(self._items) + self.parked

    def others_coming(self) -> bool:
        """A request waits here or is on its way (`coming`): a worker gathering a batch should wait for it."""
        return bool(self._items) or self.coming > 0

    def sleeping(self) -> int:
        """How many consumers wait in get() for a request."""
        return len(self._sleepers)

    def put_nowait(self, item: T) -> None:
        """Add a request, or raise QueueClosedError / QueueFullError without waiting."""
        with self._lock:
            if self._is_closed:
                raise QueueClosedError("the queue takes no new requests", self._closed_answer)
            if self._max_size is not None and len(self._items) + self.parked >= self._max_size:
                raise QueueFullError(f"{self._max_size} requests are already waiting")
            self._items.append(item)
            if self._sleepers:
                self._sleepers.pop().release()
        on_put = self.on_put
        if on_put is not None:
            on_put()

    def put_back(self, item: T) -> None:
        """Return a request a consumer took but could not hand on, to the head of the queue (no bound, no on_put)."""
        with self._lock:
            self._items.appendleft(item)
            if self._sleepers:
                self._sleepers.pop().release()

    def get(self, timeout_s: float | None = None) -> T | None:
        """Take the next request, waiting up to `timeout_s` (None: until one comes or the queue closes).

        Returns None when the queue is closed and empty. Raises `queue.Empty` when `timeout_s` passes first.
        """
        deadline_s = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                if self._is_closed:
                    return None
                remaining_s = -1.0  # Lock.acquire's "no timeout"
                if deadline_s is not None:
                    remaining_s = deadline_s - time.monotonic()
                    if remaining_s <= 0:
                        raise queue.Empty
                    remaining_s = min(remaining_s, threading.TIMEOUT_MAX)  # a longer wait loops again
                sleeper = threading.Lock()
                sleeper.acquire()
                self._sleepers.append(sleeper)
            try:
                woken = sleeper.acquire(timeout=remaining_s)
            except BaseException:
                self._leave(sleeper, pass_on=True)
                raise
            if not woken:  # if a put woke it just as the wait ended, the next pass takes that request
                self._leave(sleeper, pass_on=False)

    def _leave(self, sleeper: threading.Lock, pass_on: bool) -> None:
        """A consumer stops waiting; with `pass_on`, a wake-up it already got goes to another sleeper."""
        with self._lock:
            if sleeper in self._sleepers:
                self._sleepers.remove(sleeper)
            elif pass_on and self._items and self._sleepers:
                self._sleepers.pop().release()

    def get_nowait(self) -> T | None:
        """Take a request that is already waiting; raises `queue.Empty` if none, None if closed and empty."""
        with self._lock:
            if self._items:
                return self._items.popleft()
            if self._is_closed:
                return None
            raise queue.Empty

    def close(self, answer: ErrorResponse | None = None) -> None:
        """Refuse new requests and wake every consumer. Requests already queued are still handed out.

        `answer`: what refused requests get instead of "the server is stopping"."""
        with self._lock:
            self._is_closed = True
            self._closed_answer = answer
            while self._sleepers:
                self._sleepers.pop().release()

    def drain_nowait(self) -> list[T]:
        """Remove and return every waiting request (used at stop to answer them)."""
        with self._lock:
            drained = list(self._items)
            self._items.clear()
            return drained
