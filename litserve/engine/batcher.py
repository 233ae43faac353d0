"""The batching policy: one pure function, driven by a clock it is given.

A worker blocks for the first request, then gathers more until it has `max_batch_size` or
`batch_timeout_s` has passed since the first reached the worker. It never polls: every wait is a
blocking get with the real remaining time, and `batch_timeout_s=0` takes only what is already waiting.
Requests that were cancelled or are past their deadline are set aside, never batched.

The window is adaptive when the source can say whether more is on its way (`others_coming`): the
worker stops gathering as soon as nothing waits in the queue and no admitted request is still being
read, so a lone request runs at once instead of sitting out the window, while a loaded server, whose
requests queue up while the previous batch runs, still fills batches. `batch_timeout_s` stays the
upper bound. A request admitted a moment after the check joins the next batch: the rule only ever
shortens a wait that could not have grown the batch when it was made.

In a worker process a request reaches the worker when the server hands it over (`handed_s`), not
when the process has read it: the crossing is part of the window instead of being waited on top of
it, and a request that comes to an idle worker waits no longer than in thread mode. A request handed
over while the worker was still busy gets the whole window from when the worker began collecting, as
a request that waited in the server's queue does. The requests that join a batch must cross within
the window too: with payloads that take as long to cross as the window lasts, an idle worker process
runs batches of one (a busy one, under load, still gets whole windows).
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from litserve.engine.messages import DropReason, InferenceRequest

__all__ = ["Batch", "RequestSource", "collect_batch"]


class RequestSource(Protocol):
    """What the batcher and a worker read from: a RequestQueue, a worker process's ChildQueue, or a fake in tests."""

    def get(self, timeout_s: float | None = None) -> InferenceRequest | None: ...

    def get_nowait(self) -> InferenceRequest | None: ...


@dataclass(frozen=True, slots=True)
class Batch:
    """Requests to run together, and those dropped while collecting them (with why)."""

    requests: tuple[InferenceRequest, ...]
    dropped: tuple[tuple[InferenceRequest, DropReason], ...] = ()


def collect_batch(
    source: RequestSource,
    max_batch_size: int,
    batch_timeout_s: float,
    clock: Callable[[], float],
    others_coming: Callable[[], bool] | None = None,
) -> Batch | None:
    """Block until at least one live request is collected; None once the source is closed.

    `others_coming`: whether any request waits or is on its way to the source; when it says no, the
    batch closes at once (None: always wait out the window). The returned batch may also carry
    dropped requests; it is never empty of both.
    """
    started_s = clock()
    live: list[InferenceRequest] = []
    dropped: list[tuple[InferenceRequest, DropReason]] = []
    first_arrival_s: float | None = None
    while len(live) < max_batch_size:
        try:
            if first_arrival_s is None:
                # Block only while there is nothing to report; drops alone are returned at once.
                item = source.get_nowait() if dropped else source.get(None)
            elif others_coming is not None and not others_coming():
                break  # nothing queued, nothing being read: waiting could not grow this batch
            else:
                remaining_s = first_arrival_s + batch_timeout_s - clock()
                item = source.get(remaining_s) if remaining_s > 0 else source.get_nowait()
        except queue.Empty:
            break
        if item is None:  # closed: hand over what we have; the next call returns None
            break
        now_s = clock()
        reason = item.drop_reason(now_s)
        if reason is not None:
            dropped.append((item, reason))
            continue
        if first_arrival_s is None:
            first_arrival_s = _reached_worker_s(item, started_s, now_s)
        live.append(item)
    if not live and not dropped:
        return None
    return Batch(tuple(live), tuple(dropped))


def _reached_worker_s(request: InferenceRequest, started_s: float, now_s: float) -> float:
    """When the first request of a batch reached its worker: the batch window opens then."""
    handed_s = request.handed_s
    if handed_s is None:  # taken from the server's queue just now
        return now_s
    return min(now_s, max(handed_s, started_s))
