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


class StreamWindow(threading.Semaphore):
    """A semaphore of `STREAM_WINDOW` slots whose releases can be followed (`listener`).

    Stability: internal.
    """

    def __init__(self, size: int = STREAM_WINDOW) -> None:
        super().__init__(size)
        # Set in process mode, on the loop, before the stream's first chunk can be sent; called on the
        # loop (the response body releases there) with the number of slots given back.
        self.listener: Callable[[int], None] | None = None

    def release(self, n: int = 1) -> None:
        listener = self.listener
        if listener is None:
            super().release(n)
        else:  # the worker waits in its own process, on its credits: nobody waits on this semaphore
            listener(n)
