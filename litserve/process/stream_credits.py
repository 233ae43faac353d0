"""Flow control for streams across the process boundary: credits, as the client takes chunks.

In thread mode a stream's worker waits for room in its `StreamWindow` before each chunk. A worker
process cannot wait on the server's semaphore, so it gets credits instead: `STREAM_WINDOW` per
streamed request to start with (`process.child`), and more each time the response body gives slots
of the window back, which the server sends as `Credit` messages a few at a time. A worker process
therefore never has more than `STREAM_WINDOW` chunks of one stream out that its client has not taken,
whatever the client's pace, and other requests in the same process are not held up by it.

Runs on the server's event loop only (the response body releases its window there), like the book.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import final

from litserve.engine.stream_window import STREAM_WINDOW, StreamWindow

__all__ = ["GRANT_STEP", "ChildCredits", "StreamCredits"]

GRANT_STEP = STREAM_WINDOW // 4  # credits sent back in one message: fewer messages, never a stall


@final
class StreamCredits:
    """The streamed requests one worker process holds: chunks ahead of their clients, credits owed."""

    def __init__(self, grant: Callable[[int, int], None]) -> None:
        self._grant = grant  # sends `count` credits for a request to the worker process
        self._ahead: dict[int, int] = {}  # chunks received from the process that the client has not taken
        self._owed: dict[int, int] = {}  # slots given back and not yet granted
        self.most_ahead = 0  # the high-water mark of `_ahead` over every stream so far

    def follow(self, request_id: int, window: StreamWindow) -> None:
        """A streamed request went to the worker process: count its chunks, grant what its body takes."""
        self._ahead[request_id] = 0
        self._owed[request_id] = 0
        window.listener = functools.partial(self._taken, request_id)

    def received(self, request_id: int) -> None:
        """A chunk of the request came from the worker process (it spent one credit on it)."""
        ahead = self._ahead.get(request_id)
        if ahead is not None:
            ahead += 1
            self._ahead[request_id] = ahead
            if ahead > self.most_ahead:
                self.most_ahead = ahead

    def forget(self, request_id: int) -> None:
        """The request's last item came (or the process is gone): no more credits for it."""
        self._ahead.pop(request_id, None)
        self._owed.pop(request_id, None)

    def _taken(self, request_id: int, count: int) -> None:
        ahead = self._ahead.get(request_id)
        if ahead is None:
            return
        self._ahead[request_id] = max(0, ahead - count)
        owed = self._owed[request_id] + count
        if owed >= GRANT_STEP:
            self._grant(request_id, owed)
            owed = 0
        self._owed[request_id] = owed


@final
class ChildCredits:
    """One streamed request's credits in the worker process: `take` one per chunk, `grant` more.

    `take` runs on the stream's worker thread only, `grant` on whichever thread read the `Credit` (or
    `Cancel`). The credits the worker holds are its own count, so a chunk costs a decrement; the lock
    is taken only when they run out, about once per `GRANT_STEP` chunks.
    """

    __slots__ = ("_granted", "_held", "_ready")

    def __init__(self, credits: int = STREAM_WINDOW) -> None:
        self._held = credits  # the worker thread's own
        self._granted = 0  # granted since the worker last took them; under the condition's lock
        self._ready = threading.Condition(threading.Lock())

    def take(self) -> None:
        """Spend one credit, waiting for a grant when none is left."""
        if self._held:
            self._held -= 1
            return
        with self._ready:
            while not self._granted:
                self._ready.wait()
            self._held, self._granted = self._granted - 1, 0

    def grant(self, count: int) -> None:
        with self._ready:
            self._granted += count
            self._ready.notify()
