"""The one way a request enters the engine, for HTTP routes and `server.predict()` alike.

`submit` sets the deadline, makes the cancellation flag and queues the request, answering from the
status-code table when the queue is full (503 with Retry-After) or closed (503, stopping). The caller
keeps the `Submission` to end the request early: `expire()` when the deadline passes (504, queued or
running), `cancel()` when its client goes away.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, final

from litserve.engine.messages import TIMED_OUT_OUTCOME, Cancellation, DropReason, InferenceRequest, Outcome, Reply
from litserve.engine.request_queue import RequestQueue
from litserve.exceptions import SERVER_OVERLOADED, SHUTTING_DOWN, QueueClosedError, QueueFullError
from litserve.request_context import RequestContext

__all__ = ["OVERLOADED", "STOPPING", "Submission", "submit"]

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

    def expire_on(self, loop: asyncio.AbstractEventLoop) -> asyncio.TimerHandle | None:
        """Call `expire` on `loop` (the caller's own, running loop) at the deadline; None without one."""
        deadline_s = self.request.deadline_s
        if deadline_s is None:
            return None
        return loop.call_later(deadline_s - time.monotonic(), self.expire)


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
    request = InferenceRequest(payload, reply, deadline_s, Cancellation(), context, shape=shape)
    try:
        queue.put_nowait(request)
    except QueueFullError:
        return OVERLOADED
    except QueueClosedError:
        return STOPPING
    return Submission(request)
