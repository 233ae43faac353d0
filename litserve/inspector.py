"""The request inspector: a bounded record of the last requests a server answered (`server.requests`).

Off in scripts, on in notebooks by default (`LitServer(inspect_requests=...)`). When it is off, the
request path pays one `is None` check per answer. When it is on, each answer costs a record (a frozen
value appended to a `deque(maxlen=N)` under a lock) and its payload costs one JSON encoding at arrival:
a payload of at most `max_payload_bytes` is kept whole (as its JSON bytes, so a `decode_request` that
changes the request in place changes nothing here) for `server.replay`, a larger one is summarised
(type, size, first bytes). The kept bytes together stay under `max_kept_bytes`: past it, the oldest
records lose their payload (their summary stays).

Where the facts come from: every answer is counted in one place on the HTTP loop (`web.routes.settle`,
the end of a stream in `web.streaming.StreamBody`), and that place hands it here with its `Timing`
(queue wait, batch, worker, predict time, sent back by the worker with each answer) and, for a failure a
hook raised, its `ErrorInfo`. The route holds the payload for its own task (`hold`), before queueing it.
"""

from __future__ import annotations

import collections
import contextvars
import itertools
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, final

from litserve.codec import encode_json
from litserve.engine.messages import Outcome
from litserve.error_info import ErrorInfo
from litserve.status import Verdict
from litserve.timing import Timing

__all__ = [
    "DEFAULT_MAX_KEPT_BYTES",
    "DEFAULT_PAYLOAD_BYTES",
    "EndpointRecorder",
    "PayloadSummary",
    "RequestLog",
    "RequestRecord",
    "in_notebook",
    "request_log",
]

DEFAULT_PAYLOAD_BYTES = 4096  # payloads up to this size (as JSON) are kept whole
DEFAULT_MAX_KEPT_BYTES = 16 * 1024 * 1024  # every kept payload together
DEFAULT_NOTEBOOK_REQUESTS = 100  # what `inspect_requests=None` keeps in a notebook
_HEAD_CHARS = 80  # how much of a payload its summary shows


def in_notebook() -> bool:
    """True inside a Jupyter kernel (ipykernel loaded and an IPython shell running)."""
    if "ipykernel" not in sys.modules:
        return False
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    return get_ipython is not None and get_ipython() is not None


@final
@dataclass(frozen=True, slots=True)
class PayloadSummary:
    """What a record shows of its request's payload (the payload itself is kept apart, if at all).

    Stability: beta.
    """

    type_name: str  # e.g. "dict", or the endpoint's request model
    size_bytes: int  # as JSON; -1 when it is not JSON-able
    head: str  # its first characters as JSON (or its repr)
    is_kept: bool  # kept whole when it arrived (`server.replay` can run it while its record stays)


@final
@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One answered request, as the inspector keeps it. Times in seconds, `arrived_at` from `time.time()`.

    Stability: beta.

    `queue_wait_s`, `predict_s`, `batch_size`, `batch_id` and `worker` are there for answers whose batch ran
    (not for streams, nor for requests refused or dropped before a worker ran them). `batch_id` is shared
    by the requests of one batch. `outcome` is how the request counts in the status (ok, client_error,
    server_error, timed_out, cancelled); a stream's `status` is its status line (200 once it started).
    """

    id: int
    path: str
    arrived_at: float
    status: int
    outcome: str
    elapsed_s: float
    is_stream: bool = False
    queue_wait_s: float | None = None
    predict_s: float | None = None
    batch_size: int | None = None
    batch_id: str | None = None
    worker: str | None = None
    error: ErrorInfo | None = None
    payload: PayloadSummary | None = None  # None: the route never read one (refused before its body)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the traceback as text), for JSON, logs and DataFrames."""
        error = self.error
        payload = self.payload
        return {
            "id": self.id,
            "path": self.path,
            "arrived_at": self.arrived_at,
            "status": self.status,
            "outcome": self.outcome,
            "elapsed_s": self.elapsed_s,
            "is_stream": self.is_stream,
            "queue_wait_s": self.queue_wait_s,
            "predict_s": self.predict_s,
            "batch_size": self.batch_size,
            "batch_id": self.batch_id,
            "worker": self.worker,
            "error": None if error is None else {"type": error.type_name, "message": error.message},
            "traceback": None if error is None else error.traceback,
            "payload": None
            if payload is None
            else {
                "type": payload.type_name,
                "size_bytes": payload.size_bytes,
                "head": payload.head,
                "kept": payload.is_kept,
            },
        }


_Held = tuple[PayloadSummary, bytes | None]
# The payload of the request this task is answering, held by its route until the answer is recorded.
_HELD: contextvars.ContextVar[_Held | None] = contextvars.ContextVar("litserve_inspected_payload", default=None)


def _snapshot(payload: Any, limit_bytes: int) -> _Held:
    """The payload as JSON bytes (kept when at most `limit_bytes`) and its summary."""
    kind = type(payload)
    type_name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    try:
        dump = getattr(payload, "model_dump_json", None)  # a request model: as its client sent it
        data = dump(by_alias=True).encode() if callable(dump) else encode_json(payload)
    except Exception:  # not JSON (e.g. NaN in a model): summarised only
        return PayloadSummary(type_name, -1, repr(payload)[:_HEAD_CHARS], False), None
    head = data[: _HEAD_CHARS * 4].decode("utf-8", "replace")[:_HEAD_CHARS]
    kept = data if len(data) <= limit_bytes else None
    return PayloadSummary(type_name, len(data), head, kept is not None), kept


@final
class RequestLog:
    """The last `max_requests` answered requests of one server, and the payloads kept for replay.

    Written on the HTTP loop thread, read from any thread (a notebook cell, the status panel): one lock.
    It lives as long as its server, across restarts.
    """

    def __init__(
        self,
        max_requests: int,
        max_payload_bytes: int = DEFAULT_PAYLOAD_BYTES,
        max_kept_bytes: int = DEFAULT_MAX_KEPT_BYTES,
    ) -> None:
        if max_requests < 1:
            raise ValueError(f"a request log keeps at least one request, got max_requests={max_requests}")
        self.max_requests = max_requests
        self.max_payload_bytes = max_payload_bytes
        self.max_kept_bytes = max_kept_bytes
        self._lock = threading.Lock()
        self._records: collections.deque[RequestRecord] = collections.deque(maxlen=max_requests)
        self._kept: collections.OrderedDict[int, bytes] = collections.OrderedDict()  # id -> payload, oldest first
        self._kept_bytes = 0
        self._ids = itertools.count(1)

    def recorder(self, path: str) -> EndpointRecorder:
        """What one endpoint's counting places call (`EndpointCounters.inspector`)."""
        return EndpointRecorder(self, path)

    def add(self, record: RequestRecord, kept: bytes | None) -> None:
        """Keep `record` (its id from `next_id`), and its payload when there is one."""
        with self._lock:
            records = self._records
            if len(records) == records.maxlen:
                self._forget(records[0].id)
            records.append(record)
            if kept is not None:
                self._kept[record.id] = kept
                self._kept_bytes += len(kept)
                while self._kept_bytes > self.max_kept_bytes:
                    self._forget(next(iter(self._kept)))

    def _forget(self, request_id: int) -> None:
        kept = self._kept.pop(request_id, None)
        if kept is not None:
            self._kept_bytes -= len(kept)

    def next_id(self) -> int:
        return next(self._ids)

    def records(self) -> tuple[RequestRecord, ...]:
        """Every record kept, oldest first."""
        with self._lock:
            return tuple(self._records)

    def find(self, request_id: int) -> tuple[RequestRecord | None, bytes | None]:
        """The record with this id (None when it is not kept, or no longer) and its payload, if still kept."""
        with self._lock:
            record = next((r for r in self._records if r.id == request_id), None)
            return record, self._kept.get(request_id)

    def is_kept(self, request_id: int) -> bool:
        with self._lock:
            return request_id in self._kept

    @property
    def kept_bytes(self) -> int:
        """The bytes of every payload kept now (at most `max_kept_bytes`)."""
        with self._lock:
            return self._kept_bytes

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._kept.clear()
            self._kept_bytes = 0


@final
class EndpointRecorder:
    """One endpoint's door into its server's RequestLog; HTTP loop thread only (and its routes' tasks)."""

    __slots__ = ("_log", "path")

    def __init__(self, log: RequestLog, path: str) -> None:
        self._log = log
        self.path = path

    def hold(self, payload: Any) -> None:
        """The route read `payload`: keep its snapshot for this task's answer (before a worker may change it)."""
        _HELD.set(_snapshot(payload, self._log.max_payload_bytes))

    def held(self) -> _Held | None:
        """What this task holds (a stream's body takes it along: it is counted from another task)."""
        return _HELD.get()

    def answered(self, outcome: Outcome, elapsed_s: float) -> None:
        """A plain answer was counted (`settle`); the payload this task held goes with it."""
        held = _HELD.get()
        if held is not None:
            _HELD.set(None)
        timing = outcome.timing
        self._add(held, outcome.status, outcome.verdict, elapsed_s, outcome.error, timing=timing)

    def left(self, elapsed_s: float) -> None:
        """A plain request's client went away before its answer (counted cancelled)."""
        self._add(_HELD.get(), 499, Verdict.CANCELLED, elapsed_s, None)
        _HELD.set(None)  # recorded once: a later refusal in the same task (the guard's) has no payload

    def stream_ended(self, held: _Held | None, verdict: Verdict, elapsed_s: float, failure: Outcome | None) -> None:
        """A stream whose 200 was sent ended (counted by `verdict`); `failure`: its error line's outcome."""
        error = None if failure is None else failure.error
        self._add(held, 200, verdict, elapsed_s, error, is_stream=True)

    def _add(
        self,
        held: _Held | None,
        status: int,
        verdict: Verdict,
        elapsed_s: float,
        error: ErrorInfo | None,
        *,
        timing: Timing | None = None,
        is_stream: bool = False,
    ) -> None:
        log = self._log
        summary, kept = (None, None) if held is None else held
        if timing is None:
            record = RequestRecord(
                log.next_id(), self.path, time.time() - elapsed_s, status, verdict.value, elapsed_s, is_stream,
                error=error, payload=summary,
            )  # fmt: skip
        else:
            worker = timing.worker or None
            record = RequestRecord(
                log.next_id(), self.path, time.time() - elapsed_s, status, verdict.value, elapsed_s, is_stream,
                timing.queue_wait_s, timing.predict_s, timing.batch_size,
                f"{worker}#{timing.batch_id}" if timing.batch_id else None, worker, error, summary,
            )  # fmt: skip
        log.add(record, kept)


def request_log(max_requests: int, max_payload_bytes: int) -> RequestLog | None:
    """The server's request log, or None when the inspector is off (`max_requests=0`)."""
    return RequestLog(max_requests, max_payload_bytes) if max_requests else None
