"""Hearing a client leave without a task that waits for it, when Hypercorn's `receive` is its queue's `get`.

Once a request's body is read, nothing reads its `receive` any more, yet the server must notice the client
going away (to drop its queued request, to cancel the route). A task blocked in `receive()` does that, at a
task's price per request: made, started, cancelled, and stepped once more to end (two thirds of the loop's
task steps for a trivial request). Hypercorn hands an app its per-request `asyncio.Queue`'s bound `get` as
`receive`, and a queue wakes its waiting getters by setting their futures; `QueueListener` adds a future of
its own to that queue's getters, so the queue's next message (in practice `http.disconnect`) wakes a
callback instead of a task. Any other `receive` (another server, a wrapped one, a Python without the
queue's `_getters`) gets None from `listen_on`, and the caller waits with a task as before.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any, final

__all__ = ["QueueListener", "listen_on"]


def listen_on(receive: Callable[[], Any], on_left: Callable[[], None]) -> QueueListener | None:
    """Call `on_left` (on the loop) when `receive` yields `http.disconnect`; None if `receive` is not a queue's get."""
    queue = getattr(receive, "__self__", None)
    if type(queue) is not asyncio.Queue or getattr(receive, "__func__", None) is not asyncio.Queue.get:
        return None
    getters = getattr(queue, "_getters", None)
    if not isinstance(getters, collections.deque):
        return None
    return QueueListener(queue, getters, on_left)


@final
class QueueListener:
    """A getter future of our own on a request's receive queue: its messages reach `on_left` as they come."""

    __slots__ = ("_future", "_getters", "_on_left", "_queue")

    def __init__(
        self, queue: asyncio.Queue[Any], getters: collections.deque[asyncio.Future[None]], on_left: Callable[[], None]
    ) -> None:
        self._queue = queue
        self._getters = getters
        self._on_left: Callable[[], None] | None = on_left
        self._future: asyncio.Future[None] | None = None
        self._take()

    def stop(self) -> None:
        """The request is answered: stop listening (the queue forgets our getter, as a cancelled get does)."""
        self._on_left = None
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.cancel()
            try:
                self._getters.remove(future)
            except ValueError:
                pass

    def _take(self) -> None:
        """Read what the queue holds; wait (with a getter future) for more unless the client left."""
        queue = self._queue
        while self._on_left is not None:
            try:
                message = queue.get_nowait()
            except asyncio.QueueEmpty:
                future = self._future = asyncio.get_running_loop().create_future()
                future.add_done_callback(self._woken)
                self._getters.append(future)
                return
            if message.get("type") == "http.disconnect":
                on_left, self._on_left = self._on_left, None
                on_left()
                return

    def _woken(self, future: asyncio.Future[None]) -> None:
        if future.cancelled() or future is not self._future:
            return
        self._future = None
        self._take()
