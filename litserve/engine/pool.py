"""Endpoints and their workers: devices x workers_per_device threads per endpoint.

In thread mode every worker is a thread of this process. In process mode each device gets one worker
process with `workers_per_device` threads inside; here it is represented by its `ProcessWorker`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import copy
import itertools
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Literal, Protocol, final

from litserve.api import LitAPI
from litserve.engine.bridge import StreamReply, deliver, push
from litserve.engine.messages import InferenceRequest, Outcome
from litserve.engine.request_queue import RequestQueue
from litserve.engine.worker import Worker
from litserve.exceptions import SHUTTING_DOWN, WorkerSetupError
from litserve.hooks import plan_hooks
from litserve.status import EndpointCounters, EndpointStatus, ErrorLog, Latency, WorkerCounters, WorkerStatus

if TYPE_CHECKING:
    from litserve.runtime.process import ProcessWorker

__all__ = ["Endpoint", "WorkerHandle", "WorkerMode", "WorkerPool"]

WorkerMode = Literal["thread", "process"]


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

    def start(self) -> None: ...

    def join(self, timeout_s: float | None) -> bool: ...

    def is_healthy(self) -> bool | Awaitable[bool]: ...


logger = logging.getLogger(__name__)

_SHUTTING_DOWN = Outcome.failure(SHUTTING_DOWN)


@final
class Endpoint:
    """One LitAPI served on its own path, with its own queue, counters and workers."""

    def __init__(self, api: LitAPI, max_queue_size: int | None) -> None:
        self.api = api
        self.path = api.api_path
        self.plan = plan_hooks(api)
        self.queue: RequestQueue[InferenceRequest] = RequestQueue(max_queue_size)
        self.counters = EndpointCounters()
        self.workers: list[WorkerHandle] = []

    def status(self) -> EndpointStatus:
        """A snapshot of this endpoint's counters, queue and workers (read from any thread)."""
        counters = self.counters
        batch_sizes: collections.Counter[int] = collections.Counter()
        workers = []
        for worker in self.workers:
            c = worker.counters
            batch_sizes.update(dict(c.batch_sizes))  # dict() copies atomically under the GIL
            workers.append(
                WorkerStatus(worker.name, worker.device, c.state, c.served, c.errors, worker.pid, worker.restarts)
            )
        return EndpointStatus(
            path=self.path,
            queue_depth=self.queue.qsize(),
            in_flight=counters.in_flight,
            ok=counters.ok,
            client_errors=counters.client_errors,
            server_errors=counters.server_errors,
            timed_out=counters.timed_out,
            cancelled=counters.cancelled,
            dropped_timed_out=sum(w.counters.dropped_timed_out for w in self.workers),
            dropped_cancelled=sum(w.counters.dropped_cancelled for w in self.workers),
            workers=tuple(workers),
            latency=Latency.of(counters.latencies_s.copy()),
            batch_sizes=tuple(sorted(batch_sizes.items())),
        )


def _copy_api(api: LitAPI) -> LitAPI:
    try:
        return copy.deepcopy(api)
    except Exception as exc:
        raise TypeError(
            f"each worker needs its own copy of {type(api).__name__}, but it cannot be copied ({exc}); "
            "create models, locks and connections in setup(), not in __init__"
        ) from exc


def _ship_api(api: LitAPI) -> bytes:
    """The LitAPI by value, so a class defined in a notebook cell or a script's __main__ works in a child."""
    import cloudpickle

    try:
        return bytes(cloudpickle.dumps(api))
    except Exception as exc:
        raise TypeError(
            f"process mode ships {type(api).__name__} to each worker process, but it cannot be pickled ({exc}); "
            "create models, locks and connections in setup(), not in __init__"
        ) from exc


def _worker_label(device: str) -> str:
    return device.replace(":", "")


@final
class WorkerPool:
    """Creates, starts and stops every worker thread of a server."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        devices: Sequence[str],
        workers_per_device: int,
        errors: ErrorLog,
        mode: WorkerMode = "thread",
        restart_processes: bool = True,
    ) -> None:
        self._endpoints = list(endpoints)
        self._processes: list[ProcessWorker] = []
        number = itertools.count()
        for endpoint in self._endpoints:
            if mode == "process":
                api_bytes = _ship_api(endpoint.api)
                from litserve.runtime.process import Dispatch, ProcessWorker, credits_for

                processes: list[ProcessWorker] = []
            for index, device in enumerate(devices):
                names = tuple(
                    f"litserve-worker-{_worker_label(device)}-{next(number)}" for _ in range(workers_per_device)
                )
                if mode == "process":
                    credits = credits_for(endpoint.api.max_batch_size, workers_per_device, endpoint.api.enable_async)
                    processes.append(
                        ProcessWorker(
                            f"litserve-proxy-{_worker_label(device)}-{index}",
                            api_bytes,
                            device,
                            names,
                            endpoint.queue,
                            errors,
                            endpoint.plan,
                            credits,
                            restart_processes,
                        )
                    )
                    continue
                for name in names:
                    endpoint.workers.append(
                        Worker(name, _copy_api(endpoint.api), device, endpoint.queue, errors, endpoint.plan)
                    )
            if mode == "process":
                endpoint.workers.extend(processes)
                self._processes.extend(processes)
                endpoint.queue.on_put = Dispatch(processes)

    @property
    def workers(self) -> list[WorkerHandle]:
        return [w for e in self._endpoints for w in e.workers]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def use_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The HTTP event loop runs: worker processes exchange requests and answers on it from now on."""
        for process in self._processes:
            process.use_loop(loop)

    def leave_loop(self) -> None:
        """Called on the HTTP loop's thread as the loop ends: worker processes take their sockets back."""
        for process in self._processes:
            try:
                process.leave_loop()
            except Exception:  # the others must still let go of their sockets
                logger.exception("worker process %s could not leave the event loop", process.name)

    def wait_ready(self) -> None:
        """Block until every worker finished setup(); raise WorkerSetupError on the first failure."""
        pending = {w.ready: w for w in self.workers}
        while pending:
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_EXCEPTION)
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
                if isinstance(request.reply, StreamReply):
                    push(request.reply, _SHUTTING_DOWN)
                else:
                    deliver(request.reply, _SHUTTING_DOWN)
        return stuck
