"""1,000 requests at concurrency 64, good and bad mixed: every client gets its own answer and the counters agree."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import random
import socket
import threading
import time
from typing import Any

import pytest
import requests

from litserve import HTTPException, LitAPI, LitServer
from litserve.status import EndpointStatus
from litserve.testing import serving
from tests.helpers import Shared

TOTAL = 1_000
CONCURRENCY = 64
SLOW = 20  # predict blocks past the server's timeout: 504
HANG_UPS = 20  # the client sends a full request, then closes the socket while predict runs
INVALID_JSON = 100  # 400 before any hook runs
TEAPOT = 100  # decode_request raises HTTPException(418, "teapot")
BOOM = 100  # decode_request raises RuntimeError: 500
VALID = TOTAL - SLOW - HANG_UPS - INVALID_JSON - TEAPOT - BOOM

SERVER_TIMEOUT_S = 2.0
# Slow and hung-up predicts hold their worker until the test releases them at the end, so there must be
# more workers than blocked predicts or everything else would queue past the timeout.
WORKERS = SLOW + HANG_UPS + 8
CLIENT_TIMEOUT_S = 30.0
COUNTERS_DEADLINE_S = 30.0

MALFORMED_BODIES = (b"", b"{", b'{"kind": "ok", "input": }', b"not json", b"\xff\xfe\x00", b'{"kind": "ok"', b"[1, 2")


class MixedAPI(LitAPI):
    """{"kind": k, "input": x} -> {"output": x*x}; the kind decides how the request fails, if it does."""

    def __init__(self, hang_up_inputs: list[int]) -> None:
        super().__init__()
        self.release = Shared(threading.Event())
        self.entered = Shared({x: threading.Event() for x in hang_up_inputs})

    def decode_request(self, request: Any) -> Any:
        kind = request["kind"]
        if kind == "teapot":
            raise HTTPException(418, "teapot")
        if kind == "boom":
            raise RuntimeError("boom")
        return kind, request["input"]

    def predict(self, item: Any) -> Any:
        kind, x = item
        if kind in ("slow", "hang-up"):
            if kind == "hang-up":
                self.entered.value[x].set()
            assert self.release.value.wait(60), "the test never released the blocked predicts"
        return x * x

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


def _kinds() -> list[str]:
    kinds = (
        ["valid"] * VALID
        + ["invalid-json"] * INVALID_JSON
        + ["teapot"] * TEAPOT
        + ["boom"] * BOOM
        + ["slow"] * SLOW
        + ["hang-up"] * HANG_UPS
    )
    random.Random(1234).shuffle(kinds)
    return kinds


class _Sessions:
    """One requests.Session per client thread, all closed at the end."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[requests.Session] = []

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._all:
                session.close()


def _hang_up(server: LitServer, api: MixedAPI, x: int) -> None:
    """Send a whole valid request, wait until its predict runs, then close without reading the answer."""
    port = server.port
    assert port is not None
    body = json.dumps({"kind": "hang-up", "input": x}).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S)) as sock:
        sock.sendall(head + body)
        assert api.entered.value[x].wait(CLIENT_TIMEOUT_S), f"predict never started for hang-up {x}"


def _send(server: LitServer, api: MixedAPI, sessions: _Sessions, kind: str, x: int) -> tuple[int, bytes] | None:
    if kind == "hang-up":
        _hang_up(server, api, x)
        return None
    url = f"{server.url}/predict"
    if kind == "invalid-json":
        body = MALFORMED_BODIES[x % len(MALFORMED_BODIES)]
        response = sessions.get().post(
            url, data=body, headers={"Content-Type": "application/json"}, timeout=CLIENT_TIMEOUT_S
        )
    else:
        response = sessions.get().post(url, json={"kind": kind, "input": x}, timeout=CLIENT_TIMEOUT_S)
    return response.status_code, response.content


def _wait_for_counters(server: LitServer, expected_total: int) -> EndpointStatus:
    """The endpoint status once every request is counted and none is in flight (bounded wait)."""
    deadline_s = time.monotonic() + COUNTERS_DEADLINE_S
    pause = threading.Event()
    while True:
        endpoint = server.status.endpoints[0]
        counted = (
            endpoint.ok + endpoint.client_errors + endpoint.server_errors + endpoint.timed_out + endpoint.cancelled
        )
        if (counted >= expected_total and endpoint.in_flight == 0) or time.monotonic() >= deadline_s:
            return endpoint
        pause.wait(0.01)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_thousand_mixed_requests_each_get_their_own_answer_and_the_counters_agree() -> None:
    kinds = _kinds()
    hang_up_inputs = [x for x, kind in enumerate(kinds) if kind == "hang-up"]
    api = MixedAPI(hang_up_inputs)
    sessions = _Sessions()
    with serving(api, timeout=SERVER_TIMEOUT_S, workers_per_device=WORKERS) as server:
        try:
            with concurrent.futures.ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="mixed-client") as pool:
                futures = {x: pool.submit(_send, server, api, sessions, kind, x) for x, kind in enumerate(kinds)}
                answers = {x: future.result(timeout=CLIENT_TIMEOUT_S * 2) for x, future in futures.items()}
            endpoint = _wait_for_counters(server, TOTAL)
        finally:
            api.release.value.set()  # before stop(), so it can join the workers
            sessions.close()

    wrong = {
        x: answers[x]
        for x, kind in enumerate(kinds)
        if kind == "valid" and answers[x] != (200, f'{{"output":{x * x}}}'.encode())
    }
    assert not wrong, (
        f"{len(wrong)} valid requests did not get exactly their own answer, e.g. {list(wrong.items())[:5]}"
    )

    expected_body = {
        "invalid-json": None,  # the detail wording is the contract tests' business
        "teapot": b'{"detail":"teapot"}',
        "boom": b'{"detail":"Internal server error"}',
        "slow": b'{"detail":"Request timed out"}',
    }
    expected_status = {"invalid-json": 400, "teapot": 418, "boom": 500, "slow": 504}
    for x, kind in enumerate(kinds):
        if kind in expected_status:
            answer = answers[x]
            assert answer is not None and answer[0] == expected_status[kind], (kind, x, answer)
            body = expected_body[kind]
            assert body is None or answer[1] == body, (kind, x, answer)

    received = collections.Counter(answer[0] for answer in answers.values() if answer is not None)
    assert received == {200: VALID, 400: INVALID_JSON, 418: TEAPOT, 500: BOOM, 504: SLOW}

    counters = {
        "ok": endpoint.ok,
        "client_errors": endpoint.client_errors,
        "server_errors": endpoint.server_errors,
        "timed_out": endpoint.timed_out,
        "cancelled": endpoint.cancelled,
        "in_flight": endpoint.in_flight,
    }
    assert counters == {
        "ok": received[200],
        "client_errors": received[400] + received[418],
        "server_errors": received[500],
        "timed_out": received[504],
        "cancelled": HANG_UPS,
        "in_flight": 0,
    }
