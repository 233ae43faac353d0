"""Per-request timing as the client and the logs see it: the `Server-Timing` header and the access log line.

Both are off by default and cost nothing then: the header only with `LitServer(server_timing=True)`,
the log line only when the `litserve.access` logger is enabled for DEBUG (it is formatted only then).
"""

from __future__ import annotations

import logging

from litserve.engine.messages import Outcome
from litserve.timing import Timing

__all__ = ["ACCESS_LOG", "log_access", "server_timing", "with_server_timing"]

ACCESS_LOG = logging.getLogger("litserve.access")


def server_timing(timing: Timing | None, elapsed_s: float) -> str:
    """The `Server-Timing` value (durations in milliseconds, as the header wants them).

    `queue` and `predict` and the batch size are there when the request ran in a batch; `total` always
    (arrival to answer). E.g. `queue;dur=0.210, predict;dur=1.042, batch;desc="4", total;dur=1.655`.
    """
    total = f"total;dur={elapsed_s * 1000:.3f}"
    if timing is None:
        return total
    return (
        f"queue;dur={timing.queue_wait_s * 1000:.3f}, predict;dur={timing.predict_s * 1000:.3f}, "
        f'batch;desc="{timing.batch_size}", {total}'
    )


def with_server_timing(outcome: Outcome, elapsed_s: float) -> Outcome:
    """`outcome` with its Server-Timing header."""
    header = ("Server-Timing", server_timing(outcome.timing, elapsed_s))
    return Outcome(
        outcome.status,
        outcome.body,
        outcome.content_type,
        (*outcome.headers, header),
        outcome.detail,
        outcome.reason,
        outcome.timing,
        outcome.error,
    )


def log_access(path: str, status: int, elapsed_s: float, timing: Timing | None, is_stream: bool = False) -> None:
    """One DEBUG line per answer on `litserve.access` (call only when that logger is enabled for DEBUG)."""
    what = "first chunk" if is_stream else "answered"
    if timing is None:
        ACCESS_LOG.debug("POST %s %d %s in %.3f ms", path, status, what, elapsed_s * 1000)
    else:
        ACCESS_LOG.debug(
            "POST %s %d %s in %.3f ms (queue %.3f ms, batch %d, predict %.3f ms)",
            path,
            status,
            what,
            elapsed_s * 1000,
            timing.queue_wait_s * 1000,
            timing.batch_size,
            timing.predict_s * 1000,
        )
