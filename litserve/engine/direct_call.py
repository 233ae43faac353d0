"""`LitServer.predict`: a request that skips HTTP but takes the same submit path, queue, batching and workers."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from litserve.engine.bridge import FutureReply
from litserve.engine.devices import settle_callers_tensors
from litserve.engine.messages import Outcome
from litserve.engine.pool import Endpoint
from litserve.engine.submit import submit
from litserve.exceptions import RequestFailedError, invalid_body
from litserve.request_context import RequestContext

__all__ = ["call_directly", "pick_endpoint"]


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


def call_directly(endpoint: Endpoint, payload: Any, timeout_s: float | None) -> Any:
    """Queue `payload` for `endpoint`'s workers, wait for the answer, return it as decoded JSON.

    Raises RequestFailedError with the status and detail an HTTP client would get.
    """
    arrival_s = time.monotonic()
    if endpoint.api.spec is not None:
        raise ValueError(f"{endpoint.path} speaks {type(endpoint.api.spec).__name__}; call it over HTTP (e.g. openai)")
    if endpoint.api.stream:
        raise ValueError(f"{endpoint.path} streams; call it with server.client().stream(payload)")
    plan = endpoint.plan
    if plan.body_model is not None:
        try:
            payload = plan.body_model.model_validate(payload)
        except ValidationError as exc:
            refused = invalid_body(exc)
            raise RequestFailedError(refused.status, refused.detail) from exc
    context = RequestContext("POST", endpoint.path, {}, {}, None) if plan.wants_context else None
    settle_callers_tensors(payload)  # CUDA tensors made on this thread's stream, read on a worker's
    future: concurrent.futures.Future[Outcome] = concurrent.futures.Future()
    submission = submit(endpoint.queue, payload, FutureReply(future), context, timeout_s, arrival_s)
    if isinstance(submission, Outcome):
        raise RequestFailedError(submission.status, submission.detail)
    try:
        outcome = future.result(timeout_s)
    except concurrent.futures.TimeoutError:
        submission.expire()
        outcome = future.result()  # the 504, unless the answer came in the meantime
    if outcome.status >= 400:
        raise RequestFailedError(outcome.status, outcome.detail)
    return json.loads(outcome.body)
