"""OpenAI chat completions over HTTP: `POST /v1/chat/completions` and `GET /v1/models`.

Each of a request's `n` choices is queued as its own request (so batching may group choices of
different requests) and runs as a stream in a worker, where `litserve.specs.openai` encodes it. A
streamed request forwards those Server-Sent Events and ends with `data: [DONE]`; otherwise each choice
arrives as one `chat.completion` document and the route joins the choices.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, final

from pydantic import ValidationError
from quart import Response, request

from litserve.codec import encode_json
from litserve.engine.bridge import StreamReply
from litserve.engine.deadlines import Deadline
from litserve.engine.messages import Outcome
from litserve.engine.pool import Endpoint
from litserve.engine.stream_items import StreamItems
from litserve.engine.stream_window import StreamWindow
from litserve.engine.submit import submit
from litserve.request_context import RequestContext
from litserve.specs.openai import ChatShape, new_completion_id
from litserve.specs.openai_models import ChatCompletionRequest
from litserve.web.compression import GZIP_MIN_BYTES, gzip_outcome
from litserve.web.context import WebContext
from litserve.web.guard import follow_client
from litserve.web.openai_errors import openai_error, sse_error_event
from litserve.web.routes import Admission, respond, settle
from litserve.web.streaming import StreamBody
from litserve.web.validation import refused_body, while_coming

__all__ = ["ChatRoute", "models"]

DONE = b"data: [DONE]\n\n"

logger = logging.getLogger(__name__)


def _parse(body: str | bytes) -> ChatCompletionRequest | Outcome:
    try:
        return ChatCompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        return Outcome.failure(refused_body(exc))


def _choice_context(context: RequestContext | None, fields: dict[str, Any]) -> RequestContext | None:
    """The context a choice's hooks see: the request's fields other than `messages` (LitServe's mapping)."""
    if context is None:
        return None
    choice = RequestContext(context.method, context.path, context.query_params, context.headers, context.client)
    choice.update(fields)
    return choice


@final
class ChatRoute:
    """POST handler of an `OpenAISpec` endpoint."""

    def __init__(self, endpoint: Endpoint, context: WebContext) -> None:
        self.name = f"chat:{endpoint.path}"
        self._queue = endpoint.queue
        self._counters = endpoint.counters
        self._timeout_s = context.timeout_s
        self._admission = Admission(endpoint, context, accept_bearer=True)
        self._path = endpoint.path
        self._server_timing = context.options.server_timing

    async def handle(self) -> Response:
        arrival_s = time.monotonic()
        answer = await self._answer(arrival_s)
        answer = settle(self._counters, self._path, answer, time.monotonic() - arrival_s, self._server_timing)
        if isinstance(answer, Response):
            return answer
        if answer.status >= 400:
            answer = openai_error(answer)
        if len(answer.body) >= GZIP_MIN_BYTES:  # a whole completion, as any large answer (never a stream)
            answer = await gzip_outcome(answer, request.headers.get("Accept-Encoding"))
        return respond(answer)

    async def _answer(self, arrival_s: float) -> Outcome | Response:
        refused, context = await self._admission.check()
        if refused is not None:
            return refused
        parsed = _parse(await while_coming(self._queue, request.get_data(cache=False, as_text=False)))
        follow_client(request.scope)  # a client that left while its body was read is not served
        if isinstance(parsed, Outcome):
            return parsed
        if self._counters.inspector is not None:
            self._counters.inspector.hold(parsed)
        fields = parsed.model_dump(exclude={"messages"}) if context is not None else {}
        completion_id, created = new_completion_id(), int(time.time())
        bodies: list[StreamBody] = []
        timers: list[Deadline] = []
        try:
            for index in range(parsed.n):
                choice = parsed if parsed.n == 1 else parsed.model_copy(update={"n": 1})
                shape = ChatShape.for_choice(parsed, index, completion_id, created)
                trailer = DONE if parsed.n == 1 else b""  # several choices: [DONE] once, after all of them
                started = self._submit(choice, _choice_context(context, fields), shape, arrival_s, timers, trailer)
                if index > 0 and isinstance(started, StreamBody):
                    started.count_nothing()  # the request counts once, by its first choice
                if isinstance(started, Outcome):
                    _cancel_all(bodies)
                    for timer in timers:
                        timer.cancel()
                    return started
                bodies.append(started)
            if not parsed.stream:
                return await self._collect(bodies, timers)
            if parsed.n == 1:
                return await self._stream(bodies[0])
            return await self._stream_choices(bodies)
        except BaseException:
            for timer in timers:
                timer.cancel()
            raise

    def _submit(
        self,
        payload: ChatCompletionRequest,
        context: RequestContext | None,
        shape: ChatShape,
        arrival_s: float,
        timers: list[Deadline],
        trailer: bytes,
    ) -> StreamBody | Outcome:
        loop = asyncio.get_running_loop()
        reply = StreamReply(loop, StreamItems(), StreamWindow())
        submission = submit(self._queue, payload, reply, context, self._timeout_s, arrival_s, shape)
        if isinstance(submission, Outcome):
            return submission
        if payload.stream:  # a stream's timeout is its body's idle deadline
            return StreamBody(reply, submission, self._counters, self._timeout_s, arrival_s, sse_error_event, trailer)
        timer = submission.expire_on(loop)  # one document: the whole request has `timeout`
        if timer is not None:
            timers.append(timer)
        return StreamBody(reply, submission, self._counters, None, arrival_s, sse_error_event, trailer)

    async def _stream(self, body: StreamBody) -> Outcome | Response:
        counters = self._counters
        counters.in_flight += 1  # until the first chunk (or the error) is here
        try:
            first = await body.first()
        finally:
            counters.in_flight -= 1
        if first is None or isinstance(first, Outcome):
            return first or Outcome(200, DONE, "text/event-stream")
        return body.response(first)

    async def _stream_choices(self, bodies: list[StreamBody]) -> Outcome | Response:
        """Several streamed choices: the first one's first chunk decides the status; then every choice's
        events interleave as they come (each names its index), a later choice's failure being its error event.

        Nothing waits for all choices to start: with one worker they run one after the other, and each
        must be able to finish (its window drained) before the next one can begin.
        """
        counters = self._counters
        counters.in_flight += 1
        try:
            first = await bodies[0].first()
        except BaseException:
            _cancel_all(bodies)
            raise
        finally:
            counters.in_flight -= 1
        if first is None or isinstance(first, Outcome):
            _cancel_all(bodies)
            return first or Outcome(200, DONE, "text/event-stream")
        streams = [bodies[0].iterate(first), *(_later_choice(body) for body in bodies[1:])]
        response = Response(_interleave(streams), status=200, content_type="text/event-stream")
        response.timeout = None
        return response

    async def _collect(self, bodies: list[StreamBody], timers: list[Deadline]) -> Outcome:
        counters = self._counters
        counters.in_flight += 1
        try:
            answers = await asyncio.gather(*(body.collect() for body in bodies))
        except BaseException:
            _cancel_all(bodies)
            raise
        finally:
            counters.in_flight -= 1
            for timer in timers:
                timer.cancel()
        for answer in answers:
            if answer.status >= 400:
                _cancel_all(bodies)
                return answer
        if len(answers) == 1:
            return answers[0]
        return Outcome(200, _join_choices([json.loads(answer.body) for answer in answers]))


async def _later_choice(body: StreamBody) -> Any:
    """A choice after the first: its events once it starts, or its failure as one error event."""
    first = await body.first()
    if isinstance(first, Outcome):
        yield sse_error_event(first)
        return
    async for data in body.iterate(first):
        yield data


async def _interleave(streams: list[Any]) -> Any:
    """Bytes from every stream as they come, then `[DONE]`; closing it closes them all (their requests end).

    The hand-over holds one item: a choice is read only as fast as the client reads, so its window and
    its idle deadline work as for a single stream.
    """
    merged: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)

    async def pump(stream: Any) -> None:
        try:
            async for data in stream:
                await merged.put(data)
        except Exception:  # a choice that breaks ends with what it sent; the others go on
            logger.exception("a streamed choice failed")
        finally:
            await stream.aclose()
        await merged.put(None)

    tasks = [asyncio.ensure_future(pump(stream)) for stream in streams]
    try:
        remaining = len(tasks)
        while remaining:
            data = await merged.get()
            if data is None:
                remaining -= 1
            else:
                yield data
        yield DONE
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _cancel_all(bodies: list[StreamBody]) -> None:
    for body in bodies:
        body.cancel()


def _join_choices(documents: list[dict[str, Any]]) -> bytes:
    """One `chat.completion` from the documents of each choice: their choices in order, usage summed."""
    joined = dict(documents[0])
    joined["choices"] = [choice for document in documents for choice in document["choices"]]
    joined["usage"] = {
        key: sum(document["usage"][key] for document in documents)
        for key in ("prompt_tokens", "completion_tokens", "total_tokens")
    }
    return encode_json(joined)


def models(context: WebContext, names: list[str]) -> Any:
    """`GET /v1/models`: the models this server's chat endpoints serve, as OpenAI lists them."""
    created = int(time.time())
    document = encode_json(
        {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": created, "owned_by": "litserve"} for name in names],
        }
    )

    async def models() -> Response:
        return Response(document, status=200, content_type="application/json")

    return models
