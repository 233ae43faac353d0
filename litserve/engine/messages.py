"""Values that cross between the HTTP loop and the workers, and the one reply protocol they answer through."""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, final

from litserve.codec import error_body
from litserve.error_info import ErrorInfo
from litserve.exceptions import REQUEST_TIMED_OUT, ErrorResponse
from litserve.request_context import RequestContext
from litserve.status import Verdict
from litserve.timing import Timing

__all__ = [
    "STREAM_END",
    "TIMED_OUT_OUTCOME",
    "Cancellation",
    "DropReason",
    "InferenceRequest",
    "Outcome",
    "Reply",
    "StreamEnd",
    "StreamItem",
    "StreamStart",
]


class DropReason(enum.Enum):
    """Why a request was answered without running, or why its late result is thrown away."""

    DISCONNECTED = "disconnected"  # the client went away
    TIMED_OUT = "timed_out"  # its deadline passed

    @property
    def verdict(self) -> Verdict:
        return Verdict.TIMED_OUT if self is DropReason.TIMED_OUT else Verdict.CANCELLED


@final
class Cancellation:
    """A one-way flag the loop sets and workers read; the only mutable part of a request.

    Written on the loop thread (or a `predict()` caller's thread), read on worker threads: a single
    attribute store or load is atomic in CPython, and a worker that reads a stale `None` only runs
    work whose result will be dropped.
    """

    __slots__ = ("listener", "reason")

    def __init__(self) -> None:
        self.reason: DropReason | None = None
        # Set in process mode: tells the worker process holding the request.
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
    `reason` marks an answer given because the request was dropped (its deadline passed), so counters
    never infer a timeout from a status code a hook may also raise.
    """

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    detail: Any = None  # for failures: the detail, so a started stream can end with {"error": detail}
    reason: DropReason | None = None
    timing: Timing | None = None  # how its batch ran (successful answers of a batch that ran)
    error: ErrorInfo | None = None  # for failures a hook raised: the exception (the request inspector shows it)

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"not an HTTP status: {self.status}")

    @classmethod
    def failure(
        cls, answer: ErrorResponse, reason: DropReason | None = None, error: ErrorInfo | None = None
    ) -> Outcome:
        """The outcome for an error answer from the status-code table (or `error_response`)."""
        return cls(
            answer.status,
            error_body(answer.detail),
            headers=answer.headers,
            detail=answer.detail,
            reason=reason,
            error=error,
        )

    @property
    def verdict(self) -> Verdict:
        """How this answer counts: the one classification every counter uses."""
        if self.reason is not None:
            return self.reason.verdict
        if self.status < 400:
            return Verdict.OK
        return Verdict.CLIENT_ERROR if self.status < 500 else Verdict.SERVER_ERROR

    def __reduce__(self) -> tuple[type[Outcome], tuple[Any, ...]]:
        # A worker process sends one per answer, read on the server's loop right after the model ran
        # (its caches cold): unpickled as one call, not through the slots dataclass's __setstate__.
        fields = (self.status, self.body, self.content_type, self.headers, self.detail, self.reason, self.timing)
        return (Outcome, (*fields, self.error))


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

# What a stream carries: StreamStart, then bytes..., then STREAM_END or a failure Outcome.
# A failure Outcome first (before any StreamStart) is answered as a plain error response.
StreamItem = StreamStart | bytes | Outcome | StreamEnd


class Reply(Protocol):
    """Where one request's answer goes; workers answer every request through these methods only.

    Implemented by the HTTP loop's replies and the `server.predict()` caller's (`engine.bridge`), and
    by a worker process's reply to the server (`process.child`). Any thread may call them.
    """

    @property
    def batch_key(self) -> Hashable:
        """Replies with equal keys can take one `deliver_batch` (one wake-up for a whole batch)."""
        ...

    def deliver(self, outcome: Outcome) -> None:
        """The request's final answer (on a stream: its failure, before or after the first chunk)."""
        ...

    def deliver_batch(self, answers: Sequence[tuple[Reply, Outcome]]) -> None:
        """Final answers for several requests whose replies share this one's `batch_key`."""
        ...

    def push(self, item: StreamItem) -> None:
        """One item of a stream, in order: StreamStart, bytes..., then STREAM_END or a failure Outcome."""
        ...

    def abandon(self, reason: DropReason) -> None:
        """The worker dropped the request without answering (its answer was given elsewhere)."""
        ...

    def wait_for_room(self) -> None:
        """Before a stream chunk: block while the client is far behind. The loop wakes it when the stream
        ends for any reason (then the request is cancelled, unless the stream finished)."""
        ...


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """One request waiting for a worker.

    `deadline_s` is a `time.monotonic()` value, or None when the server has no timeout: a request still
    queued then is never run. A running stream is not cut by it (its timeout is an idle deadline, kept
    on the loop, which ends it through `cancellation`). `context` is built only for endpoints whose
    hooks ask for it. `shape` is for an endpoint with its own answer codec (a spec): what its route
    decided about this request's answer (e.g. OpenAI's choice index). `handed_s` is set in a worker
    process only: when (monotonic, the same clock in every process) the server handed the request over
    to that process, which is when its batch window may open (the batcher keeps it between when the
    worker began collecting and when it read the request).
    `queued_s` is when (monotonic) it was queued: its queue wait (`litserve.timing.Timing`) starts then.
    """

    payload: Any
    reply: Reply
    deadline_s: float | None
    cancellation: Cancellation
    context: RequestContext | None = None
    handed_s: float | None = None
    shape: Any = None
    queued_s: float = 0.0

    def drop_reason(self, now_s: float) -> DropReason | None:
        """Why this request must not run now, or None when it should."""
        reason = self.cancellation.reason
        if reason is None and self.deadline_s is not None and now_s >= self.deadline_s:
            return DropReason.TIMED_OUT
        return reason


# The answer to a request whose deadline passed.
TIMED_OUT_OUTCOME: Final = Outcome.failure(REQUEST_TIMED_OUT, DropReason.TIMED_OUT)
