"""The predict routes served straight from ASGI, in front of the Quart app.

Quart costs a request about a third of our throughput on a trivial model: its request and app contexts,
URL matching, two tasks per request (one reads the body while the other runs the view), the Response
object and its headers. `LeanRoutes` answers `POST <endpoint path>` itself and hands every other request
(other paths and methods, 404/405, docs, metrics, the status page, form bodies, lifespan) to Quart.

It is the same route with another adapter, not a second implementation: `PredictRoute.answer` takes
every decision against `Incoming`, and this module only reads the request from the ASGI scope and writes
the answer to `send`. What Quart did around the view is kept, each in one place:

- the body is read up to `max_payload_size` (413, with or without Content-Length) within `read_timeout`
  (408), both answered as Quart's own refusals are (`refused`), and counted for the endpoint;
- a client that leaves cancels the request, as Quart's body reader did: once the body is read a
  watcher waits for `http.disconnect` and tells the request's `ClientWatch` (the connection guard's,
  or one made here when there is no guard), which cancels the task the route follows;
- an unexpected error is logged, recorded and answered 500 (`unexpected`), as Quart's error handler does.

Form bodies (`application/x-www-form-urlencoded`, `multipart/form-data`) go to Quart, whose parser reads them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, final
from urllib.parse import parse_qsl

from pydantic import BaseModel
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import HTTPException as WerkzeugHTTPException
from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout

from litserve.engine.deadlines import Deadlines
from litserve.engine.messages import Outcome
from litserve.exceptions import INTERNAL_ERROR, ErrorResponse, refusal
from litserve.request_context import RequestContext
from litserve.web.context import WebContext, count_refusal
from litserve.web.disconnect_listener import QueueListener, listen_on
from litserve.web.guard import CLIENT_WATCH, ClientWatch
from litserve.web.routes import PredictRoute
from litserve.web.stack import ASGIApp, Receive, Send
from litserve.web.streaming import NDJSON, StreamStarted
from litserve.web.validation import FORM_MIMETYPES, parse_payload

__all__ = ["LeanIncoming", "LeanRoutes", "parse_qsl_as_quart", "refused", "send_outcome", "unexpected"]

logger = logging.getLogger("litserve.web.app")  # the logger Quart's error handler writes to


def refused(context: WebContext, path: str, method: str, code: int | None) -> ErrorResponse:
    """A refusal of the web layer (Quart's 404/405/413/408...), counted for the endpoint it names."""
    answer = refusal(code or INTERNAL_ERROR.status)
    count_refusal(context.endpoints, path, method, answer)
    return answer


def unexpected(context: WebContext, path: str, method: str, exc: Exception) -> ErrorResponse:
    """An error no route answered: logged, recorded for the status page, counted, answered 500."""
    logger.error("unexpected error while answering a request", exc_info=exc)
    context.errors.record("litserve-http", exc)
    count_refusal(context.endpoints, path, method, INTERNAL_ERROR)
    return INTERNAL_ERROR


class _ClientLeft(Exception):
    """The client went away while its body was being read: nothing is answered."""


@final
class LeanIncoming:
    """A request read from its ASGI scope and `receive`, as Quart would have read it (see `web.incoming`)."""

    __slots__ = (
        "_headers",
        "_listener",
        "_max_bytes",
        "_read_timeout_s",
        "_receive",
        "_task",
        "_timed_out",
        "_watcher",
        "scope",
        "watch",
    )

    def __init__(
        self, scope: MutableMapping[str, Any], receive: Receive, max_bytes: int | None, read_timeout_s: float | None
    ) -> None:
        self.scope = scope
        self._receive = receive
        self._max_bytes = max_bytes
        self._read_timeout_s = read_timeout_s
        self._timed_out = False
        self._task: asyncio.Task[Any] | None = None  # the task reading the body (cancelled at the read deadline)
        self._watcher: asyncio.Future[None] | None = None
        self._listener: QueueListener | None = None
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            if key not in headers:  # the first value, as Quart's headers.get gives it
                headers[key] = value.decode("latin-1")
        self._headers = headers
        watch = scope.get(CLIENT_WATCH)
        if watch is None:  # no connection guard (an in-process client): the watch is ours
            watch = scope[CLIENT_WATCH] = ClientWatch()
        self.watch: ClientWatch = watch

    def header(self, name: str) -> str | None:
        return self._headers.get(name.lower())

    def is_form(self) -> bool:
        return self._headers.get("content-type", "").lower().startswith(FORM_MIMETYPES)

    def context(self) -> RequestContext:
        scope = self.scope
        client = (scope.get("client") or ("<local>",))[0]
        # Quart's headers: Remote-Addr first, then every header in order (a repeated name keeps its last value).
        headers = {"remote-addr": client}
        for name, value in scope["headers"]:
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        query = parse_qsl_as_quart(scope.get("query_string", b""))
        return RequestContext(scope["method"], scope["path"], query, headers, client or None)

    async def payload(self, body_model: type[BaseModel] | None) -> Any:
        body = await self._body()
        self._watch_client_leave()
        return parse_payload(body, body_model)

    def close(self) -> None:
        """The request is answered (or abandoned): stop watching its client."""
        if self._listener is not None:
            self._listener.stop()
        if self._watcher is not None:
            self._watcher.cancel()

    def _watch_client_leave(self) -> None:
        """From now on, a client that leaves is told to the request's `ClientWatch`: by a listener on the
        server's receive queue behind the connection guard, else by a task that waits in `receive()`."""
        watch, raw = self.watch, self.watch.receive
        if raw is not None:
            self._listener = listen_on(raw, watch.left)
        if self._listener is None:
            self._watcher = asyncio.ensure_future(self._watch_client())

    async def _body(self) -> bytes:
        max_bytes = self._max_bytes
        length = self._headers.get("content-length")
        if max_bytes is not None and length is not None and length.isdigit() and int(length) > max_bytes:
            raise RequestEntityTooLarge()
        self._task = task = asyncio.current_task()
        deadline = None
        if self._read_timeout_s is not None and task is not None:
            loop = asyncio.get_running_loop()
            deadline = Deadlines.of(loop, "read").at(time.monotonic() + self._read_timeout_s, self._time_out)
        try:
            return await self._read(max_bytes)
        except asyncio.CancelledError:
            if not self._timed_out:
                raise
            if task is not None and hasattr(task, "uncancel"):  # 3.11+: take back our own cancel
                task.uncancel()
            raise RequestTimeout() from None
        finally:
            if deadline is not None:
                deadline.cancel()

    async def _read(self, max_bytes: int | None) -> bytes:
        receive = self._receive
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientLeft
            if message["type"] != "http.request":
                continue
            chunk = message.get("body", b"")
            if chunk:
                parts.append(chunk)
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise RequestEntityTooLarge()
            if not message.get("more_body", False):
                return parts[0] if len(parts) == 1 else b"".join(parts)

    def _time_out(self) -> None:
        self._timed_out = True
        if self._task is not None:
            self._task.cancel()

    async def _watch_client(self) -> None:
        """After the body: wait for the client to leave, and say so to the request's `ClientWatch`."""
        receive, watch = self._receive, self.watch
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not watch.has_left:  # the connection guard saw it pass and told the watch already
                    watch.left()
                return


def parse_qsl_as_quart(query_string: bytes) -> ImmutableMultiDict[str, str]:
    """The query parameters as Quart's `request.args` parses them (Werkzeug's rules, bad bytes kept quoted)."""
    return ImmutableMultiDict(parse_qsl(query_string.decode(), keep_blank_values=True, errors="werkzeug.url_quote"))


@final
class LeanRoutes:
    """The ASGI app in front of Quart: `POST <path>` of a predict endpoint is served here, the rest by Quart."""

    def __init__(self, app: ASGIApp, routes: Mapping[str, PredictRoute], context: WebContext) -> None:
        self._app = app
        self._routes = dict(routes)
        self._context = context
        self._max_bytes = context.max_payload_bytes
        self._read_timeout_s = context.options.read_timeout_s
        # A stream's chunks may skip the connection guard's `send` wrapper (it only needs the start), but
        # never a user's middleware: one may hold the start back until the body comes (gzip) or count it.
        self._direct_body_send = not context.middlewares

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            route = self._routes.get(scope["path"])
            if route is not None:
                incoming = LeanIncoming(scope, receive, self._max_bytes, self._read_timeout_s)
                if not incoming.is_form():
                    await self._serve(route, incoming, send)
                    return
        await self._app(scope, receive, send)

    async def _serve(self, route: PredictRoute, incoming: LeanIncoming, send: Send) -> None:
        path = incoming.scope["path"]
        started = False  # a stream's status line went out: an error after it cannot be answered again
        try:
            answer = await route.answer(incoming)
            if isinstance(answer, StreamStarted):
                started = True
                await _send_stream(send, answer, incoming.watch.send if self._direct_body_send else None)
            else:
                await send_outcome(send, answer)
        except _ClientLeft:
            return  # before its body was read: nothing was queued, nothing is answered
        except WerkzeugHTTPException as exc:  # 413 and 408 from the body read
            await send_outcome(send, Outcome.failure(refused(self._context, path, "POST", exc.code)))
        except asyncio.CancelledError:
            if not incoming.watch.has_left:
                raise
            _uncancel()  # the client left: the request ends quietly, as Quart's cancelled view did
        except Exception as exc:
            if started:  # counted by how the stream ended; the connection is Hypercorn's to close
                logger.error("unexpected error while streaming an answer", exc_info=exc)
                self._context.errors.record("litserve-http", exc)
                return
            await send_outcome(send, Outcome.failure(unexpected(self._context, path, "POST", exc)))
        finally:
            incoming.close()


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):  # 3.11+
        while task.cancelling():
            task.uncancel()


async def send_outcome(send: Send, outcome: Outcome) -> None:
    """A whole answer: its status line and headers, then its body in one message."""
    body = outcome.body
    headers = [(b"content-type", outcome.content_type.encode("latin-1"))]
    headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in outcome.headers]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": outcome.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_stream(send: Send, started: StreamStarted, body_send: Send | None) -> None:
    """The status line through `send`, then the chunks through `body_send` when there is one (the server's
    own `send` under the connection guard's, which only needed to see the start; no middleware between)."""
    body, start = started.body, started.start
    media_type = NDJSON if start is None else start.media_type
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", media_type.encode())]})
    await body.send_asgi(start, body_send or send)
