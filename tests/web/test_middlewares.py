"""`middlewares=`: ASGI middlewares around the app, Starlette's convention (`cls(app, **kwargs)`), on a real socket."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

import pytest
import requests
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from litserve import LitAPI, LitServer
from litserve.extensions import check_middlewares
from litserve.status import ServerState
from litserve.web.stack import build_stack
from tests.apis import SquareAPI
from tests.helpers import free_port, port_is_free, post

Start = Callable[..., LitServer]


class Trace:
    """A plain ASGI middleware: adds its name to the `x-trace` response header."""

    def __init__(self, app: Any, name: str = "trace") -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan never reaches a middleware: the server keeps it
            raise AssertionError(f"a middleware got a {scope['type']} scope")

        async def traced(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message["headers"] if k != b"x-trace"]
                before = dict(message["headers"]).get(b"x-trace")
                value = self.name.encode() if before is None else before + b"," + self.name.encode()
                message = {**message, "headers": [*headers, (b"x-trace", value)]}
            await send(message)

        await self.app(scope, receive, traced)


class RequestIdMiddleware(BaseHTTPMiddleware):
    """LitServe's own example (tests/unit/test_middlewares.py), on Starlette's BaseHTTPMiddleware."""

    def __init__(self, app: Any, length: int) -> None:
        self.length = length
        super().__init__(app)

    async def dispatch(self, request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["X-Request-Id"] = "0" * self.length
        return response


def test_a_plain_asgi_middleware_wraps_every_route(lit_server: Start) -> None:
    server = lit_server(SquareAPI(), middlewares=[Trace])
    response = post(server, {"input": 3})
    assert (response.json(), response.headers["x-trace"]) == ({"output": 9}, "trace")
    assert requests.get(server.url + "/health", timeout=10).headers["x-trace"] == "trace"
    assert requests.get(server.url + "/nope", timeout=10).headers["x-trace"] == "trace"


def test_the_last_middleware_of_the_list_is_outermost_as_with_starlette(lit_server: Start) -> None:
    server = lit_server(SquareAPI(), middlewares=[(Trace, {"name": "a"}), (Trace, {"name": "b"})])
    assert post(server, {"input": 1}).headers["x-trace"] == "a,b"  # a saw the answer first: it is inside b


def test_starlette_middlewares_with_arguments(lit_server: Start) -> None:
    server = lit_server(
        SquareAPI(),
        middlewares=[(RequestIdMiddleware, {"length": 5}), (TrustedHostMiddleware, {"allowed_hosts": ["127.0.0.1"]})],
    )
    response = post(server, {"input": 4.0})
    assert (response.status_code, response.json(), response.headers["X-Request-Id"]) == (200, {"output": 16.0}, "00000")
    # A loopback name passes the server's own Host guard; the user's middleware refuses it.
    untrusted = post(server, {"input": 4.0}, headers={"Host": "localhost"})
    assert untrusted.status_code == 400  # answered by the outer middleware, before the app's own checks


class BigAPI(LitAPI):
    def predict(self, x: Any) -> Any:
        return {"output": "x" * 5000}


def test_gzip_compresses_big_answers(lit_server: Start) -> None:
    server = lit_server(BigAPI(), middlewares=[(GZipMiddleware, {"minimum_size": 1000})])
    raw = requests.post(server.url + "/predict", json={}, headers={"Accept-Encoding": "gzip"}, stream=True, timeout=10)
    assert raw.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw.raw.read()) == b'{"output":"' + b"x" * 5000 + b'"}'


class BodyLog:
    """A plain ASGI middleware that keeps every response body message it passes on."""

    seen: list[dict[str, Any]] = []

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def logged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                BodyLog.seen.append(message)
            await send(message)

        await self.app(scope, receive, logged)


class CountingStreamAPI(LitAPI):
    def predict(self, x: Any) -> Any:
        for i in range(5):
            yield {"i": i}

    def encode_response(self, output: Any) -> Any:
        yield from output


def test_every_chunk_of_a_stream_passes_through_the_middlewares(lit_server: Start) -> None:
    """The lean route may send a stream's chunks beneath the connection guard, never beneath a middleware."""
    BodyLog.seen = []
    server = lit_server(CountingStreamAPI(stream=True), middlewares=[BodyLog])
    with requests.post(server.url + "/predict", json={}, stream=True, timeout=10) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines == [b'{"i":%d}' % i for i in range(5)]
    assert [m["body"] for m in BodyLog.seen if m["body"]] == [b'{"i":%d}\n' % i for i in range(5)]
    assert BodyLog.seen[-1].get("more_body", False) is False  # the end went through it too


def test_gzip_compresses_a_stream(lit_server: Start) -> None:
    server = lit_server(CountingStreamAPI(stream=True), middlewares=[(GZipMiddleware, {"minimum_size": 0})])
    raw = requests.post(server.url + "/predict", json={}, headers={"Accept-Encoding": "gzip"}, stream=True, timeout=10)
    assert raw.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw.raw.read()) == b"".join(b'{"i":%d}\n' % i for i in range(5))


def test_middlewares_serve_both_worker_modes(start_server: Start) -> None:
    server = start_server(SquareAPI(), middlewares=[Trace])
    assert post(server, {"input": 6}).headers["x-trace"] == "trace"


class BrokenMiddleware:
    def __init__(self, app: Any, *, required: int) -> None:
        self.app = app


def test_a_middleware_that_cannot_be_built_fails_start_and_leaves_nothing_running() -> None:
    port = free_port()
    server = LitServer(SquareAPI(), accelerator="cpu", middlewares=[BrokenMiddleware])
    with pytest.raises(TypeError, match="required"):
        server.start(port=port)
    assert server.state is ServerState.FAILED
    assert port_is_free(port)


@pytest.mark.parametrize(
    ("middlewares", "message"),
    [
        ((Trace, {"name": "a"}), "must be a list"),
        ([(Trace,)], r"\(class, kwargs dict\)"),
        ([(Trace, "name=a")], r"\(class, kwargs dict\)"),
        ([("not callable", {})], r"\(class, kwargs dict\)"),
        ([42], "ASGI middleware class"),
    ],
)
def test_bad_middlewares_are_a_type_error_at_construction(middlewares: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        LitServer(SquareAPI(), middlewares=middlewares)


def test_no_middlewares_means_no_layer() -> None:
    assert check_middlewares(None) == () and check_middlewares([]) == ()
    assert check_middlewares([Trace, (Trace, {"name": "x"})]) == ((Trace, {}), (Trace, {"name": "x"}))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    assert build_stack(app) is app  # Hypercorn then serves the Quart app itself: the hot path is unchanged
