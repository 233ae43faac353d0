"""The lean predict route (`litserve.web.lean`) answers exactly as Quart's view of the same route.

Each request goes, in-process over raw ASGI, once to the Quart app (the view) and once to the serving
stack (where `LeanRoutes` answers the predict path), and both answers must match: status, headers
(Hypercorn adds its own Date and Server to both, outside the app), body and the endpoint's counters.
The socket-level behaviours (disconnects, read timeout, stop) are the other web tests', which run
through the lean route since every real server serves it.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from pydantic import BaseModel

import litserve as ls
from litserve.web.lean import LeanRoutes
from tests.app_client import AppClient

Message = dict[str, Any]


class Echo(ls.LitAPI):
    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request: Any, context: Any) -> Any:
        if request.get("fail"):
            raise ls.HTTPException(418, "teapot")
        return request

    def predict(self, x: Any, context: Any) -> Any:
        return {
            "x": x,
            "big": "y" * int(x.get("big", 0)),
            "query": sorted(context.query_params.items()),
            "headers": sorted(context.headers.items()),
            "client": context.client,
            "method": context.method,
            "path": context.path,
        }

    def encode_response(self, output: Any) -> Any:
        if output["x"].get("crash"):
            raise ValueError("boom")
        return output


class Point(BaseModel):
    x: int


class Typed(ls.LitAPI):
    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request: Point) -> int:
        return request.x

    def predict(self, x: int) -> int:
        return x + 1

    def encode_response(self, output: int) -> dict[str, int]:
        return {"y": output}


class Tokens(ls.LitAPI):
    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request: Any) -> int:
        return int(request["n"])

    def predict(self, n: int) -> Iterator[dict[str, int]]:
        for i in range(n):
            yield {"token": i}

    def encode_response(self, output: Iterator[Any]) -> Iterator[Any]:
        yield from output


def _scope(path: str, headers: Sequence[tuple[str, str]], query: bytes) -> Message:
    raw = [(name.lower().encode(), value.encode()) for name, value in [("host", "127.0.0.1"), *headers]]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _exchange(app: Any, scope: Message, body_parts: Sequence[bytes]) -> tuple[int, list[Any], bytes]:
    incoming: list[Message] = [
        {"type": "http.request", "body": part, "more_body": i < len(body_parts) - 1}
        for i, part in enumerate(body_parts)
    ]
    done = asyncio.Event()
    sent: list[Message] = []

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await done.wait()  # the client stays until its answer is complete
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    await asyncio.wait_for(app(scope, receive, send), 30)
    start = sent[0]
    headers = sorted((bytes(name).lower(), bytes(value)) for name, value in start["headers"])
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def _both(
    client: AppClient,
    path: str,
    body: bytes | Sequence[bytes],
    headers: Sequence[tuple[str, str]] = (),
    query: bytes = b"",
) -> tuple[Any, Any]:
    parts = client._parts
    assert isinstance(parts.asgi, LeanRoutes)
    body_parts = [body] if isinstance(body, bytes) else list(body)
    quart, lean = (
        client._run(_exchange(app, _scope(path, headers, query), body_parts)) for app in (parts.app, parts.asgi)
    )
    return quart, lean


JSON = ("content-type", "application/json")


@pytest.mark.parametrize(
    ("body", "headers", "query"),
    [
        (b'{"a": 1}', [JSON], b""),
        (b'{"a": 1}', [JSON, ("x-user", "u1"), ("X-User", "u2")], b"q=1&q=2&e=&bad=%ff"),
        (b"not json", [JSON], b""),
        (b"", [JSON], b""),
        (b'{"fail": 1}', [JSON], b""),
        (b'{"crash": 1}', [JSON], b""),
        ([b'{"a"', b": 2}"], [JSON], b""),
        (b'{"big": 5000}', [JSON], b""),
        (b'{"big": 5000}', [JSON, ("accept-encoding", "gzip")], b""),
        (b"[1, 2]", [], b""),
    ],
)
def test_lean_answers_as_quart(body: Any, headers: Any, query: bytes) -> None:
    client = AppClient(Echo(), max_payload_size=8192)
    try:
        quart, lean = _both(client, "/predict", body, headers, query)
    finally:
        client.close()
    assert lean == quart
    if ("accept-encoding", "gzip") in headers:
        assert json.loads(gzip.decompress(lean[2]))["big"] == "y" * 5000


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"x" * 200, [JSON, ("content-length", "200")]),  # refused before the body is read
        ([b"x" * 60, b"x" * 60], [JSON]),  # a chunked body that grows past the limit
    ],
)
def test_lean_refuses_large_bodies_as_quart(body: Any, headers: Any) -> None:
    client = AppClient(Echo(), max_payload_size=100)
    try:
        quart, lean = _both(client, "/predict", body, headers)
    finally:
        client.close()
    assert lean == quart
    assert lean[0] == 413


@pytest.mark.parametrize("key", [None, "wrong", "secret"])
def test_lean_checks_the_api_key_as_quart(key: str | None) -> None:
    client = AppClient(Typed(), api_key="secret")
    headers = [JSON] if key is None else [JSON, ("x-api-key", key)]
    try:
        quart, lean = _both(client, "/predict", b'{"x": 1}', headers)
    finally:
        client.close()
    assert lean == quart
    assert lean[0] == (200 if key == "secret" else 401)


@pytest.mark.parametrize("body", [b'{"x": 1}', b'{"x": "no"}', b"{"])
def test_lean_validates_typed_bodies_as_quart(body: bytes) -> None:
    client = AppClient(Typed())
    try:
        quart, lean = _both(client, "/predict", body, [JSON])
    finally:
        client.close()
    assert lean == quart


@pytest.mark.parametrize("n", [0, 1, 5])
def test_lean_streams_as_quart(n: int) -> None:
    api = Tokens(stream=True)
    client = AppClient(api)
    try:
        quart, lean = _both(client, "/predict", json.dumps({"n": n}).encode(), [JSON])
    finally:
        client.close()
    assert lean == quart
    assert lean[2].count(b"\n") == n


def test_lean_counts_as_quart() -> None:
    client = AppClient(Echo(), max_payload_size=100)
    try:
        for body in (b'{"a": 1}', b"nope", b"x" * 200, b'{"crash": 1}'):
            _both(client, "/predict", body, [JSON])
        status = client.status.endpoints[0]
    finally:
        client.close()
    # every request went once through each layer, and each counted it the same way
    assert (status.ok, status.client_errors, status.server_errors) == (2, 4, 2)
    assert dict(status.status_codes) == {200: 2, 400: 2, 413: 2, 500: 2}


class Held(ls.LitAPI):
    """predict waits until the test lets it go (bounded), so a client can leave while it runs.

    The events are the class's: each worker runs its own copy of the LitAPI.
    """

    started = threading.Event()
    release = threading.Event()

    def setup(self, device: str) -> None:
        pass

    def predict(self, x: Any) -> Any:
        self.started.set()
        self.release.wait(30)
        return x


async def _leave_while_running(app: Any, api: Held) -> list[Message]:
    sent: list[Message] = []
    body = [{"type": "http.request", "body": b'{"a": 1}', "more_body": False}]

    async def receive() -> Message:
        if body:
            return body.pop(0)
        await asyncio.get_running_loop().run_in_executor(None, api.started.wait, 30)
        return {"type": "http.disconnect"}  # the client leaves while predict runs

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(_scope("/predict", [JSON], b""), receive, send), 30)
    return sent


@pytest.mark.parametrize("layer", ["quart", "lean"])
def test_a_client_that_leaves_while_predict_runs_is_not_answered_and_counts_cancelled(layer: str) -> None:
    Held.started, Held.release = threading.Event(), threading.Event()
    api = Held()
    client = AppClient(api)
    try:
        parts = client._parts
        sent = client._run(_leave_while_running(parts.app if layer == "quart" else parts.asgi, api))
        status = client.status.endpoints[0]
    finally:
        Held.release.set()
        client.close()
    assert sent == []
    assert status.cancelled == 1 and status.ok == 0
