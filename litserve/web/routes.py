"""Route handlers. The hot path is `PredictRoute.handle`: read, validate, one queue put, await, answer."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from typing import Any, final

from quart import Response, request

from litserve.codec import encode_json, error_body
from litserve.engine.bridge import Reply, StreamReply
from litserve.engine.messages import TIMED_OUT_OUTCOME, Cancellation, DropReason, InferenceRequest, Outcome, StreamItem
from litserve.engine.pool import Endpoint
from litserve.exceptions import (
    NOT_READY,
    SERVER_OVERLOADED,
    SHUTTING_DOWN,
    ErrorResponse,
    QueueClosedError,
    QueueFullError,
)
from litserve.request_context import RequestContext
from litserve.web.auth import API_KEY_HEADER, run_authorize
from litserve.web.context import WebContext
from litserve.web.streaming import STREAM_WINDOW, StreamBody
from litserve.web.validation import read_payload

__all__ = ["PredictRoute", "error", "guarded", "health", "info", "root"]

logger = logging.getLogger(__name__)

_JSON = "application/json"
_OVERLOADED = Outcome.failure(SERVER_OVERLOADED)
_SHUTTING_DOWN = Outcome.failure(SHUTTING_DOWN)
# Answers given before the request body was read also close the connection: the unread body would
# otherwise be taken for the client's next request on a keep-alive connection.
_CLOSE = (("Connection", "close"),)


def _early(outcome: Outcome) -> Outcome:
    return Outcome(outcome.status, outcome.body, outcome.content_type, outcome.headers + _CLOSE, outcome.detail)


_SHUTTING_DOWN_EARLY = _early(_SHUTTING_DOWN)


def error(answer: ErrorResponse) -> Response:
    return Response(error_body(answer.detail), status=answer.status, content_type=_JSON, headers=dict(answer.headers))


def _respond(outcome: Outcome) -> Response:
    response = Response(outcome.body, status=outcome.status, content_type=outcome.content_type)
    if outcome.headers:
        response.headers.update(dict(outcome.headers))
    return response


def _expire(future: asyncio.Future[Outcome], cancellation: Cancellation) -> None:
    # Runs on the loop when the request's deadline passes, queued or running.
    cancellation.cancel(DropReason.TIMED_OUT)
    if not future.done():
        future.set_result(TIMED_OUT_OUTCOME)


def _request_context() -> RequestContext:
    client = request.remote_addr
    headers = {name.lower(): value for name, value in request.headers.items()}
    return RequestContext(request.method, request.path, request.args, headers, client or None)


@final
class PredictRoute:
    """POST handler of one endpoint."""

    def __init__(self, endpoint: Endpoint, context: WebContext) -> None:
        self.name = f"predict:{endpoint.path}"
        self._queue = endpoint.queue
        self._counters = endpoint.counters
        self._gate = context.gate
        self._timeout_s = context.timeout_s
        self._body_model = endpoint.plan.body_model
        self._wants_context = endpoint.plan.wants_context
        self._authorize = endpoint.plan.authorize
        self._is_stream = endpoint.api.stream
        # A LitAPI's own authorize() replaces the API key check for that endpoint.
        self._api_key = context.api_key if self._authorize is None else None

    async def handle(self) -> Response:
        arrival_s = time.monotonic()
        answer = await self._answer(arrival_s)
        counters = self._counters
        counters.latencies_s.append(time.monotonic() - arrival_s)  # for streams: time to the first chunk
        if isinstance(answer, Response):
            return answer
        counters.count_status(answer.status)
        return _respond(answer)

    async def _answer(self, arrival_s: float) -> Outcome | Response:
        if not self._gate.is_open:
            return _SHUTTING_DOWN_EARLY
        if self._api_key is not None:
            denied = self._api_key.check(request.headers.get(API_KEY_HEADER))
            if denied is not None:
                return _early(Outcome.failure(denied))
        context = _request_context() if self._wants_context else None
        if self._authorize is not None:
            assert context is not None
            denied = await run_authorize(self._authorize, context)
            if denied is not None:
                return _early(Outcome.failure(denied))
        payload = await read_payload(request, self._body_model)
        if isinstance(payload, ErrorResponse):
            return Outcome.failure(payload)
        if self._is_stream:
            return await self._stream(payload, context, arrival_s)
        return await self._run(payload, context, arrival_s)

    def _enqueue(self, request_: InferenceRequest) -> Outcome | None:
        """Queue the request for a worker; the answer instead when the queue is full or closed."""
        try:
            self._queue.put_nowait(request_)
        except QueueFullError:
            return _OVERLOADED
        except QueueClosedError:
            return _SHUTTING_DOWN
        return None

    async def _stream(self, payload: Any, context: RequestContext | None, arrival_s: float) -> Outcome | Response:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StreamItem] = asyncio.Queue()
        cancellation = Cancellation()
        deadline_s = None if self._timeout_s is None else arrival_s + self._timeout_s
        window = threading.Semaphore(STREAM_WINDOW)
        refused = self._enqueue(
            InferenceRequest(payload, StreamReply(loop, queue, window), deadline_s, cancellation, context)
        )
        if refused is not None:
            return refused
        timer = None
        if deadline_s is not None:
            timer = loop.call_later(deadline_s - time.monotonic(), queue.put_nowait, TIMED_OUT_OUTCOME)
        body = StreamBody(queue, window, cancellation, self._counters)
        counters = self._counters
        counters.in_flight += 1  # until the first chunk (or the error) is here
        try:
            first = await body.first()
        finally:
            counters.in_flight -= 1
        if isinstance(first, Outcome):
            if timer is not None:
                timer.cancel()
            return first
        self._counters.ok += 1  # the status is sent now; later failures become the stream's error line
        return body.response(first, timer)

    async def _run(self, payload: Any, context: RequestContext | None, arrival_s: float) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        cancellation = Cancellation()
        timeout_s = self._timeout_s
        deadline_s = None if timeout_s is None else arrival_s + timeout_s
        refused = self._enqueue(InferenceRequest(payload, Reply(loop, future), deadline_s, cancellation, context))
        if refused is not None:
            return refused
        timer = None
        if deadline_s is not None:
            timer = loop.call_later(deadline_s - time.monotonic(), _expire, future, cancellation)
        counters = self._counters
        counters.in_flight += 1
        try:
            return await future
        except asyncio.CancelledError:
            # The client went away (Hypercorn cancels the handler) or the server is shutting down:
            # a queued request is dropped by the worker that finds it; a running one's result is discarded.
            cancellation.cancel(DropReason.DISCONNECTED)
            counters.cancelled += 1
            raise
        finally:
            counters.in_flight -= 1
            if timer is not None:
                timer.cancel()


def guarded(context: WebContext, view: Any) -> Any:
    """Wrap a GET view with the API key check (every route but /health needs the key when one is set)."""
    api_key = context.api_key
    if api_key is None:
        return view

    async def checked() -> Response:
        assert api_key is not None
        denied = api_key.check(request.headers.get(API_KEY_HEADER))
        return error(denied) if denied is not None else await view()

    checked.__name__ = view.__name__
    return checked


async def root() -> Response:
    return Response("litserve running", status=200, content_type="text/plain")


def health(context: WebContext) -> Any:
    def not_ready() -> Response:
        return Response(NOT_READY.detail, status=NOT_READY.status, content_type="text/plain")

    async def health() -> Response:
        if not context.is_ready():
            return not_ready()
        for endpoint in context.endpoints:
            for worker in endpoint.workers:
                try:
                    verdict = worker.is_healthy()
                    if inspect.isawaitable(verdict):
                        verdict = await verdict
                except Exception as exc:  # a failing health() means "not ready", never a 500
                    logger.warning("health() raised in %s: %s: %s", worker.name, type(exc).__name__, exc)
                    return not_ready()
                if not verdict:
                    return not_ready()
        return Response("ok", status=200, content_type="text/plain")

    return health


def info(context: WebContext) -> Any:
    async def info() -> Response:
        return Response(encode_json(context.info()), status=200, content_type=_JSON)

    return info
