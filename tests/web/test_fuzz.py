"""Property-based fuzzing of POST /predict: garbage in is a 4xx (or a closed connection), never a 5xx or a hang."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from litserve import HTTPException, LitAPI, LitServer
from litserve.testing import serving

_IO_TIMEOUT_S = 10.0
_LARGEST_INPUT = 10**100  # the square must stay far below Python's int -> str digit limit

CONTENT_TYPES = (
    "application/json",
    "text/plain",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=bogus",
    "multipart/form-data",  # no boundary at all
    None,  # no Content-Type header
)


class GuardedSquareAPI(LitAPI):
    """{"input": x} -> {"output": x*x}; any other shape is the client's fault: 400."""

    def decode_request(self, request: Any) -> Any:
        if not isinstance(request, dict):
            raise HTTPException(400, "the body must be a JSON object")
        x = request.get("input")
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise HTTPException(400, "'input' must be a number")
        if isinstance(x, int) and abs(x) > _LARGEST_INPUT:
            raise HTTPException(400, "'input' is too large")
        return x

    def predict(self, x: Any) -> Any:
        return x * x

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


# --- what gets thrown at the server ---------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity included, as Python's json writes and reads them


@dataclass(frozen=True)
class Nested:
    """Valid JSON nested `depth` deep; kept as a recipe so a failing example prints short."""

    depth: int
    opener: str  # "[" or "{"

    def encode(self) -> bytes:
        if self.opener == "[":
            return b"[" * self.depth + b"]" * self.depth
        return b'{"a":' * self.depth + b"1" + b"}" * self.depth


def _bytes(body: bytes | Nested) -> bytes:
    return body.encode() if isinstance(body, Nested) else body


bodies = st.one_of(
    st.binary(max_size=512),
    json_values.map(_dumps),
    st.fixed_dictionaries({"input": json_values}).map(_dumps),  # the right key, any value
    st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(_dumps),
    # deeply nested (valid) JSON, shallow and past the decoder's recursion limit
    st.builds(Nested, st.integers(1, 100) | st.sampled_from([1_000, 10_000, 100_000]), st.sampled_from("[{")),
    st.builds(lambda b, cut: b[:cut], st.just(b'{"input": 3}'), st.integers(0, 11)),  # valid JSON cut short
)

http_attacks = st.tuples(st.just("http"), bodies, st.sampled_from(CONTENT_TYPES))
# Content-Length larger than the body (or an unfinished chunked body), then the client stops writing.
truncated_attacks = st.tuples(st.sampled_from(["truncated", "truncated-chunked"]), bodies, st.integers(1, 4096))
# Three attacks in four go through requests; the fourth leaves its body unfinished on a raw socket.
attacks = st.sampled_from(["http", "http", "http", "truncated"]).flatmap(
    lambda way: http_attacks if way == "http" else truncated_attacks
)


# --- sending it -----------------------------------------------------------------------------------


def _post(session: requests.Session, url: str, body: bytes, content_type: str | None) -> int:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return session.post(url, data=body, headers=headers, timeout=_IO_TIMEOUT_S).status_code


def _send_truncated(server: LitServer, kind: str, body: bytes, missing: int) -> int | None:
    """Send an incomplete body, close the write side, read until the server closes: its status, or None."""
    port = server.port
    assert port is not None
    if kind == "truncated":
        framing = f"Content-Length: {len(body) + missing}\r\n"
        payload = body
    else:
        framing = "Transfer-Encoding: chunked\r\n"
        payload = f"{len(body) + missing:x}\r\n".encode() + body  # the chunk never completes, no last chunk
    head = f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{framing}\r\n"
    deadline_s = time.monotonic() + _IO_TIMEOUT_S
    received = b""
    with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=_IO_TIMEOUT_S)) as sock:
        sock.sendall(head.encode() + payload)
        sock.shutdown(socket.SHUT_WR)
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break  # closed by the server: an acceptable answer to a body that never arrives
            except TimeoutError:
                pytest.fail(f"the server neither answered nor closed within {_IO_TIMEOUT_S}s: {kind} {body[:80]!r}")
            if not chunk:
                break
            received += chunk
            assert time.monotonic() < deadline_s, f"the server kept sending for {_IO_TIMEOUT_S}s: {received[:200]!r}"
    if not received:
        return None
    status_line = received.split(b"\r\n", 1)[0]
    parts = status_line.split()
    assert len(parts) >= 2 and parts[0].startswith(b"HTTP/"), f"not an HTTP response: {received[:200]!r}"
    return int(parts[1])


def _assert_still_serves(session: requests.Session, url: str) -> None:
    response = session.post(url, json={"input": 3}, timeout=_IO_TIMEOUT_S)
    assert response.status_code == 200, response.text
    assert response.json() == {"output": 9}


# --- the properties -------------------------------------------------------------------------------


def test_garbage_bodies_get_a_4xx_never_a_5xx_or_a_hang() -> None:
    # The server is started inside the test (not in a module fixture) so the thread-leak check sees it
    # start and stop within this one test; hypothesis runs inside the `with` through an inner function.
    with serving(GuardedSquareAPI(), timeout=30) as server, requests.Session() as session:
        url = f"{server.url}/predict"

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],  # nested and binary bodies take a while on slow CI
        )
        @given(attack=attacks)
        def garbage_is_refused(attack: tuple[str, bytes | Nested, Any]) -> None:
            kind, recipe, extra = attack
            body = _bytes(recipe)
            if kind == "http":
                status: int | None = _post(session, url, body, extra)
                event(f"{kind} {extra} -> {status}")
                assert status is not None and status < 500, f"{status} for {extra!r} body {body[:120]!r}"
            else:
                status = _send_truncated(server, kind, body, extra)
                event(f"{kind} -> {status}")
                assert status is None or 400 <= status < 500, f"{status} for {kind} body {body[:120]!r}"
            _assert_still_serves(session, url)

        garbage_is_refused()
        _assert_still_serves(session, url)
        endpoint = server.status.endpoints[0]
        assert endpoint.server_errors == 0
        assert server.status.last_error is None


@pytest.mark.parametrize("depth", [10, 500, 999, 1000, 5000, 100_000])
@pytest.mark.parametrize("opener", ["[", "{"])
def test_deeply_nested_json_is_a_client_error(depth: int, opener: str) -> None:
    """A body nested deeper than the JSON decoder's recursion limit is still the client's fault (4xx)."""
    body = Nested(depth, opener).encode()
    with serving(GuardedSquareAPI()) as server, requests.Session() as session:
        url = f"{server.url}/predict"
        response = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=_IO_TIMEOUT_S)
        assert 400 <= response.status_code < 500, f"{response.status_code} {response.text} for depth {depth}"
        _assert_still_serves(session, url)


class _Responses:
    """Reads HTTP/1.1 responses (with Content-Length) off a raw socket, one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def _fill(self) -> bool:
        try:
            chunk = self._sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        self._buffer += chunk
        return bool(chunk)

    def next(self) -> tuple[int, dict[str, str], bytes] | None:
        """The next response, or None when the server closed the connection first."""
        while b"\r\n\r\n" not in self._buffer:
            if not self._fill():
                return None
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
        length = int(headers.get("content-length", "0"))
        while len(self._buffer) < length:
            if not self._fill():
                return None
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return int(status_line.split()[1]), headers, body


def test_an_answer_sent_before_the_body_arrived_keeps_the_connection_usable() -> None:
    """multipart/form-data without a boundary is refused, and may be refused without reading the body.

    Whether the server answers before or after reading a request's body, either it says `Connection:
    close`, or the connection stays usable: the body is read and the next request on it is answered. A
    keep-alive client (requests.Session, any connection pool) must never find the connection silently
    gone. The bytes go together: an answer given before the body is read is decided by the server, not
    by when the body's bytes arrive, so nothing here waits for a time window.
    """
    body = b'{"input": 3}'
    with serving(GuardedSquareAPI()) as server:
        port = server.port
        assert port is not None
        head = (
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        valid = head.replace(b"multipart/form-data", b"application/json") + body
        with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=_IO_TIMEOUT_S)) as sock:
            responses = _Responses(sock)
            sock.sendall(head + body + valid)
            refused = responses.next()
            assert refused is not None and 400 <= refused[0] < 500, refused
            try:
                answer = responses.next()
            except ConnectionResetError:
                answer = None  # closed with the unread request in its buffer: a reset, as closed
            if refused[1].get("connection", "").lower() == "close":
                assert answer is None, answer  # announced: a client opens a new connection
                return
            assert answer is not None, (
                f"the server answered {refused[0]}, then closed the keep-alive connection without "
                "`Connection: close`: the next request on it got no answer"
            )
            assert (answer[0], answer[2]) == (200, b'{"output":9}')
