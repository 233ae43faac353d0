"""`LitServer.predict`: a request that skips HTTP but takes the same queue, batching and workers."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from litserve.engine.bridge import FutureReply
from litserve.engine.messages import Cancellation, DropReason, InferenceRequest, Outcome
from litserve.engine.pool import Endpoint
from litserve.exceptions import REQUEST_TIMED_OUT, QueueClosedError, QueueFullError, RequestFailedError
from litserve.request_context import RequestContext

__all__ = ["pick_endpoint", "run_in_process"]


def pick_endpoint(endpoints: Sequence[Endpoint], path: str | None) -> Endpoint:
    if path is None:
        if len(endpoints) > 1:
            paths = ", ".join(e.path for e in endpoints)
            raise ValueError(f"this server has several endpoints ({paths}); say which with path=...")
        return endpoints[0]
    for endpoint in endpoints:
        if endpoint.path == path:
            return endpoint
    raise ValueError(f"no endpoint at {path!r}; the server has {', '.join(e.path for e in endpoints)}")


def run_in_process(endpoint: Endpoint, payload: Any, timeout_s: float | None) -> Any:
    """Queue `payload` for `endpoint`'s workers, wait for the answer, return it as decoded JSON."""
    if endpoint.api.stream:
        raise ValueError(f"{endpoint.path} streams; call it with server.client().stream(payload)")
    plan = endpoint.plan
    if plan.body_model is not None:
        try:
            payload = plan.body_model.model_validate(payload)
        except ValidationError as exc:
            raise RequestFailedError(422, exc.errors(include_url=False, include_context=False)) from exc
    context = RequestContext("POST", endpoint.path, {}, {}, None) if plan.wants_context else None
    future: concurrent.futures.Future[Outcome] = concurrent.futures.Future()
    cancellation = Cancellation()
    deadline_s = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        endpoint.queue.put_nowait(InferenceRequest(payload, FutureReply(future), deadline_s, cancellation, context))
    except (QueueFullError, QueueClosedError) as exc:
        raise RequestFailedError(503, str(exc)) from exc
    try:
        outcome = future.result(timeout_s)
    except concurrent.futures.TimeoutError:
        cancellation.cancel(DropReason.TIMED_OUT)
        raise RequestFailedError(REQUEST_TIMED_OUT.status, REQUEST_TIMED_OUT.detail) from None
    if outcome.status >= 400:
        raise RequestFailedError(outcome.status, outcome.detail)
    return json.loads(outcome.body)
