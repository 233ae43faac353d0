"""The one doorway from worker threads (and other threads) into the HTTP thread's event loop.

Only this module calls `call_soon_threadsafe`. Worker threads never touch asyncio objects: they hold
a `Reply` and pass it back here. A future is resolved only if it is still pending, so a late result
for a request that timed out or whose client left is dropped on the loop, silently.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = [
    "ChannelReply",
    "FutureReply",
    "Reply",
    "StreamReply",
    "abandon",
    "call_in_loop",
    "deliver",
    "deliver_all",
    "deliver_here",
    "push",
    "push_here",
    "wait_for_room",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Reply(Generic[T]):
    """Where a result for one request goes: a future owned by `loop`."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]


@dataclass(frozen=True, slots=True)
class FutureReply(Generic[T]):
    """Where a result goes when a thread, not a loop, waits for it (`LitServer.predict`)."""

    future: concurrent.futures.Future[T]


@dataclass(frozen=True, slots=True)
class ChannelReply:
    """Where a result goes in a worker process: a message to the parent, which owns the real reply.

    `send` writes one message to the parent (thread-safe); messages are `(kind, request_id, value)`
    with kind "result", "chunk" or "dropped", or `("results", [(request_id, value), ...])`.
    """

    request_id: int
    send: Callable[[Any], None]


@dataclass(frozen=True, slots=True)
class StreamReply(Generic[T]):
    """Where a streamed request's chunks go: an asyncio.Queue owned by `loop`, read by the response body.

    `window` bounds how many chunks may wait unsent: a synchronous worker takes a slot per chunk and
    the response body gives it back as it sends, so a slow client slows its stream, not the memory.
    """

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[T]
    window: threading.Semaphore | None = None


def wait_for_room(reply: Any, timeout_s: float | None) -> bool:
    """Called on a worker thread before a chunk: block while the stream's client is this far behind.

    False when `timeout_s` passed first. Replies without a window never wait.
    """
    if isinstance(reply, StreamReply) and reply.window is not None:
        return reply.window.acquire(timeout=timeout_s)
    return True


def push(reply: StreamReply[T] | ChannelReply, item: T) -> None:
    """Called on any thread: append one item to a stream. Items arrive in the order pushed."""
    if isinstance(reply, ChannelReply):
        reply.send(("chunk", reply.request_id, item))
        return
    try:
        reply.loop.call_soon_threadsafe(reply.queue.put_nowait, item)
    except RuntimeError:
        pass  # the loop is closed: the server stopped and the stream is gone with it


def deliver(reply: Reply[T] | FutureReply[T] | ChannelReply, value: T) -> None:
    """Called on any thread: hand `value` to the request awaiting `reply`."""
    if isinstance(reply, FutureReply):
        _set_future_if_pending(reply.future, value)
        return
    if isinstance(reply, ChannelReply):
        reply.send(("result", reply.request_id, value))
        return
    try:
        reply.loop.call_soon_threadsafe(_set_if_pending, reply.future, value)
    except RuntimeError:
        # The loop is closed: the server stopped and the request is gone with it.
        pass


def deliver_here(reply: Reply[T] | FutureReply[T] | ChannelReply, value: T) -> None:
    """`deliver`, called on the thread of the reply's own loop (while it runs): no wake-up needed."""
    if isinstance(reply, Reply):
        _set_if_pending(reply.future, value)
    else:
        deliver(reply, value)


def push_here(reply: StreamReply[T], item: T) -> None:
    """`push`, called on the thread of the stream's own loop (while it runs)."""
    reply.queue.put_nowait(item)


def deliver_all(results: Iterable[tuple[Reply[T] | FutureReply[T] | ChannelReply, T]]) -> None:
    """Hand several results back with one wake-up of each loop (a batch costs one crossing)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[T], T]]] = {}
    by_channel: dict[Callable[[Any], None], list[tuple[int, T]]] = {}
    for reply, value in results:
        if isinstance(reply, FutureReply):
            _set_future_if_pending(reply.future, value)
        elif isinstance(reply, ChannelReply):
            by_channel.setdefault(reply.send, []).append((reply.request_id, value))
        else:
            by_loop.setdefault(reply.loop, []).append((reply.future, value))
    for send, items in by_channel.items():
        send(("results", items))
    for loop, pairs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_set_all_pending, pairs)
        except RuntimeError:
            pass


def abandon(reply: Any, reason: Any) -> None:
    """A worker dropped the request without answering (client gone, deadline passed).

    Its HTTP answer was already given on the loop, so only a worker process tells its parent, which
    keeps a record of every request it handed over.
    """
    if isinstance(reply, ChannelReply):
        reply.send(("dropped", reply.request_id, reason))


def call_in_loop(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> bool:
    """Schedule `callback(*args)` on `loop` from another thread; False if the loop is already closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


def _set_future_if_pending(future: concurrent.futures.Future[T], value: T) -> None:
    try:
        future.set_result(value)
    except concurrent.futures.InvalidStateError:
        pass  # the caller gave up waiting (timeout): the late result is dropped


def _set_if_pending(future: asyncio.Future[T], value: T) -> None:
    # Runs on the loop. If the request timed out or its client left while predict ran,
    # the future is already done and the late result is dropped here.
    if not future.done():
        future.set_result(value)


def _set_all_pending(pairs: list[tuple[asyncio.Future[T], T]]) -> None:
    for future, value in pairs:
        if not future.done():
            future.set_result(value)
