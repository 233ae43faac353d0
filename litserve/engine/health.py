"""Whether a set of workers is healthy: the one aggregation behind `/health`, in the server and in a worker process."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable

from litserve.engine.pool import WorkerHandle

__all__ = ["all_healthy"]

logger = logging.getLogger(__name__)


async def all_healthy(workers: Iterable[WorkerHandle]) -> bool:
    """True when every worker says it is healthy (its `health()` may be a coroutine).

    A `health()` that raises means "not ready", never an error: the answer is False and a warning says why.
    """
    for worker in workers:
        try:
            verdict = worker.is_healthy()
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception as exc:
            logger.warning("health() raised in %s: %s: %s", worker.name, type(exc).__name__, exc)
            return False
        if not verdict:
            return False
    return True
