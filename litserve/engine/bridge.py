"""The one doorway from worker threads (and other threads) into the HTTP thread's event loop.

Only this module calls `call_soon_threadsafe`. Worker threads never touch asyncio objects: they answer
through a request's `Reply` (see `engine.messages`), and the replies here hop to the loop. A future
is resolved only if it is still pending, so a late result for a request that timed out or whose client
left is dropped on the loop, silently. A reply called on its own loop's thread sets its result at
once, without a wake-up (process mode reads answers on the loop itself).

Answers cross in runs: each loop has one `LoopInbox`, and a thread that hands it a call while a drain is
already due adds the call without waking the loop again (`call_soon_threadsafe` writes to the loop's
self-pipe, and the write lets the loop take the GIL from the worker in the middle of its batch). A loaded
loop so takes many answers per wake-up; an idle one is woken for the first at once, as before.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, cast, final

from litserve.engine.messages import STREAM_END, DropReason, Outcome, Reply, StreamItem
from litserve.engine.stream_items import StreamItems
from litserve.engine.stream_window import StreamWindow

logger = logging.getLogger(__name__)

__all__ = [
    "FutureReply",
    "LoopHandle",
    "LoopInbox",
    "LoopReply",
    "StreamReply",
    "call_in_loop",
    "deliver_all",
    "set_if_pending",
]


@final
@dataclass(frozen=True, slots=True)
class LoopHandle:
    """An event loop running on a known thread: `call` runs at once on that thread, else hops to it."""

    loop: asyncio.AbstractEventLoop
    thread_id: int

    def is_current(self) -> bool:
        # A closed loop's thread has ended, and its id may have been given to another thread since.
        return threading.get_ident() == self.thread_id and not self.loop.is_closed()

    def call(self, callback: Callable[..., Any], *args: Any) -> bool:
        """Run `callback(*args)` on the loop's thread; False if the loop is closed (nothing ran)."""
        if self.is_current():
            callback(*args)
            return True
        return call_in_loop(self.loop, callback, *args)


def call_in_loop(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> bool:
    """Schedule `callback(*args)` on `loop` from another thread; False if the loop is already closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


@final
class LoopInbox:
    """Calls handed to one loop from other threads, run on the loop in order, with one wake-up per run.

    `call` appends and asks the loop to drain only when no drain is due already. The drain clears `_due`
    before it takes the first call, so a call appended after its last look finds `_due` clear and asks
    again (an empty drain at worst). Two threads that both find `_due` clear both ask: two drains, no loss.
    """

    __slots__ = ("_calls", "_due", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = collections.deque()
        self._due = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> LoopInbox:
        """The loop's one inbox: made on first use, kept on the loop itself, so it goes with the loop."""
        inbox: LoopInbox | None = getattr(loop, _INBOX_ATTRIBUTE, None)
        if inbox is None:
            inbox = cls(loop)
            setattr(loop, _INBOX_ATTRIBUTE, inbox)
        return inbox

    def call(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run `callback(*args)` on the loop, soon; nothing runs if the loop is closed."""
        self._calls.append((callback, args))
        if self._due:  # the drain asked for earlier has not begun: it takes this call too
            if self._loop.is_closed():  # ... unless the loop closed before it ran: nothing will
                self._calls.clear()
            return
        self._due = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            self._calls.clear()  # the loop is closed: its requests are gone with it

    def _drain(self) -> None:
        self._due = False
        calls = self._calls
        while calls:
            callback, args = calls.popleft()
            try:
                callback(*args)
            except Exception:  # one failed call must not strand the calls behind it
                logger.exception("a call handed to the HTTP loop raised")


_INBOX_ATTRIBUTE = "_litserve_inbox"  # where a loop keeps its inbox


@final
class LoopReply:
    """A request awaited on the HTTP loop: its answer resolves `future`. Made on the loop's thread."""

    __slots__ = ("_inbox", "future", "loop", "thread_id")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Outcome]) -> None:
        self.loop = loop
        self.future = future
        self.thread_id = threading.get_ident()
        self._inbox = LoopInbox.of(loop)

    @property
    def batch_key(self) -> Hashable:
        return self.loop

    def deliver(self, outcome: Outcome) -> None:
        if threading.get_ident() != self.thread_id:
            self._inbox.call(set_if_pending, self.future, outcome)
            return
        try:
            set_if_pending(self.future, outcome)
        except RuntimeError:
            pass  # the loop is closed: the server stopped and the request is gone with it

    def deliver_batch(self, answers: Sequence[tuple[Reply, Outcome]]) -> None:
        # Every reply of the group shares this loop (its batch_key), so each is a LoopReply.
        pairs = [(cast(LoopReply, reply).future, outcome) for reply, outcome in answers]
        if threading.get_ident() != self.thread_id:
            self._inbox.call(_set_all_pending, pairs)
            return
        try:
            _set_all_pending(pairs)
        except RuntimeError:
            pass  # the loop is closed

    def push(self, item: StreamItem) -> None:
        raise TypeError("a non-streaming request takes one answer, not stream items")

    def abandon(self, reason: DropReason) -> None:
        """Its answer was already given on the loop."""

    def wait_for_room(self) -> None:
        """A single answer takes no room."""


@final
class StreamReply:
    """A streamed request on the HTTP loop: items go to `queue`, read by the response body.

    `window` bounds how many chunks may wait unsent: a synchronous worker takes a slot per chunk and
    the response body gives it back as it sends, so a slow client slows its stream, not the memory;
    when the stream ends, for whatever reason, the body gives back enough to wake a waiting worker.
    `is_finished` turns True when the worker's last item (STREAM_END or a failure) is on its way.

    Items cross to the loop in runs: a worker thread appends to `_pending` and asks the loop to drain
    it only when no drain is due already, so a worker that is ahead of the loop pays one wake-up for
    all the chunks it made meanwhile, not one per chunk (and the loop's `LoopInbox` joins
    the drains of several streams and answers into one wake-up). The loop clears `_due` before it drains: an
    item appended after the drain's last look finds `_due` clear and asks again (an empty drain at worst).
    """

    __slots__ = ("_due", "_inbox", "_pending", "is_finished", "loop", "queue", "thread_id", "window")

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: StreamItems, window: StreamWindow) -> None:
        self.loop = loop
        self.queue = queue
        self.window = window
        self.thread_id = threading.get_ident()
        self.is_finished = False  # set by the worker's thread (or the loop), read on the loop: a hint
        self._pending: collections.deque[StreamItem] = collections.deque()
        self._due = False  # a drain is scheduled on the loop and has not begun
        self._inbox = LoopInbox.of(loop)

    @property
    def batch_key(self) -> Hashable:
        return self

    def deliver(self, outcome: Outcome) -> None:
        self.push(outcome)

    def deliver_batch(self, answers: Sequence[tuple[Reply, Outcome]]) -> None:
        for reply, outcome in answers:
            reply.deliver(outcome)

    def push(self, item: StreamItem) -> None:
        if item is STREAM_END or type(item) is Outcome:
            self.is_finished = True
        if threading.get_ident() == self.thread_id:
            self.queue.put_nowait(item)
            return
        self._pending.append(item)
        if self._due:
            return  # the drain scheduled earlier has not begun: it takes this item too
        self._due = True
        self._inbox.call(self._drain)  # (a closed loop: the stream is gone with the server)

    def _drain(self) -> None:
        # On the loop: everything the worker appended so far, in order.
        self._due = False
        pending = self._pending
        run = [pending.popleft() for _ in range(len(pending))]  # a worker may append meanwhile: it asks again
        self.queue.extend(run)

    def abandon(self, reason: DropReason) -> None:
        """The response body ended the stream already."""

    def wait_for_room(self) -> None:
        self.window.acquire()


@final
class FutureReply:
    """A request a thread waits for (`LitServer.predict`), through a concurrent future."""

    __slots__ = ("future",)

    def __init__(self, future: concurrent.futures.Future[Outcome]) -> None:
        self.future = future

    @property
    def batch_key(self) -> Hashable:
        return FutureReply

    def deliver(self, outcome: Outcome) -> None:
        try:
            self.future.set_result(outcome)
        except concurrent.futures.InvalidStateError:
            pass  # the caller gave up waiting (timeout): the late result is dropped

    def deliver_batch(self, answers: Sequence[tuple[Reply, Outcome]]) -> None:
        for reply, outcome in answers:
            reply.deliver(outcome)

    def push(self, item: StreamItem) -> None:
        raise TypeError("server.predict() does not stream; use server.client().stream(...)")

    def abandon(self, reason: DropReason) -> None:
        """The caller's own wait already ended."""

    def wait_for_room(self) -> None:
        """A single answer takes no room."""


def deliver_all(answers: Sequence[tuple[Reply, Outcome]]) -> None:
    """Hand a batch's answers back with one wake-up per destination (a batch costs one crossing)."""
    groups: dict[Hashable, list[tuple[Reply, Outcome]]] = {}
    for reply, outcome in answers:
        groups.setdefault(reply.batch_key, []).append((reply, outcome))
    for group in groups.values():
        group[0][0].deliver_batch(group)


def set_if_pending(future: asyncio.Future[Any], value: Any) -> None:
    """On the future's loop: resolve it unless it is done (a request that timed out or whose client left
    while predict ran, a health question given up on): the late value is dropped here."""
    if not future.done():
        future.set_result(value)


def _set_all_pending(pairs: list[tuple[asyncio.Future[Outcome], Outcome]]) -> None:
    for future, value in pairs:
        if not future.done():
            future.set_result(value)
