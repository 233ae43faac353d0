"""How far a stream's worker may run ahead of its client: the stream window.

A synchronous worker takes a slot before each chunk (`Reply.wait_for_room`) and the response body
gives one back as it sends a chunk, so a client that reads slowly slows its stream instead of growing
the server's memory. In process mode the worker runs in another process: `listener` tells the
in-flight book each time slots come back, and the book grants them to the worker process as credits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["STREAM_WINDOW", "StreamWindow"]

# Chunks a stream may have produced and not yet sent before its (synchronous) worker waits.
STREAM_WINDOW = 64


class StreamWindow:
    """`STREAM_WINDOW` slots: the worker takes one per chunk (`acquire`), the loop gives them back (`release`).

    Not `threading.Semaphore`: that is a pure-Python Condition, and a stream paid for one at its start
    and for a Condition round per chunk (about 7 % of the loop's time in the streaming benchmark). Here
    a slot costs one uncontended C lock; the worker sleeps on a lock of its own only when no slot is free.
    One worker (the stream's) acquires; any thread may release; `listener`'s releases never wake a worker.

    Stability: internal.
    """

    __slots__ = ("_free", "_lock", "_sleeper", "listener")

    def __init__(self, size: int = STREAM_WINDOW) -> None:
        self._free = size
        self._lock = threading.Lock()
        self._sleeper: threading.Lock | None = None  # held while the worker waits for a slot
        # Set in process mode, on the loop, before the stream's first chunk can be sent; called on the
        # loop (the response body releases there) with the number of slots given back.
        self.listener: Callable[[int], None] | None = None

    def acquire(self) -> None:
        """Take a slot, waiting (without bound) until one is given back."""
        while True:
            with self._lock:
                if self._free > 0:
                    self._free -= 1
                    return
                sleeper = self._sleeper = threading.Lock()
                sleeper.acquire()
            sleeper.acquire()  # released by the next release(); then look again

    def release(self, n: int = 1) -> None:
        """Give back `n` slots (the response body sent chunks, or the stream ended: then enough to wake the worker)."""
        listener = self.listener
        if listener is not None:  # the worker waits in its own process, on its credits: nobody waits here
            listener(n)
            return
        with self._lock:
            self._free += n
            sleeper, self._sleeper = self._sleeper, None
        if sleeper is not None:
            sleeper.release()
