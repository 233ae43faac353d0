"""Route handlers. The hot path is `PredictRoute.handle`: read, validate, one queue put, await, answer."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, TypeVar, final

from quart import Response, request

from litserve.codec import encode_json, error_body
from litserve.engine.bridge import LoopReply, StreamReply
from litserve.engine.health import all_healthy
from litserve.engine.messages import Outcome
from litserve.engine.pool import Endpoint
from litserve.engine.stream_items import StreamItems
from litserve.engine.stream_window import StreamWindow
from litserve.engine.submit import STOPPING, Submission, submit
from litserve.exceptions import NOT_READY, ErrorResponse
from litserve.request_context import RequestContext
from litserve.status import EndpointCounters, Verdict
from litserve.web.answer_timing import ACCESS_LOG, log_access, with_server_timing
from litserve.web.auth import API_KEY_HEADER, run_authorize
from litserve.web.compression import GZIP_MIN_BYTES, gzip_outcome
from litserve.web.context import WebContext
from litserve.web.dependencies import prepare_authorize
from litserve.web.guard import follow_client
from litserve.web.incoming import QUART_INCOMING, Incoming
from litserve.web.openai_errors import openai_error
from litserve.web.streaming import StreamBody, StreamStarted
from litserve.web.validation import while_coming

__all__ = ["Admission", "PredictRoute", "error", "guarded", "health", "info", "respond", "root", "settle"]

_JSON = "application/json"
# Answers given before the request body was read also close the connection: the unread body would
# otherwise be taken for the client's next request on a keep-alive connection.
_CLOSE = (("Connection", "close"),)


def _early(outcome: Outcome) -> Outcome:
    return Outcome(outcome.status, outcome.body, outcome.content_type, outcome.headers + _CLOSE, outcome.detail)


_STOPPING_EARLY = _early(STOPPING)


def error(answer: ErrorResponse) -> Response:
    return Response(error_body(answer.detail), status=answer.status, content_type=_JSON, headers=dict(answer.headers))


def respond(outcome: Outcome) -> Response:
    response = Response(outcome.body, status=outcome.status, content_type=outcome.content_type)
    if outcome.headers:
        response.headers.update(dict(outcome.headers))
    return response


@final
class Admission:
    """Who may call an endpoint, checked before its body is read: open gate, API key, `authorize()`.

    OpenAI routes (`accept_bearer`) also take the key as `Authorization: Bearer <key>`, as the official
    client sends it.
    """

    __slots__ = ("_accept_bearer", "_api_key", "_authorize", "_gate", "_wants_context")

    def __init__(self, endpoint: Endpoint, context: WebContext, accept_bearer: bool = False) -> None:
        self._gate = context.gate
        self._authorize = prepare_authorize(endpoint.plan.authorize)  # FastAPI-style Depends(...) resolved here
        self._wants_context = endpoint.plan.wants_context
        # A LitAPI's own authorize() replaces the API key check for that endpoint.
        self._api_key = context.api_key if self._authorize is None else None
        self._accept_bearer = accept_bearer

    async def check(self, incoming: Incoming = QUART_INCOMING) -> tuple[Outcome | None, RequestContext | None]:
        """(the refusal or None, the request's context when its hooks want one)."""
        if not self._gate.is_open:
            return _STOPPING_EARLY, None
        api_key = self._api_key
        if api_key is not None:
            if self._accept_bearer:
                denied = api_key.check_either(incoming.header(API_KEY_HEADER), incoming.header("Authorization"))
            else:
                denied = api_key.check(incoming.header(API_KEY_HEADER))
            if denied is not None:
                return _early(Outcome.failure(denied)), None
        context = incoming.context() if self._wants_context else None
        if self._authorize is not None:
            assert context is not None
            denied = await run_authorize(self._authorize, context)
            if denied is not None:
                return _early(Outcome.failure(denied)), None
        return None, context


@final
class PredictRoute:
    """POST handler of one endpoint: every decision is taken in `answer`, whichever layer carries the request.

    Quart serves it through `handle` (its view); `web.lean` serves the same route straight from ASGI.
    """

    def __init__(self, endpoint: Endpoint, context: WebContext) -> None:
        self.name = f"predict:{endpoint.path}"
        self._queue = endpoint.queue
        self._counters = endpoint.counters
        self._timeout_s = context.timeout_s
        self._body_model = endpoint.plan.body_model
        self._is_stream = endpoint.api.stream
        self._spec = endpoint.api.spec
        self._admission = Admission(endpoint, context, accept_bearer=self._spec is not None)
        self._envelope = None if self._spec is None else openai_error  # the specs are OpenAI's
        self._path = endpoint.path
        self._server_timing = context.options.server_timing
        self._inspector = endpoint.counters.inspector  # None: the request inspector is off

    async def handle(self) -> Response:
        """The Quart view."""
        answer = await self.answer(QUART_INCOMING)
        if isinstance(answer, StreamStarted):
            return answer.body.response(answer.start)
        return respond(answer)

    async def answer(self, incoming: Incoming) -> Outcome | StreamStarted:
        """The request's answer, counted: a whole one, or a stream whose 200 is to be sent."""
        arrival_s = time.monotonic()
        answer = await self._answer(incoming, arrival_s)
        elapsed_s = time.monotonic() - arrival_s
        answer = settle(self._counters, self._path, answer, elapsed_s, self._server_timing)
        if isinstance(answer, StreamStarted):
            return answer
        if self._envelope is not None and answer.status >= 400:
            answer = self._envelope(answer)
        if len(answer.body) >= GZIP_MIN_BYTES:  # small answers pay this comparison only
            answer = await gzip_outcome(answer, incoming.header("Accept-Encoding"))
        return answer

    async def _answer(self, incoming: Incoming, arrival_s: float) -> Outcome | StreamStarted:
        refused, context = await self._admission.check(incoming)
        if refused is not None:
            return refused
        payload = await while_coming(self._queue, incoming.payload(self._body_model))
        follow_client(incoming.scope)  # a client that left while its body was read is not served
        if isinstance(payload, ErrorResponse):
            return Outcome.failure(payload)
        if self._spec is not None:
            refusal = self._spec.check_request(payload)
            if refusal is not None:
                return Outcome.failure(refusal)
        if self._inspector is not None:
            self._inspector.hold(payload)
        if self._is_stream:
            return await self._stream(payload, context, arrival_s)
        return await self._run(payload, context, arrival_s)

    async def _stream(self, payload: Any, context: RequestContext | None, arrival_s: float) -> Outcome | StreamStarted:
        reply = StreamReply(asyncio.get_running_loop(), StreamItems(), StreamWindow())
        submission = submit(self._queue, payload, reply, context, self._timeout_s, arrival_s)
        if isinstance(submission, Outcome):
            return submission
        body = StreamBody(reply, submission, self._counters, self._timeout_s, arrival_s)
        counters = self._counters
        counters.in_flight += 1  # until the first chunk (or the error) is here
        try:
            first = await body.first()
        finally:
            counters.in_flight -= 1
        if isinstance(first, Outcome):
            return first
        return StreamStarted(body, first)

    async def _run(self, payload: Any, context: RequestContext | None, arrival_s: float) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        submission = submit(self._queue, payload, LoopReply(loop, future), context, self._timeout_s, arrival_s)
        if isinstance(submission, Outcome):
            return submission
        timer = submission.expire_on(loop)
        counters = self._counters
        counters.in_flight += 1
        try:
            return await future
        except asyncio.CancelledError:
            _client_left(submission, counters)
            raise
        finally:
            counters.in_flight -= 1
            if timer is not None:
                timer.cancel()


# What settle() passes on: a whole answer, or a started stream (Quart's Response or StreamStarted).
Answer = TypeVar("Answer", Outcome, Outcome | Response, Outcome | StreamStarted)


def settle(counters: EndpointCounters, path: str, answer: Answer, elapsed_s: float, server_timing: bool) -> Answer:
    """Count an endpoint's answer (or its stream that started) and add its timing where asked for."""
    if not isinstance(answer, Outcome):  # a stream's status line goes with its first chunk
        counters.stream_started(elapsed_s)
        if ACCESS_LOG.isEnabledFor(logging.DEBUG):
            log_access(path, answer.status_code, elapsed_s, None, is_stream=True)
        return answer
    counters.count(answer.verdict)
    counters.answered(answer.status, elapsed_s, answer.timing)
    if counters.inspector is not None:
        counters.inspector.answered(answer, elapsed_s)
    if ACCESS_LOG.isEnabledFor(logging.DEBUG):
        log_access(path, answer.status, elapsed_s, answer.timing)
    return with_server_timing(answer, elapsed_s) if server_timing else answer


def _client_left(submission: Submission, counters: EndpointCounters) -> None:
    # The client went away (Hypercorn cancels the handler) or the server is shutting down: a queued
    # request is dropped by the worker that finds it; a running one's result is discarded.
    submission.cancel()
    counters.count(Verdict.CANCELLED)
    if counters.inspector is not None:
        counters.inspector.left(time.monotonic() - submission.request.queued_s)


def guarded(context: WebContext, view: Any, accept_bearer: bool = False) -> Any:
    """Wrap a GET view with the API key check (every route but /health needs the key when one is set).

    `accept_bearer`: an OpenAI route, which also takes the key as `Authorization: Bearer <key>`.
    """
    api_key = context.api_key
    if api_key is None:
        return view

    async def checked() -> Response:
        assert api_key is not None
        headers = request.headers
        given = headers.get(API_KEY_HEADER)
        denied = api_key.check_either(given, headers.get("Authorization")) if accept_bearer else api_key.check(given)
        return error(denied) if denied is not None else await view()

    checked.__name__ = view.__name__
    return checked


async def root() -> Response:
    return Response("litserve running", status=200, content_type="text/plain")


def health(context: WebContext) -> Any:
    async def health() -> Response:
        workers = (worker for endpoint in context.endpoints for worker in endpoint.workers)
        if not context.is_ready() or not await all_healthy(workers):
            return Response(NOT_READY.detail, status=NOT_READY.status, content_type="text/plain")
        return Response("ok", status=200, content_type="text/plain")

    return health


def info(context: WebContext) -> Any:
    async def info() -> Response:
        return Response(encode_json(context.info()), status=200, content_type=_JSON)

    return info
