"""Endpoints and their workers: devices x workers_per_device per endpoint, of whichever kind the server picks.

The pool does not know what a worker is made of: a `WorkerFactory` builds an endpoint's workers from
its placements (`engine.worker.thread_workers` here; `litserve.process` for worker processes), and the
pool only starts, waits for and stops them through the `WorkerHandle` surface.
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import itertools
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol, final

from litserve.api import LitAPI
from litserve.engine.bridge import LoopHandle
from litserve.engine.devices import warn_if_streams_shared
from litserve.engine.messages import InferenceRequest, Outcome
from litserve.engine.observe import NO_OBSERVERS, Observers
from litserve.engine.request_queue import RequestQueue
from litserve.exceptions import NO_WORKER_LEFT, SHUTTING_DOWN, WorkerSetupError
from litserve.hooks import plan_hooks
from litserve.status import (
    EndpointCounters,
    EndpointStatus,
    ErrorLog,
    Latency,
    WorkerCounters,
    WorkerState,
    WorkerStatus,
)

__all__ = ["Endpoint", "Placement", "WorkerFactory", "WorkerHandle", "WorkerPool", "copy_api"]

logger = logging.getLogger(__name__)

_SHUTTING_DOWN = Outcome.failure(SHUTTING_DOWN)
_NO_WORKER_LEFT = Outcome.failure(NO_WORKER_LEFT)


class WorkerHandle(Protocol):
    """What the pool, the status and /health need of a worker, whether a thread or a process."""

    name: str
    device: str
    counters: WorkerCounters
    restarts: int

    @property
    def pid(self) -> int | None: ...

    @property
    def ready(self) -> concurrent.futures.Future[None]: ...

    def start(self, loop: LoopHandle) -> None: ...

    def join(self, timeout_s: float | None) -> bool: ...

    def loop_ended(self) -> bool:
        """The HTTP loop ends (called on its thread). True when this worker can serve nothing more."""
        ...

    def is_healthy(self) -> bool | Awaitable[bool]: ...


@final
class Endpoint:
    """One LitAPI served on its own path, with its own queue, counters and workers."""

    def __init__(self, api: LitAPI, max_queue_size: int | None, observers: Observers = NO_OBSERVERS) -> None:
        self.api = api
        self.observers = observers  # the server's callbacks and log sink, for this endpoint's workers
        self.path = api.api_path
        self.plan = plan_hooks(api)
        self.queue: RequestQueue[InferenceRequest] = RequestQueue(max_queue_size)
        self.counters = EndpointCounters()
        self.workers: list[WorkerHandle] = []

    def refuse_if_no_worker_left(self) -> None:
        """After a worker failed for good (a sticky device error in thread mode): once none is left, the
        queued requests and every later one get 503 at once, instead of waiting for a worker that will
        never come (forever, without a timeout)."""
        if self.workers and all(worker.counters.state is WorkerState.FAILED for worker in self.workers):
            self.queue.close(NO_WORKER_LEFT)
            for request in self.queue.drain_nowait():
                request.reply.deliver(_NO_WORKER_LEFT)
            logger.error("%s has no worker left; its requests get 503 until the server is restarted", self.path)

    def status(self) -> EndpointStatus:
        """A snapshot of this endpoint's counters, queue and workers (read from any thread)."""
        counters = self.counters
        workers = [
            WorkerStatus(w.name, w.device, w.counters.state, w.counters.served, w.counters.errors, w.pid, w.restarts)
            for w in self.workers
        ]
        # Every worker that served this endpoint, once each (a swap retires workers while their Running is current).
        every = {id(c): c for c in [*counters.retired_workers, *(w.counters for w in self.workers)]}.values()
        batch_sizes: collections.Counter[int] = collections.Counter()
        for c in every:
            batch_sizes.update(dict(c.batch_sizes))  # dict() copies atomically under the GIL
        return EndpointStatus(
            path=self.path,
            queue_depth=self.queue.depth(),
            in_flight=counters.in_flight,
            ok=counters.ok,
            client_errors=counters.client_errors,
            server_errors=counters.server_errors,
            timed_out=counters.timed_out,
            cancelled=counters.cancelled,
            dropped_timed_out=sum(c.dropped_timed_out for c in every),
            dropped_cancelled=sum(c.dropped_cancelled for c in every),
            workers=tuple(workers),
            latency=Latency.of(counters.latencies_s.copy()),
            batch_sizes=tuple(sorted(batch_sizes.items())),
            status_codes=tuple(sorted(counters.codes.copy().items())),
            duration=counters.durations.snapshot(),
            queue_wait=counters.queue_waits.snapshot(),
            first_chunk=counters.first_chunks.snapshot(),
        )


@final
@dataclass(frozen=True, slots=True)
class Placement:
    """One device of an endpoint: the device, its index among the server's devices, its workers' names."""

    device: str
    index: int
    worker_names: tuple[str, ...]


class WorkerFactory(Protocol):
    """Builds an endpoint's workers, one set per placement (threads, or a worker process each)."""

    def __call__(
        self, endpoint: Endpoint, placements: Sequence[Placement], errors: ErrorLog
    ) -> Sequence[WorkerHandle]: ...


def copy_api(api: LitAPI) -> LitAPI:
    """Each worker's own copy of the LitAPI (its setup() state must not be shared)."""
    try:
        return copy.deepcopy(api)
    except Exception as exc:
        raise TypeError(
            f"each worker needs its own copy of {type(api).__name__}, but it cannot be copied ({exc}); "
            "create models, locks and connections in setup(), not in __init__"
        ) from exc


def _label(device: str) -> str:
    return device.replace(":", "")


@final
class WorkerPool:
    """Creates, starts and stops every worker of a server."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        devices: Sequence[str],
        workers_per_device: int,
        errors: ErrorLog,
        make_workers: WorkerFactory,
    ) -> None:
        self._endpoints = list(endpoints)
        warn_if_streams_shared(devices, workers_per_device)
        number = itertools.count()
        for endpoint in self._endpoints:
            placements = [
                Placement(
                    device,
                    index,
                    tuple(f"litserve-worker-{_label(device)}-{next(number)}" for _ in range(workers_per_device)),
                )
                for index, device in enumerate(devices)
            ]
            endpoint.workers.extend(make_workers(endpoint, placements, errors))

    @property
    def workers(self) -> list[WorkerHandle]:
        return [w for e in self._endpoints for w in e.workers]

    def start(self, loop: LoopHandle) -> None:
        """Start every worker; `loop` is the HTTP event loop, where worker processes do their socket I/O."""
        for worker in self.workers:
            worker.start(loop)

    def loop_ended(self) -> None:
        """Called on the HTTP loop's thread as it ends: workers that need the loop end with it.

        After a stop nothing is left to do. When the loop died instead (serving failed), an endpoint
        left without a worker takes no more requests, and what waits is answered, so no caller (a
        `server.predict()` without a timeout) waits forever.
        """
        for endpoint in self._endpoints:
            ended = [self._end_with_loop(worker) for worker in endpoint.workers]
            if all(ended):
                endpoint.queue.close()
                for request in endpoint.queue.drain_nowait():
                    request.reply.deliver(_SHUTTING_DOWN)

    @staticmethod
    def _end_with_loop(worker: WorkerHandle) -> bool:
        try:
            return worker.loop_ended()
        except Exception:  # the others must still hear it
            logger.exception("worker %s failed to end with the event loop", worker.name)
            return True

    def wait_ready(self, abort: concurrent.futures.Future[None] | None = None) -> None:
        """Block until every worker finished setup(); raise WorkerSetupError on the first failure, or
        `abort`'s exception as soon as it has one (a stop() during a hot swap)."""
        pending = {w.ready: w for w in self.workers}
        while pending:
            waited = [*pending] if abort is None else [*pending, abort]
            done, _ = concurrent.futures.wait(waited, return_when=concurrent.futures.FIRST_COMPLETED)
            if abort is not None and abort.done():
                abort.result()
            for future in done:
                worker = pending.pop(future)
                exc = future.exception()
                if exc is not None:
                    raise WorkerSetupError(
                        f"setup() failed in {worker.name} on {worker.device}: {type(exc).__name__}: {exc}"
                    ) from exc

    def stop(self, timeout_s: float) -> list[str]:
        """Close the queues (workers finish what is queued, then leave) and join every worker.

        Returns the names of workers still running after `timeout_s` (stuck in a hook).
        """
        for endpoint in self._endpoints:
            endpoint.queue.close()
        deadline_s = time.monotonic() + timeout_s
        stuck = [w.name for w in self.workers if not w.join(max(0.0, deadline_s - time.monotonic()))]
        if stuck:
            logger.warning("workers %s are still inside a LitAPI hook; they will end when it returns", stuck)
        for endpoint in self._endpoints:
            # Whatever no worker took (they are stuck or gone) is answered, so no caller waits forever.
            for request in endpoint.queue.drain_nowait():
                request.reply.deliver(_SHUTTING_DOWN)
        return stuck
