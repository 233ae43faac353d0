"""Process mode: one worker process per device, driven from the server process.

The HTTP thread, the request queues, deadlines, disconnects and the status stay in the server
process; the engine (`litserve.engine`) never imports this package. The server picks it through
`ProcessWorkers`, a worker factory. Layout:

- `supervisor`: a `ProcessWorker` per process: spawn, handshake, restart, stop (its lifecycle an enum).
- `channel`: the process's non-blocking socket, read and written on the server's event loop only.
- `book`: the in-flight book: requests the process holds, its credits, answers coming back.
- `stream_credits`: flow control for streams: credits granted as a stream's client takes its chunks.
- `messages`: every message that crosses, one frozen dataclass per kind; `wire`: their frames.
- `child` and `child_queue`: the worker process itself (`python -m litserve.process.child FD`).

Requests wait in the endpoint's `RequestQueue`, as in thread mode; its `on_put` offers each new one to
the worker processes (`Dispatch`: the one holding the fewest first), which take from the queue while
they have credits. Inside a worker process, `ChildQueue` decides which of its threads runs it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import final

from pydantic import BaseModel

from litserve.api import LitAPI
from litserve.callbacks import Callback
from litserve.engine.pool import Endpoint, Placement, WorkerHandle
from litserve.engine.worker import ASYNC_MAX_BATCHES_IN_FLIGHT
from litserve.process.messages import ChildInit
from litserve.process.supervisor import ProcessWorker
from litserve.status import ErrorLog

__all__ = ["Dispatch", "ProcessWorkers", "capacity_for", "credits_for"]


@final
class ProcessWorkers:
    """The worker factory of process mode: one `ProcessWorker` per placement of an endpoint."""

    def __init__(self, restart: bool) -> None:
        self._restart = restart

    def __call__(self, endpoint: Endpoint, placements: Sequence[Placement], errors: ErrorLog) -> list[WorkerHandle]:
        api = endpoint.api
        api_bytes = _ship_api(api, endpoint.observers.callbacks, endpoint.plan.body_model)
        processes = []
        for placement in placements:
            init = ChildInit(api_bytes, placement.device, placement.worker_names, tuple(sys.path))
            workers = len(placement.worker_names)
            capacity = capacity_for(api.max_batch_size, workers, api.enable_async)
            credits = credits_for(capacity, api.max_batch_size, workers)
            label = placement.device.replace(":", "")
            processes.append(
                ProcessWorker(
                    f"litserve-proxy-{label}-{placement.index}",
                    init,
                    endpoint.queue,
                    errors,
                    endpoint.plan,
                    credits,
                    capacity,
                    self._restart,
                    log=endpoint.observers.log,
                )
            )
        endpoint.queue.on_put = Dispatch(processes)
        return list(processes)


@final
class Dispatch:
    """An endpoint queue's `on_put` in process mode: offer the new request to the worker processes.

    The one holding the fewest requests goes first, so load spreads over the devices; between equals,
    the one that answered last, so at low load one process takes request after request with its model
    still in cache instead of the processes taking turns (turns cost the MLP benchmark's heavy model
    0.18 ms per request: two copies of its weights do not fit in this machine's cache together).
    """

    def __init__(self, workers: Sequence[ProcessWorker]) -> None:
        self._workers = tuple(workers)

    def __call__(self) -> None:
        workers = self._workers
        if len(workers) == 1:  # one device: no order to choose
            workers[0].offer()
            return
        for worker in sorted(workers, key=_preference):
            worker.offer()


def _preference(worker: ProcessWorker) -> tuple[int, float]:
    # Hints read from another thread: a stale value only changes which process goes first.
    return worker.book.held, -worker.book.answered_at_s


def capacity_for(max_batch_size: int, workers: int, enable_async: bool) -> int:
    """How many requests a worker process's workers can run at once: one full batch per worker thread
    (an async worker runs many batches at once)."""
    batches = ASYNC_MAX_BATCHES_IN_FLIGHT if enable_async else 1
    return max_batch_size * workers * batches


def credits_for(capacity: int, max_batch_size: int, workers: int) -> int:
    """How many requests a worker process may hold: its capacity, and one more batch per worker waiting
    inside it.

    Without the one waiting, a worker that finished sat idle while its answer travelled back and the
    next request travelled over, and on a busy server both wait for the HTTP loop's next turn: one
    request per turn of the loop. The price: a request may wait in a busy process while another device
    frees up (for one batch at most), and a process holds more that its death could touch, which is why
    a dead process's requests beyond its capacity go back to the queue (`InFlightBook.fail_all`).
    """
    return capacity + max_batch_size * workers


def _ship_api(api: LitAPI, callbacks: tuple[Callback, ...], body_model: type[BaseModel] | None) -> bytes:
    """The LitAPI, the server's callbacks and the request body model (resolved here) by value, so classes
    defined in a notebook cell or a script's __main__ work in a child."""
    import cloudpickle

    try:
        return bytes(cloudpickle.dumps((api, callbacks, body_model)))
    except Exception as exc:
        shipped = ", ".join([type(api).__name__, *(type(c).__name__ for c in callbacks)])
        raise TypeError(
            f"process mode ships {shipped} to each worker process, but they cannot be pickled ({exc}); "
            "create models, locks and connections in setup(), not in __init__"
        ) from exc
