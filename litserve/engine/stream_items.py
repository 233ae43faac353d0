"""A stream's items on the HTTP loop, in the order they came: what `asyncio.Queue` did for a stream, for less.

A stream passes every chunk through here: the worker's items arrive in runs (`StreamReply` drains them on
the loop) and the stream's response body takes them one by one. `asyncio.Queue` paid for what a stream
never uses (a size bound, putters, `task_done` bookkeeping, a coroutine per `get` even when an item was
waiting): about 6 % of the loop's time in the streaming benchmark. Here a put is an append, a run is one
`extend`, and the one consumer sleeps on a future only when nothing waits. Loop thread only.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable
from typing import final

from litserve.engine.messages import StreamItem

__all__ = ["StreamItems"]


@final
class StreamItems:
    """A first-in first-out line of one stream's items with a single consumer (the stream's body).

    Stability: internal.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: collections.deque[StreamItem] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None  # the consumer, asleep until an item comes

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: StreamItem) -> None:
        self._items.append(item)
        self._wake()

    def extend(self, items: Iterable[StreamItem]) -> None:
        """Add a run of items, in order, with one wake-up."""
        self._items.extend(items)
        self._wake()

    def take(self) -> StreamItem | None:
        """The next item if one waits, else None (no item is None): a stream's body asks this first."""
        items = self._items
        return items.popleft() if items else None

    def get_nowait(self) -> StreamItem:
        """The next item; raises `asyncio.QueueEmpty` when none waits."""
        try:
            return self._items.popleft()
        except IndexError:
            raise asyncio.QueueEmpty from None

    async def get(self) -> StreamItem:
        """The next item, waiting for it if none is here yet."""
        await self.wait()
        return self._items.popleft()

    async def wait(self) -> None:
        """Until an item waits (at once if one does)."""
        items = self._items
        while not items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():  # its consumer may have been cancelled while it slept
                waiter.set_result(None)
