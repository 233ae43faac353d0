"""Values that cross between the HTTP loop and the worker threads."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, final

from litserve.codec import error_body
from litserve.engine.bridge import ChannelReply, FutureReply, Reply, StreamReply
from litserve.exceptions import REQUEST_TIMED_OUT, ErrorResponse
from litserve.request_context import RequestContext

__all__ = [
    "STREAM_END",
    "TIMED_OUT_OUTCOME",
    "Cancellation",
    "DropReason",
    "InferenceRequest",
    "Outcome",
    "StreamEnd",
    "StreamItem",
    "StreamStart",
]


class DropReason(enum.Enum):
    """Why a request was answered without running, or why its late result is thrown away."""

    DISCONNECTED = "disconnected"  # the client went away
    TIMED_OUT = "timed_out"  # its deadline passed


@final
class Cancellation:
    """A one-way flag the loop sets and workers read; the only mutable part of a request.

    Written on the loop thread, read on worker threads: a single attribute store or load is atomic in
    CPython, and a worker that reads a stale `None` only runs work whose result will be dropped.
    """

    __slots__ = ("listener", "reason")

    def __init__(self) -> None:
        self.reason: DropReason | None = None
        # Set in process mode: tells the worker process holding the request (called on the loop thread).
        self.listener: Callable[[DropReason], None] | None = None

    def cancel(self, reason: DropReason) -> None:
        if self.reason is None:
            self.reason = reason
            listener = self.listener
            if listener is not None:
                listener(reason)


@final  # __reduce__ rebuilds exactly this class
@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished request as the client will see it: status, encoded body and content type.

    On a stream that already started, a failure Outcome becomes the stream's final error line.
    """

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    detail: Any = None  # for failures: the detail, so a started stream can end with {"error": detail}

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"not an HTTP status: {self.status}")

    @classmethod
    def failure(cls, answer: ErrorResponse) -> Outcome:
        """The outcome for an error answer from the status-code table (or `error_response`)."""
        return cls(answer.status, error_body(answer.detail), headers=answer.headers, detail=answer.detail)

    def __reduce__(self) -> tuple[type[Outcome], tuple[int, bytes, str, tuple[tuple[str, str], ...], Any]]:
        # A worker process sends one per answer, read on the server's loop right after the model ran
        # (its caches cold): unpickled as one call, not through the slots dataclass's __setstate__.
        return (Outcome, (self.status, self.body, self.content_type, self.headers, self.detail))


@final
@dataclass(frozen=True, slots=True)
class StreamStart:
    """The first chunk of a successful stream; its type decides the response's media type."""

    media_type: str
    data: bytes

    def __reduce__(self) -> tuple[type[StreamStart], tuple[str, bytes]]:
        return (StreamStart, (self.media_type, self.data))  # as Outcome: one call to unpickle


class StreamEnd(enum.Enum):
    """The stream finished normally."""

    END = "end"


STREAM_END: Final = StreamEnd.END

# What a stream's channel carries: StreamStart, then bytes..., then STREAM_END or a failure Outcome.
# A failure Outcome first (before any StreamStart) is answered as a plain error response.
StreamItem = StreamStart | bytes | Outcome | StreamEnd


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """One request waiting for a worker.

    `deadline_s` is a `time.monotonic()` value, or None when the server has no timeout. `context` is
    built only for endpoints whose hooks ask for it. `reply` is a `StreamReply` on streaming endpoints.
    `handed_s` is set in a worker process only: when (monotonic, the same clock in every process) the
    server handed the request over to that process, which is when its batch window may open (the
    batcher keeps it between when the worker began collecting and when it read the request).
    """

    payload: Any
    reply: Reply[Outcome] | FutureReply[Outcome] | StreamReply[StreamItem] | ChannelReply
    deadline_s: float | None
    cancellation: Cancellation
    context: RequestContext | None = None
    handed_s: float | None = None

    def drop_reason(self, now_s: float) -> DropReason | None:
        """Why this request must not run now, or None when it should."""
        reason = self.cancellation.reason
        if reason is None and self.deadline_s is not None and now_s >= self.deadline_s:
            return DropReason.TIMED_OUT
        return reason


# The answer to a request whose deadline passed; compare by status, since it may have crossed processes.
TIMED_OUT_OUTCOME: Final = Outcome.failure(REQUEST_TIMED_OUT)
