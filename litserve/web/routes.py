"""Route handlers. The hot path is `PredictRoute.handle`: parse, one queue put, await, answer."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, final

from quart import Response, request

from litserve.codec import decode_json, encode_json, error_body
from litserve.engine.bridge import Reply
from litserve.engine.messages import Cancellation, DropReason, InferenceRequest, Outcome
from litserve.engine.pool import Endpoint
from litserve.exceptions import (
    INVALID_JSON,
    NOT_READY,
    REQUEST_TIMED_OUT,
    SERVER_OVERLOADED,
    SHUTTING_DOWN,
    ErrorResponse,
    QueueClosedError,
    QueueFullError,
)
from litserve.web.context import WebContext

__all__ = ["PredictRoute", "error", "health", "info", "root"]

_JSON = "application/json"
_TIMED_OUT = Outcome.failure(REQUEST_TIMED_OUT)
_OVERLOADED = Outcome.failure(SERVER_OVERLOADED)
_SHUTTING_DOWN = Outcome.failure(SHUTTING_DOWN)


def error(answer: ErrorResponse) -> Response:
    return Response(error_body(answer.detail), status=answer.status, content_type=_JSON, headers=dict(answer.headers))


def _expire(future: asyncio.Future[Outcome], cancellation: Cancellation) -> None:
    # Runs on the loop when the request's deadline passes, queued or running.
    cancellation.cancel(DropReason.TIMED_OUT)
    if not future.done():
        future.set_result(_TIMED_OUT)


@final
class PredictRoute:
    """POST handler of one endpoint."""

    def __init__(self, endpoint: Endpoint, context: WebContext) -> None:
        self._endpoint = endpoint
        self._queue = endpoint.queue
        self._counters = endpoint.counters
        self._gate = context.gate
        self._timeout_s = context.timeout_s
        self.name = f"predict:{endpoint.path}"

    async def handle(self) -> Response:
        counters = self._counters
        if not self._gate.is_open:
            counters.count_status(SHUTTING_DOWN.status)
            return error(SHUTTING_DOWN)
        arrival_s = time.monotonic()
        body = await request.get_data(cache=False, as_text=False)
        try:
            payload = decode_json(body)
        except ValueError:
            counters.count_status(INVALID_JSON.status)
            return error(INVALID_JSON)
        outcome = await self._run(payload, arrival_s)
        counters.count_status(outcome.status)
        response = Response(outcome.body, status=outcome.status, content_type=outcome.content_type)
        if outcome.headers:
            response.headers.update(dict(outcome.headers))
        return response

    async def _run(self, payload: Any, arrival_s: float) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        cancellation = Cancellation()
        timeout_s = self._timeout_s
        deadline_s = None if timeout_s is None else arrival_s + timeout_s
        try:
            self._queue.put_nowait(InferenceRequest(payload, Reply(loop, future), deadline_s, cancellation))
        except QueueFullError:
            return _OVERLOADED
        except QueueClosedError:
            return _SHUTTING_DOWN
        timer = None
        if deadline_s is not None:
            timer = loop.call_later(deadline_s - time.monotonic(), _expire, future, cancellation)
        self._counters.in_flight += 1
        try:
            return await future
        except asyncio.CancelledError:
            # The client went away (Hypercorn cancels the handler) or the server is shutting down:
            # a queued request is dropped by the worker that finds it; a running one's result is discarded.
            cancellation.cancel(DropReason.DISCONNECTED)
            self._counters.cancelled += 1
            raise
        finally:
            self._counters.in_flight -= 1
            if timer is not None:
                timer.cancel()


async def root() -> Response:
    return Response("litserve running", status=200, content_type="text/plain")


def health(context: WebContext) -> Any:
    async def health() -> Response:
        if not context.is_ready():
            return Response(NOT_READY.detail, status=NOT_READY.status, content_type="text/plain")
        for endpoint in context.endpoints:
            for worker in endpoint.workers:
                api = worker.api
                if api is None:
                    return Response(NOT_READY.detail, status=NOT_READY.status, content_type="text/plain")
                verdict = api.health()
                if inspect.isawaitable(verdict):
                    verdict = await verdict
                if not verdict:
                    return Response(NOT_READY.detail, status=NOT_READY.status, content_type="text/plain")
        return Response("ok", status=200, content_type="text/plain")

    return health


def info(context: WebContext) -> Any:
    async def info() -> Response:
        return Response(encode_json(context.info()), status=200, content_type=_JSON)

    return info
