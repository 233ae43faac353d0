"""Every message between the server and a worker process: one frozen dataclass per kind, encoded here.

Server -> worker process: `ChildInit` (first), `Request`, `Cancel`, `Credit`, `HealthQuery`, `Stop`.
Worker process -> server: `Ready` or `SetupFailed` (first), then `Answer`, `Answers`, `Chunk`,
`Dropped`, `ErrorReport`, `HealthAnswer`, `LogEntry`, `Batches`, and `Stopped` last.

Each side matches what it reads once (`process.book` in the server, `process.child` in the worker
process). On the wire a message is a plain tuple, its kind's number and then its fields, so pickling
it runs no Python code of ours: requests and answers cross right after a model ran, with cold caches,
where every Python-level pickling hook (`__reduce__`, `__setstate__`) costs tens of µs.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, final

from litserve.codec import decode_json
from litserve.engine.messages import DropReason, Outcome, StreamItem
from litserve.exceptions import INTERNAL_ERROR
from litserve.process.wire import BadFrame
from litserve.process.wire import encode as encode_frame
from litserve.request_context import RequestContext
from litserve.status import ErrorRecord

__all__ = [
    "Answer",
    "Answers",
    "Batches",
    "Cancel",
    "ChildInit",
    "Chunk",
    "Credit",
    "Dropped",
    "ErrorReport",
    "FromChild",
    "HealthAnswer",
    "HealthQuery",
    "LogEntry",
    "Ready",
    "Request",
    "SetupFailed",
    "Stop",
    "Stopped",
    "ToChild",
    "crossable",
    "decode",
    "encode",
]


# --- server -> worker process ------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class ChildInit:
    """The first message: everything a worker process needs to start its workers."""

    api_bytes: bytes  # (LitAPI, callbacks, body model), cloudpickled by value so notebook classes work
    device: str
    worker_names: tuple[str, ...]
    sys_path: tuple[str, ...]


@final
@dataclass(frozen=True, slots=True)
class Request:
    """A request to run. `model_data` replaces `payload` for a pydantic body (validated again there)."""

    request_id: int
    payload: Any
    deadline_s: float | None
    context: RequestContext | None
    model_data: Any
    handed_s: float  # monotonic: when the server handed it over; its batch window may open then
    shape: Any  # for a spec's answer codec (engine.answer_codec)
    queued_s: float  # monotonic: when the server queued it (its queue wait began)
    followed: bool  # more requests waited or were on their way when it was handed (engine.batcher)


@final
@dataclass(frozen=True, slots=True)
class Cancel:
    request_id: int
    reason: DropReason


@final
@dataclass(frozen=True, slots=True)
class Credit:
    """The stream's client took `count` more chunks: the worker process may send that many more."""

    request_id: int
    count: int


@final
@dataclass(frozen=True, slots=True)
class HealthQuery:
    token: int


@final
@dataclass(frozen=True, slots=True)
class Stop:
    """No more requests come: finish what is held within `wait_s` seconds, then say `Stopped`."""

    wait_s: float


ToChild = ChildInit | Request | Cancel | Credit | HealthQuery | Stop


# --- worker process -> server ------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class Ready:
    pid: int


@final
@dataclass(frozen=True, slots=True)
class SetupFailed:
    """The LitAPI could not be loaded or a worker's setup() raised; `original` is the pickled exception."""

    summary: str
    traceback: str
    original: bytes | None


@final
@dataclass(frozen=True, slots=True)
class Answer:
    request_id: int
    outcome: Outcome
    batches: tuple[int, ...] = ()  # the sizes of batches collected since the last message (see `Batches`)


@final
@dataclass(frozen=True, slots=True)
class Answers:
    """A batch's answers in one message."""

    items: tuple[tuple[int, Outcome], ...]
    batches: tuple[int, ...] = ()  # as Answer's


@final
@dataclass(frozen=True, slots=True)
class Chunk:
    """One stream item; a failure Outcome or STREAM_END is the request's last."""

    request_id: int
    item: StreamItem


@final
@dataclass(frozen=True, slots=True)
class Dropped:
    """The worker skipped the request (its client left or its deadline passed); it was answered already."""

    request_id: int
    reason: DropReason


@final
@dataclass(frozen=True, slots=True)
class ErrorReport:
    record: ErrorRecord


@final
@dataclass(frozen=True, slots=True)
class HealthAnswer:
    token: int
    healthy: bool


@final
@dataclass(frozen=True, slots=True)
class Stopped:
    """The worker process finished after `Stop` and exits."""


@final
@dataclass(frozen=True, slots=True)
class LogEntry:
    """What the LitAPI passed to `log(key, value)`, for the loggers in the server process."""

    key: str
    value: Any


@final
@dataclass(frozen=True, slots=True)
class Batches:
    """The sizes of batches the worker process's workers collected since its last message told them.

    An `Answer` or `Answers` carries them itself (one frame, one unpickling per answer: the common case);
    any other message is preceded by a `Batches`.
    """

    sizes: tuple[int, ...]


FromChild = (
    Ready | SetupFailed | Answer | Answers | Chunk | Dropped | ErrorReport | HealthAnswer | Stopped | LogEntry | Batches
)


_KINDS: tuple[type[Any], ...] = (
    ChildInit,
    Request,
    Cancel,
    HealthQuery,
    Stop,
    Ready,
    SetupFailed,
    Answer,
    Answers,
    Chunk,
    Dropped,
    ErrorReport,
    HealthAnswer,
    Stopped,
    LogEntry,
    Credit,
    Batches,
)
_NUMBERS = {kind: number for number, kind in enumerate(_KINDS)}


def _field_getter(kind: type[Any]) -> Callable[[Any], tuple[Any, ...]]:
    names: tuple[str, ...] = kind.__match_args__  # a dataclass's fields, in order
    if len(names) > 1:
        return operator.attrgetter(*names)  # a tuple, read in C
    if names:
        get = operator.attrgetter(names[0])
        return lambda message: (get(message),)
    return lambda message: ()


_FIELDS = {kind: _field_getter(kind) for kind in _KINDS}


def encode(message: ToChild | FromChild) -> list[bytes | memoryview]:
    """One message as the pieces of its frame. A `Request` is tagged with its id, which stays readable
    when its payload cannot be unpickled on the other side, so that request can still be answered."""
    kind = type(message)
    wire_form = (_NUMBERS[kind], *_FIELDS[kind](message))
    return encode_frame(wire_form, tag=message.request_id if isinstance(message, Request) else 0)


def crossable(outcome: Outcome) -> Outcome:
    """`outcome` with a detail that pickles here and unpickles in the server: the JSON the client gets.

    A hook's detail may be any object (an instance of a class defined in a notebook cell, or holding a
    lock); the answer's body already holds it encoded, which is all the server needs of it.
    """
    detail = outcome.detail
    if detail is None or type(detail) is str:
        return outcome
    try:
        detail = decode_json(outcome.body)["detail"]
    except Exception:  # not built by Outcome.failure (none is today): no detail to show but the generic one
        detail = INTERNAL_ERROR.detail
    return Outcome(
        outcome.status, outcome.body, outcome.content_type, outcome.headers, detail, outcome.reason, error=outcome.error
    )


def decode(wire_form: Any) -> ToChild | FromChild | BadFrame:
    """The message a frame carried (what `FrameReader.feed` returned for it); a BadFrame stays one."""
    if isinstance(wire_form, BadFrame):
        return wire_form
    try:
        number = wire_form[0]
        if type(number) is not int or not 0 <= number < len(_KINDS):
            raise ValueError(f"no message kind numbered {number!r}")
        message: ToChild | FromChild = _KINDS[number](*wire_form[1:])
    except Exception as exc:  # not one of ours: the reader goes on with the next
        return BadFrame(exc, _request_id_of(wire_form))
    return message


def _request_id_of(wire_form: Any) -> int:
    """The id of a request that could not be rebuilt (so it can still be answered), else 0."""
    try:
        if type(wire_form[0]) is int and wire_form[0] == _NUMBERS[Request] and type(wire_form[1]) is int:
            return int(wire_form[1])
    except Exception:  # not even a tuple
        pass
    return 0
