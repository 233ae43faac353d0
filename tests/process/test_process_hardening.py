"""Process mode without its old limits: streams are flow-controlled across the process boundary, and
what cannot be pickled fails only its own request while the worker process serves on."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from litserve import HTTPException, LitAPI, LitServer
from litserve.engine.stream_window import STREAM_WINDOW
from litserve.process.stream_credits import GRANT_STEP
from tests.helpers import post, wait_until

Start = Callable[..., LitServer]

pytestmark = pytest.mark.timeout(120)


# Once a stream waits for credits, its client is this many chunks behind (less what the server owes it
# but grants only a few at a time).
STALLED = STREAM_WINDOW - GRANT_STEP + 1


def process_books(server: LitServer) -> list[Any]:
    """The in-flight books of a process-mode server's worker processes."""
    running = server._life.serving("test")
    return [worker.book for endpoint in running.endpoints for worker in endpoint.workers]


# --- flow control ----------------------------------------------------------------------------------

CHUNK_BYTES = 16 * 1024
LONG_STREAM_CHUNKS = 2000  # 32 MiB: far more than the sockets between the worker process and the client hold


class LongStreamAPI(LitAPI):
    def predict(self, x: Any) -> Iterator[bytes]:
        count = LONG_STREAM_CHUNKS if x["input"] == "long" else 1
        for i in range(count):
            yield i.to_bytes(4, "big") * (CHUNK_BYTES // 4)

    def encode_response(self, output: Iterator[bytes]) -> Iterator[bytes]:
        yield from output


def test_a_slow_client_holds_its_stream_in_the_worker_process_without_holding_up_others(lit_server: Any) -> None:
    server = lit_server(LongStreamAPI(stream=True), worker_mode="process", workers_per_device=2, timeout=60)
    (book,) = process_books(server)
    with requests.post(server.url + "/predict", json={"input": "long"}, stream=True, timeout=60) as slow:
        body = slow.iter_content(CHUNK_BYTES)
        received = [next(body)]
        # The client reads no more: the sockets fill, then the stream's window, then the generator waits.
        assert wait_until(lambda: book.most_chunks_ahead >= STALLED), book.most_chunks_ahead
        # The other worker of the same process serves while this stream waits for its client.
        quick = requests.post(server.url + "/predict", json={"input": "short"}, timeout=30)
        assert (quick.status_code, len(quick.content)) == (200, CHUNK_BYTES)
        received.extend(body)
    data = b"".join(received)
    assert len(data) == LONG_STREAM_CHUNKS * CHUNK_BYTES
    assert data[-4:] == (LONG_STREAM_CHUNKS - 1).to_bytes(4, "big")
    assert STALLED <= book.most_chunks_ahead <= STREAM_WINDOW  # never more, however far behind the client was
    assert server.status.endpoints[0].ok == 2


def test_a_client_that_leaves_a_stream_waiting_for_credits_frees_its_worker(lit_server: Any) -> None:
    server = lit_server(LongStreamAPI(stream=True), worker_mode="process", timeout=60)
    (book,) = process_books(server)
    with requests.post(server.url + "/predict", json={"input": "long"}, stream=True, timeout=60) as slow:
        body = slow.iter_content(CHUNK_BYTES)
        next(body)
        assert wait_until(lambda: book.most_chunks_ahead >= STALLED), book.most_chunks_ahead
    # Its only worker waited for credits; the hang-up wakes it, so the next request is served.
    quick = requests.post(server.url + "/predict", json={"input": "short"}, timeout=30)
    assert quick.status_code == 200
    assert wait_until(lambda: server.status.endpoints[0].cancelled == 1)


# --- what cannot be pickled --------------------------------------------------------------------------


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


class LockedDetail:
    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __str__(self) -> str:
        return "the teapot is locked"


class PicklingTrapsAPI(LitAPI):
    def predict(self, x: Any) -> Any:
        kind = x["input"]
        if kind == "raise":
            raise Unpicklable()
        if kind == "return":
            return threading.Lock()
        if kind == "detail":
            raise HTTPException(418, LockedDetail())
        return {"ok": kind}


@pytest.mark.parametrize(
    ("kind", "status", "body"),
    [
        ("raise", 500, {"detail": "Internal server error"}),
        ("return", 500, {"detail": "Internal server error"}),
        ("detail", 418, {"detail": "the teapot is locked"}),
    ],
)
def test_what_cannot_be_pickled_fails_only_its_request_and_the_worker_serves_on(
    start_server: Start, caplog: pytest.LogCaptureFixture, kind: str, status: int, body: Any
) -> None:
    server = start_server(PicklingTrapsAPI())
    pid = server.status.workers[0].pid
    with caplog.at_level(logging.ERROR, logger="litserve"):
        answer = post(server, {"input": kind})
        assert (answer.status_code, answer.json()) == (status, body)
        assert post(server, {"input": "next"}).json() == {"ok": "next"}
    if status == 500:
        logged = "\n".join(r.getMessage() + (str(r.exc_info) if r.exc_info else "") for r in caplog.records)
        assert "Traceback" in logged or any(r.exc_info for r in caplog.records)
    worker = server.status.workers[0]
    assert (worker.pid, worker.restarts) == (pid, 0)


class LockedBytes(bytes):
    """Bytes that cannot be pickled: a chunk that cannot cross from the worker process."""

    def __new__(cls, data: bytes) -> LockedBytes:
        chunk = super().__new__(cls, data)
        chunk.lock = threading.Lock()  # type: ignore[attr-defined]
        return chunk


class LockedChunkAPI(LitAPI):
    def predict(self, x: Any) -> Iterator[Any]:
        yield b'{"step":0}\n'
        if x["input"] == "locked":
            yield LockedBytes(b'{"step":1}\n')
        yield b'{"step":2}\n'

    def encode_response(self, output: Iterator[Any]) -> Iterator[Any]:
        yield from output


def test_a_stream_chunk_that_cannot_cross_ends_only_its_own_stream(
    lit_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = lit_server(LockedChunkAPI(stream=True), worker_mode="process")
    pid = server.status.workers[0].pid
    with caplog.at_level(logging.ERROR, logger="litserve"):
        with requests.post(server.url + "/predict", json={"input": "locked"}, stream=True, timeout=30) as response:
            lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines == [{"step": 0}, {"error": "Internal server error", "status": 500}]
    with requests.post(server.url + "/predict", json={"input": "plain"}, stream=True, timeout=30) as response:
        assert [json.loads(line) for line in response.iter_lines() if line] == [{"step": 0}, {"step": 2}]
    assert "cannot pickle" in "\n".join(r.getMessage() for r in caplog.records)
    assert server.status.workers[0].pid == pid


def test_credits_go_back_a_few_at_a_time_and_stop_with_the_stream() -> None:
    from litserve.engine.stream_window import StreamWindow
    from litserve.process.stream_credits import StreamCredits

    granted: list[tuple[int, int]] = []
    credits = StreamCredits(lambda request_id, count: granted.append((request_id, count)))
    window = StreamWindow()
    credits.follow(7, window)
    for _ in range(STREAM_WINDOW):
        window.acquire()  # as the worker does before each chunk
        credits.received(7)
    assert credits.most_ahead == STREAM_WINDOW
    for _ in range(GRANT_STEP - 1):
        window.release()  # the response body took a chunk
    assert granted == []
    window.release()
    assert granted == [(7, GRANT_STEP)]
    credits.forget(7)  # its last item came
    window.release(STREAM_WINDOW)
    assert granted == [(7, GRANT_STEP)] and credits.most_ahead == STREAM_WINDOW
