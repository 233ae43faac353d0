"""The status counts every request once, in exactly one outcome, whatever the mix of a load.

Hypothesis draws loads: requests of every kind, sent together to a plain and a streaming endpoint:
answered, refused (4xx), failed (5xx), past their deadline, clients that leave before or after their
answer, streams cut by their idle deadline, streams their client leaves half-way. Once the load has
settled, the requests counted equal the requests sent, no outcome has fewer than the clients saw, and
nothing is left queued or in flight.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from litserve import HTTPException, LitAPI, LitServer
from litserve.status import EndpointStatus, ServerStatus, WorkerState
from litserve.testing import serving
from tests.helpers import wait_until
from tests.sync import CrossSemaphore

TIMEOUT_S = 0.5  # the server's timeout: requests that wait on `release` pass it
WAIT_S = 20.0  # bound on every wait of a client or of the test
PLAIN = ("ok", "4xx", "5xx", "timeout", "leave-before", "leave-after")
STREAMED = ("stream-ok", "stream-4xx", "stream-cut", "stream-left")
BLOCKING = ("timeout", "leave-before", "stream-cut", "stream-left")  # their hooks wait on `release`
OUTCOMES = ("ok", "client_errors", "server_errors", "timed_out", "cancelled")


class PlainAPI(LitAPI):
    """The request's kind decides its fate: 4xx from decode_request, 5xx or a long wait from predict."""

    def __init__(self, release: CrossSemaphore, entered: CrossSemaphore) -> None:
        super().__init__()
        self.release = release
        self.entered = entered  # a "leave-before" request reached predict: its client may leave now

    def decode_request(self, request: Any) -> Any:
        if request["kind"] == "4xx":
            raise HTTPException(400, "refused")
        return request["kind"]

    def predict(self, kind: Any) -> Any:
        if kind == "5xx":
            raise RuntimeError("failed")
        if kind == "leave-before":
            self.entered.release()
        if kind in BLOCKING:
            self.release.acquire(WAIT_S)  # the test lets it go once every client is done
        return kind


class StreamAPI(LitAPI):
    """Streams a few chunks; some streams go quiet after the first until the test lets them go."""

    def __init__(self, release: CrossSemaphore) -> None:
        super().__init__(stream=True, api_path="/stream")
        self.release = release

    def decode_request(self, request: Any) -> Any:
        if request["kind"] == "stream-4xx":
            raise HTTPException(400, "refused")
        return request["kind"]

    def predict(self, kind: Any) -> Iterator[Any]:
        yield {"chunk": 0}
        if kind in BLOCKING:
            self.release.acquire(WAIT_S)
        yield {"chunk": 1}

    def encode_response(self, outputs: Iterator[Any]) -> Iterator[Any]:
        yield from outputs


# --- the clients -------------------------------------------------------------------------------------


def _connect(server: LitServer, path: str, kind: str) -> socket.socket:
    assert server.port is not None
    body = json.dumps({"kind": kind}).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)
    sock.sendall(f"{head}\r\nConnection: close\r\n\r\n".encode() + body)
    return sock


def _reset(sock: socket.socket) -> None:
    """Close with a reset, as a client that dies does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _read_all(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _seen(response: bytes) -> str:
    """The outcome a client that read its whole answer saw."""
    status = int(response.split(b" ", 2)[1])
    if status != 200:
        return {504: "timed_out"}.get(status, "client_errors" if status < 500 else "server_errors")
    if b'"status":504' in response:
        return "timed_out"  # a stream that its deadline ended
    return "server_errors" if b'"error"' in response else "ok"


def _send(server: LitServer, entered: CrossSemaphore, kind: str) -> str | None:
    """Send one request of `kind`; the outcome its client saw, or None when it left without knowing."""
    sock = _connect(server, "/stream" if kind.startswith("stream") else "/predict", kind)
    try:
        if kind == "leave-before":
            assert entered.acquire(WAIT_S)  # one of them runs (the server has it), waiting on `release`
            _reset(sock)  # gone before any answer
            return None
        if kind == "stream-left":
            while b'{"chunk":0}' not in (received := sock.recv(65536)):
                assert received, "the stream ended before its first chunk"
            _reset(sock)
            return None
        seen = _seen(_read_all(sock))
        if kind == "leave-after":
            _reset(sock)
        return seen
    finally:
        sock.close()


# --- the property -----------------------------------------------------------------------------------


def _totals(status: ServerStatus) -> dict[str, int]:
    return {name: sum(getattr(e, name) for e in status.endpoints) for name in OUTCOMES}


def _is_settled(status: ServerStatus) -> bool:
    endpoints: tuple[EndpointStatus, ...] = status.endpoints
    return all(e.queue_depth == 0 and e.in_flight == 0 for e in endpoints) and all(
        w.state is WorkerState.IDLE for w in status.workers
    )


loads = st.lists(st.sampled_from(PLAIN + STREAMED), min_size=1, max_size=6)


@pytest.mark.timeout(120)
def test_every_request_counts_once_in_exactly_one_outcome(worker_mode: str) -> None:
    release, entered = CrossSemaphore(), CrossSemaphore()
    apis = [PlainAPI(release, entered), StreamAPI(release)]
    with (
        serving(apis, worker_mode=worker_mode, timeout=TIMEOUT_S, workers_per_device=6) as server,
        concurrent.futures.ThreadPoolExecutor(6) as clients,
    ):

        @settings(
            max_examples=10,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(load=loads)
        @example(load=[*PLAIN, *STREAMED])  # every kind at once, whatever else is drawn
        def counted_once(load: list[str]) -> None:
            before = _totals(server.status)
            seen = list(clients.map(lambda kind: _send(server, entered, kind), load))
            release.release(sum(kind in BLOCKING for kind in load))  # every client is done: let the hooks go
            # Settled: nothing queued, in flight or running, and every request counted (a missing count
            # fails here, an extra one below). A stream's end is counted on the loop after its worker is done.
            expected = sum(before.values()) + len(load)
            assert wait_until(
                lambda: _is_settled(server.status) and sum(_totals(server.status).values()) >= expected,
                timeout_s=WAIT_S,
            ), (load, seen, server.status)
            after = _totals(server.status)
            counted = {name: after[name] - before[name] for name in OUTCOMES}
            assert sum(counted.values()) == len(load), (load, seen, counted)
            for name in OUTCOMES:  # the clients that left are the only ones whose outcome may be any
                assert counted[name] >= seen.count(name), (load, seen, counted)

        counted_once()
