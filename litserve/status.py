"""Live counters on the request path, and the frozen snapshot every view reads.

Each counter has exactly one writer thread: endpoint counters are written on the HTTP loop, worker
counters by their own worker. Reads from other threads see a value that is at most a moment old,
which is what a status panel needs; no lock is held on the request path.
"""

from __future__ import annotations

import bisect
import collections
import enum
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, final

from litserve.timing import Timing

if TYPE_CHECKING:
    from litserve.inspector import EndpointRecorder

LATENCY_WINDOW = 1000
# Histogram buckets (upper bounds, seconds) for request duration, queue wait and time to first chunk:
# from half a millisecond (the server's own cost) up to a minute.
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

__all__ = [
    "EndpointCounters",
    "EndpointStatus",
    "ErrorLog",
    "ErrorRecord",
    "Histogram",
    "HistogramSnapshot",
    "ServerState",
    "ServerStatus",
    "Verdict",
    "WorkerCounters",
    "WorkerState",
    "WorkerStatus",
]


class ServerState(enum.Enum):
    """Lifecycle of a LitServer: CREATED -> STARTING -> RUNNING -> STOPPING -> STOPPED (or FAILED)."""

    CREATED = "created"  # constructed, never started
    STARTING = "starting"  # binding the port, running setup() in the workers
    RUNNING = "running"  # serving requests
    STOPPING = "stopping"  # refusing new requests, finishing in-flight ones
    STOPPED = "stopped"  # every thread joined, port free; start() may be called again
    FAILED = "failed"  # start() raised; everything it started is stopped; start() may be retried


class Verdict(enum.Enum):
    """How a finished request counts, decided once per answer by `Outcome.verdict`."""

    OK = "ok"  # a success status
    CLIENT_ERROR = "client_error"  # 4xx
    SERVER_ERROR = "server_error"  # 5xx that is not a timeout
    TIMED_OUT = "timed_out"  # its deadline passed (marked on the answer, never read off a status)
    CANCELLED = "cancelled"  # its client went away


class WorkerState(enum.Enum):
    """Lifecycle of one worker thread."""

    STARTING = "starting"  # thread created, setup() not finished
    IDLE = "idle"  # waiting for requests
    BUSY = "busy"  # running hooks for a batch
    STOPPED = "stopped"  # left its loop
    FAILED = "failed"  # setup() raised


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Observations by bucket: `counts[i]` fell at or below `bounds[i]` (and above the bound before);
    the last count is past every bound. Not cumulative (Prometheus' buckets are: add them up)."""

    bounds: tuple[float, ...] = SECONDS_BUCKETS
    counts: tuple[int, ...] = (0,) * (len(SECONDS_BUCKETS) + 1)
    sum: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)


@final
class Histogram:
    """Fixed buckets, one writer thread: an observation costs a bisect and two adds."""

    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds: tuple[float, ...] = SECONDS_BUCKETS) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1  # bisect_left: a bound is inclusive (`le`)
        self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self._bounds, tuple(self._counts), self._sum)


@final
class EndpointCounters:
    """Requests of one endpoint by outcome and status code, and their timing. Written only on the HTTP loop thread."""

    __slots__ = (
        "cancelled",
        "client_errors",
        "codes",
        "durations",
        "first_chunks",
        "in_flight",
        "inspector",
        "latencies_s",
        "ok",
        "queue_waits",
        "retired_workers",
        "server_errors",
        "timed_out",
    )

    def __init__(self) -> None:
        self.ok = 0
        self.client_errors = 0
        self.server_errors = 0
        self.timed_out = 0
        self.cancelled = 0
        self.in_flight = 0
        # The most recent request latencies (seconds, arrival to answer); percentiles are computed at snapshot.
        self.latencies_s: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.codes: dict[int, int] = {}  # answers sent, by HTTP status (a stream by its status line)
        self.durations = Histogram()  # arrival to answer (a stream: to its first chunk), seconds
        self.queue_waits = Histogram()  # queued to its batch's start, for answers that ran (`Timing`)
        self.first_chunks = Histogram()  # streams only: arrival to the first chunk
        # The request inspector's door, where every answer counted here is also recorded (None: off).
        self.inspector: EndpointRecorder | None = None
        # Counters of the workers a hot swap replaced: the endpoint's totals (dropped requests, batch sizes) go on.
        self.retired_workers: list[WorkerCounters] = []

    def answered(self, status: int, elapsed_s: float, timing: Timing | None = None) -> None:
        """An answer with `status` is sent `elapsed_s` after its request arrived (count its verdict too)."""
        self.latencies_s.append(elapsed_s)
        self.durations.observe(elapsed_s)
        codes = self.codes
        codes[status] = codes.get(status, 0) + 1
        if timing is not None and status < 400:  # the answers that ran (a failed batch's timing is the inspector's)
            self.queue_waits.observe(timing.queue_wait_s)

    def count_code(self, status: int) -> None:
        """An answer with `status` that never reached its route's end (e.g. 413 while reading the body)."""
        self.codes[status] = self.codes.get(status, 0) + 1

    def stream_started(self, elapsed_s: float) -> None:
        """A stream's status line (200) is sent with its first chunk, `elapsed_s` after it arrived."""
        self.answered(200, elapsed_s)
        self.first_chunks.observe(elapsed_s)

    def count(self, verdict: Verdict) -> None:
        """Count one answered request."""
        if verdict is Verdict.OK:
            self.ok += 1
        elif verdict is Verdict.CLIENT_ERROR:
            self.client_errors += 1
        elif verdict is Verdict.SERVER_ERROR:
            self.server_errors += 1
        elif verdict is Verdict.TIMED_OUT:
            self.timed_out += 1
        else:
            self.cancelled += 1


@final
class WorkerCounters:
    """One worker's state and counts. Written only by that worker's thread (and its loop, in async mode)."""

    __slots__ = ("batch_sizes", "dropped_cancelled", "dropped_timed_out", "errors", "served", "state")

    def __init__(self) -> None:
        self.state = WorkerState.STARTING
        self.served = 0
        self.errors = 0
        self.dropped_cancelled = 0
        self.dropped_timed_out = 0
        self.batch_sizes: collections.Counter[int] = collections.Counter()

    def count(self, verdict: Verdict) -> None:
        """Count one request this worker answered."""
        if verdict is Verdict.OK:
            self.served += 1
        elif verdict is Verdict.SERVER_ERROR:
            self.errors += 1

    def count_drop(self, verdict: Verdict) -> None:
        """Count one request this worker skipped instead of running (deadline passed or client gone)."""
        if verdict is Verdict.TIMED_OUT:
            self.dropped_timed_out += 1
        else:
            self.dropped_cancelled += 1


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """The last unexpected error: where it happened, its one-line summary and full traceback."""

    where: str
    summary: str
    traceback: str
    at_s: float  # time.time()


@final
class ErrorLog:
    """Keeps the last unexpected error for the status; written rarely, from any thread."""

    def __init__(self, on_record: Callable[[ErrorRecord], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._last: ErrorRecord | None = None
        self._on_record = on_record  # a worker process forwards each record to its parent

    def record(self, where: str, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(exc))
        self.keep(ErrorRecord(where, f"{type(exc).__name__}: {exc}", text, time.time()))

    def keep(self, record: ErrorRecord) -> None:
        """Keep an already formatted record (one that came from a worker process)."""
        with self._lock:
            self._last = record
        if self._on_record is not None:
            self._on_record(record)

    @property
    def last(self) -> ErrorRecord | None:
        with self._lock:
            return self._last


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One worker: where it runs, what it does now, and what it has done."""

    name: str
    device: str
    state: WorkerState
    served: int
    errors: int
    pid: int | None = None  # the worker process, in process mode
    restarts: int = 0  # how often its process was started again after dying

    @property
    def is_busy(self) -> bool:
        return self.state is WorkerState.BUSY


@dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles of the most recent request latencies, in seconds (None before any request)."""

    p50_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None
    samples: int = 0

    @classmethod
    def of(cls, latencies_s: Iterable[float]) -> Latency:
        ordered = sorted(latencies_s)
        if not ordered:
            return cls()
        return cls(_percentile(ordered, 50), _percentile(ordered, 95), _percentile(ordered, 99), len(ordered))


def _percentile(ordered: Sequence[float], percent: int) -> float:
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """One endpoint: its requests by outcome, what is waiting and running, latency, batches, workers.

    `timed_out` and `cancelled` count answers (504s, clients gone); `dropped_*` count queued requests
    the workers then skipped instead of running. Every request counts once, in exactly one of `ok`,
    `client_errors`, `server_errors`, `timed_out` and `cancelled`, when it is over: a stream whose 200
    was sent counts when it ends, by how it ended (finished: ok; cut by its deadline: timed out; left by
    its client: cancelled; ended by an error line: that error's outcome).
    """

    path: str
    queue_depth: int
    in_flight: int
    ok: int
    client_errors: int
    server_errors: int
    timed_out: int
    cancelled: int
    dropped_timed_out: int
    dropped_cancelled: int
    workers: tuple[WorkerStatus, ...]
    latency: Latency = Latency()
    batch_sizes: tuple[tuple[int, int], ...] = ()  # (batch size, how many batches), by size
    status_codes: tuple[tuple[int, int], ...] = ()  # (HTTP status, how many answers), by status
    duration: HistogramSnapshot = HistogramSnapshot()  # arrival to answer (a stream: to its first chunk)
    queue_wait: HistogramSnapshot = HistogramSnapshot()  # queued to its batch's start, answers that ran
    first_chunk: HistogramSnapshot = HistogramSnapshot()  # streams: arrival to the first chunk

    @property
    def requests(self) -> int:
        """Requests answered so far (every outcome, cancelled ones included)."""
        return self.ok + self.client_errors + self.server_errors + self.timed_out + self.cancelled


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """A snapshot of the whole server, cheap to build; `server.status` returns a new one each time."""

    state: ServerState
    url: str | None
    uptime_s: float
    endpoints: tuple[EndpointStatus, ...] = field(default=())
    last_error: ErrorRecord | None = None

    @property
    def requests(self) -> int:
        return sum(e.requests for e in self.endpoints)

    @property
    def workers(self) -> tuple[WorkerStatus, ...]:
        return tuple(w for e in self.endpoints for w in e.workers)

    @property
    def is_ready(self) -> bool:
        """Running, with at least one worker and every worker past setup()."""
        workers = self.workers
        return (
            self.state is ServerState.RUNNING
            and bool(workers)
            and all(w.state in (WorkerState.IDLE, WorkerState.BUSY) for w in workers)
        )
