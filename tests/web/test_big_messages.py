"""Requests and answers bigger than a socket buffer, and `predict()` from many threads, in both modes.

In process mode these cross to the worker process on the server's event loop with a non-blocking
socket: a frame the socket cannot take at once waits in a buffer that the loop flushes later, while
other requests keep going. Each answer must still reach its own request.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
from typing import Any

import pytest

from litserve import LitAPI, LitServer
from tests.helpers import post

pytestmark = pytest.mark.timeout(120)

SIZE = 1_500_000  # characters per request: several times a Unix socket's buffer


class DigestAPI(LitAPI):
    """Answers with the input twice over and its digest, so every answer is bigger than its request."""

    def decode_request(self, request: Any) -> str:
        return str(request["input"])

    def predict(self, text: str) -> dict[str, str]:
        return {"echo": text + text, "sha": hashlib.sha256(text.encode()).hexdigest()}

    def encode_response(self, output: Any) -> Any:
        return output


def text_for(i: int) -> str:
    return (f"{i:04d}" * (SIZE // 4))[:SIZE]


def test_big_requests_and_answers_at_once_each_reach_their_own_client(start_server: Any) -> None:
    server: LitServer = start_server(DigestAPI(), max_payload_size="10MB", workers_per_device=2)

    def ask(i: int) -> bool:
        text = text_for(i)
        answer = post(server, {"input": text}, timeout=60)
        assert answer.status_code == 200
        body = answer.json()
        return bool(body["echo"] == text + text and body["sha"] == hashlib.sha256(text.encode()).hexdigest())

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(ask, range(16)))
    assert server.status.endpoints[0].ok == 16


def test_predict_from_many_threads_gets_each_caller_its_own_answer(start_server: Any) -> None:
    server: LitServer = start_server(DigestAPI(), workers_per_device=2)
    texts = [f"caller {i} " * 1000 for i in range(64)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda t: server.predict({"input": t}), texts))
    assert [a["echo"] for a in answers] == [t + t for t in texts]
