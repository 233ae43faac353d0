"""The one way a request enters the engine, for HTTP routes and `server.predict()` alike.

`submit` sets the deadline, makes the cancellation flag and queues the request, answering from the
status-code table when the queue is full (503 with Retry-After) or closed (503, stopping). The caller
keeps the `Submission` to end the request early: `expire()` when the deadline passes (504, queued or
running), `cancel()` when its client goes away.

The request's `deadline_s` is `timeout` after its arrival. A plain request expires then (`expire_on`).
A stream expires `timeout` after it last moved instead (`IdleDeadline`): the loop, which sees it move,
is the one place that decides; past its arrival deadline a stream is only dropped while still queued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, final

from litserve.engine.deadlines import Deadline, Deadlines
from litserve.engine.messages import TIMED_OUT_OUTCOME, Cancellation, DropReason, InferenceRequest, Outcome, Reply
from litserve.engine.request_queue import RequestQueue
from litserve.exceptions import SERVER_OVERLOADED, SHUTTING_DOWN, QueueClosedError, QueueFullError
from litserve.request_context import RequestContext

__all__ = ["OVERLOADED", "STOPPING", "IdleDeadline", "Submission", "submit"]

OVERLOADED = Outcome.failure(SERVER_OVERLOADED)
STOPPING = Outcome.failure(SHUTTING_DOWN)


@final
class Submission:
    """A queued request, as its caller holds it."""

    __slots__ = ("request",)

    def __init__(self, request: InferenceRequest) -> None:
        self.request = request

    def expire(self) -> None:
        """The deadline passed: answer 504 now. A worker that finds it queued drops it; a late result is discarded.

        The answer goes first: cancelling tells a worker process, and nothing it does may answer before the 504.
        """
        self.request.reply.deliver(TIMED_OUT_OUTCOME)
        self.request.cancellation.cancel(DropReason.TIMED_OUT)

    def cancel(self) -> None:
        """The client went away: a queued request is dropped, a running stream is ended at its next chunk."""
        self.request.cancellation.cancel(DropReason.DISCONNECTED)

    def expire_on(self, loop: asyncio.AbstractEventLoop) -> Deadline | None:
        """Call `expire` on `loop` (the caller's own, running loop) at the deadline; None without one.

        The loop keeps every request's deadline under one timer (`engine.deadlines`)."""
        deadline_s = self.request.deadline_s
        if deadline_s is None:
            return None
        return Deadlines.of(loop, "request").at(deadline_s, self.expire)


@final
class IdleDeadline:
    """A stream's deadline on the loop: it passes `timeout_s` after the stream last moved, not after it began.

    `moved()` is all a chunk costs: one clock read and a store. The one timer, when it fires, looks at
    when the stream last moved and either sleeps again for what is left or calls `on_expire`, so a
    stream that keeps moving costs one timer per `timeout_s`, not one per chunk. Loop thread only.
    """

    __slots__ = ("_loop", "_on_expire", "_timeout_s", "_timer", "moved_s")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, timeout_s: float, since_s: float, on_expire: Callable[[], None]
    ) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._on_expire = on_expire
        self.moved_s = since_s  # monotonic: when the stream last moved (first, when it arrived)
        self._timer: asyncio.TimerHandle | None = loop.call_later(since_s + timeout_s - time.monotonic(), self._check)

    def moved(self) -> None:
        """The stream moved now: its deadline is `timeout_s` from here."""
        self.moved_s = time.monotonic()

    def cancel(self) -> None:
        """The stream ended: the deadline no longer passes."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # Its owner usually holds it too: letting go of the owner's callback leaves no reference cycle,
        # so a stream's objects are freed as soon as it ends, not by the garbage collector.
        self._on_expire = _never

    def _check(self) -> None:
        left_s = self.moved_s + self._timeout_s - time.monotonic()
        if left_s > 0:
            self._timer = self._loop.call_later(left_s, self._check)
        else:
            self._timer = None
            self._on_expire()


def _never() -> None:
    """What an ended IdleDeadline would call: nothing (it never fires again)."""


def submit(
    queue: RequestQueue[InferenceRequest],
    payload: Any,
    reply: Reply,
    context: RequestContext | None,
    timeout_s: float | None,
    arrival_s: float,
    shape: Any = None,
) -> Submission | Outcome:
    """Queue a request that arrived at `arrival_s` (monotonic); the answer instead when it cannot be queued.

    `shape` goes to the endpoint's answer codec (specs only; see `engine.answer_codec`).
    """
    deadline_s = None if timeout_s is None else arrival_s + timeout_s
    request = InferenceRequest(payload, reply, deadline_s, Cancellation(), context, None, shape, time.monotonic())
    try:
        queue.put_nowait(request)
    except QueueFullError:
        return OVERLOADED
    except QueueClosedError as closed:
        return STOPPING if closed.answer is None else Outcome.failure(closed.answer)
    return Submission(request)
