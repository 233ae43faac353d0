"""How one request's batch ran: its queue wait, batch size and predict time.

The worker measures it (two `time.monotonic()` reads per batch) and sends it back with each successful
answer (`Outcome.timing`), across the process boundary too. The server turns it into the queue-wait
histogram of `/metrics`, the `Server-Timing` header (`LitServer(server_timing=True)`) and the
`litserve.access` DEBUG log line. While a request's `encode_response` runs (and the callbacks around
it), `current_timing()` returns that request's timing.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any, final

__all__ = ["Timing", "current_timing"]


@final  # __reduce__ rebuilds exactly this class
@dataclass(frozen=True, slots=True)
class Timing:
    """The timing of one answered request, in seconds.

    Stability: beta.

    Attributes:
        queue_wait_s: from when the request was queued until its batch's hooks began (the batch
            window included; in process mode, the crossing to the worker process too).
        batch_size: how many requests ran in its batch (1 without batching).
        predict_s: how long its batch's `predict` took (shared by every request of the batch).
        worker: the name of the worker that ran it ("" where unknown).
        batch_id: a number shared by the requests of its batch, unique per worker (0 where unknown).

    Example:
        >>> class API(LitAPI):
        ...     def encode_response(self, output):
        ...         timing = litserve.timing.current_timing()
        ...         return {"output": output, "batch_size": timing.batch_size}
    """

    queue_wait_s: float
    batch_size: int
    predict_s: float
    worker: str = ""
    batch_id: int = 0

    def __reduce__(self) -> tuple[type[Timing], tuple[Any, ...]]:
        # Crosses with every answer in process mode: one call to unpickle, as `Outcome` does.
        return (Timing, (self.queue_wait_s, self.batch_size, self.predict_s, self.worker, self.batch_id))


# Set by the pipeline around each request's encode_response: per thread for a synchronous worker,
# per task for an async one (each batch runs in its own task).
_CURRENT: contextvars.ContextVar[Timing | None] = contextvars.ContextVar("litserve_timing", default=None)


def current_timing() -> Timing | None:
    """The timing of the request whose `encode_response` is running now; None anywhere else.

    Stability: beta. Streams have none (their chunks are encoded while predict still runs).
    """
    return _CURRENT.get()


def set_current(timing: Timing | None) -> None:
    """For the pipeline: `timing` is current (until it sets None again)."""
    _CURRENT.set(timing)
