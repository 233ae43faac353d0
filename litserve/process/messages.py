"""Every message between the server and a worker process: one frozen dataclass per kind, encoded here.

Server -> worker process: `ChildInit` (first), `Request`, `Cancel`, `HealthQuery`, `Stop`.
Worker process -> server: `Ready` or `SetupFailed` (first), then `Answer`, `Answers`, `Chunk`,
`Dropped`, `ErrorReport`, `HealthAnswer`, and `Stopped` last.

Each side matches what it reads once (`process.book` in the server, `process.child` in the worker
process). Each class pickles as one constructor call (`__reduce__`): answers are read on the server's
loop right after a model ran, with cold caches, where a slots dataclass's `__setstate__` costs tens of µs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

from litserve.engine.messages import DropReason, Outcome, StreamItem
from litserve.process.wire import encode as encode_frame
from litserve.request_context import RequestContext
from litserve.status import ErrorRecord

__all__ = [
    "Answer",
    "Answers",
    "Cancel",
    "ChildInit",
    "Chunk",
    "Dropped",
    "ErrorReport",
    "FromChild",
    "HealthAnswer",
    "HealthQuery",
    "Ready",
    "Request",
    "SetupFailed",
    "Stop",
    "Stopped",
    "ToChild",
    "encode",
]


class _Message:
    """Pickled as `Class(*fields)`: one call to rebuild, and no field can be forgotten on the way."""

    __slots__ = ()

    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]:
        # A dataclass's __match_args__ names every field, in order.
        return (type(self), tuple(getattr(self, name) for name in self.__match_args__))  # type: ignore[attr-defined]


# --- server -> worker process ------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class ChildInit(_Message):
    """The first message: everything a worker process needs to start its workers."""

    api_bytes: bytes  # the LitAPI, cloudpickled by value so notebook-defined classes work
    device: str
    worker_names: tuple[str, ...]
    sys_path: tuple[str, ...]


@final
@dataclass(frozen=True, slots=True)
class Request(_Message):
    """A request to run. `model_data` replaces `payload` for a pydantic body (validated again there)."""

    request_id: int
    payload: Any
    deadline_s: float | None
    context: RequestContext | None
    model_data: Any
    handed_s: float  # monotonic: when the server handed it over; its batch window may open then


@final
@dataclass(frozen=True, slots=True)
class Cancel(_Message):
    request_id: int
    reason: DropReason


@final
@dataclass(frozen=True, slots=True)
class HealthQuery(_Message):
    token: int


@final
@dataclass(frozen=True, slots=True)
class Stop(_Message):
    """No more requests come: finish what is held within `wait_s` seconds, then say `Stopped`."""

    wait_s: float


ToChild = ChildInit | Request | Cancel | HealthQuery | Stop


# --- worker process -> server ------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class Ready(_Message):
    pid: int


@final
@dataclass(frozen=True, slots=True)
class SetupFailed(_Message):
    """The LitAPI could not be loaded or a worker's setup() raised; `original` is the pickled exception."""

    summary: str
    traceback: str
    original: bytes | None


@final
@dataclass(frozen=True, slots=True)
class Answer(_Message):
    request_id: int
    outcome: Outcome


@final
@dataclass(frozen=True, slots=True)
class Answers(_Message):
    """A batch's answers in one message."""

    items: tuple[tuple[int, Outcome], ...]


@final
@dataclass(frozen=True, slots=True)
class Chunk(_Message):
    """One stream item; a failure Outcome or STREAM_END is the request's last."""

    request_id: int
    item: StreamItem


@final
@dataclass(frozen=True, slots=True)
class Dropped(_Message):
    """The worker skipped the request (its client left or its deadline passed); it was answered already."""

    request_id: int
    reason: DropReason


@final
@dataclass(frozen=True, slots=True)
class ErrorReport(_Message):
    record: ErrorRecord


@final
@dataclass(frozen=True, slots=True)
class HealthAnswer(_Message):
    token: int
    healthy: bool


@final
@dataclass(frozen=True, slots=True)
class Stopped(_Message):
    """The worker process finished after `Stop` and exits."""


FromChild = Ready | SetupFailed | Answer | Answers | Chunk | Dropped | ErrorReport | HealthAnswer | Stopped


def encode(message: ToChild | FromChild) -> list[bytes | memoryview]:
    """One message as the pieces of its frame. A `Request` is tagged with its id, which stays readable
    when its payload cannot be unpickled on the other side, so that request can still be answered."""
    return encode_frame(message, tag=message.request_id if isinstance(message, Request) else 0)
