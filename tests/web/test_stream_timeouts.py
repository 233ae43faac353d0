"""A stream's `timeout` is an idle deadline: it bounds the wait for each chunk, never the whole answer.

Over a real socket in both worker modes, plus the loop-level cases a socket cannot reach on purpose
(a body that never starts, a client behind a finished stream). Timings: `timeout` is 0.5 s, chunks come
0.05 s apart, a quiet generator waits up to 2 s; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import socket
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from litserve import LitAPI, LitServer, OpenAISpec
from litserve.codec import encode_json
from litserve.engine.bridge import StreamReply
from litserve.engine.messages import (
    STREAM_END,
    TIMED_OUT_OUTCOME,
    Cancellation,
    DropReason,
    InferenceRequest,
    Outcome,
    StreamStart,
)
from litserve.engine.pipeline import Hooks, StreamFanout, stream
from litserve.engine.stream_items import StreamItems
from litserve.engine.submit import Submission
from litserve.exceptions import INTERNAL_ERROR
from litserve.hooks import plan_hooks
from litserve.status import EndpointCounters
from litserve.testing import serving
from litserve.web.streaming import StreamBody
from tests.helpers import post, wait_until
from tests.sync import CrossEvent, CrossLog, CrossSemaphore

Start = Callable[..., LitServer]

TIMEOUT_S = 0.5
GAP_S = 0.05
QUIET_S = 2.0
TIMED_OUT_LINE = b'{"error":"Request timed out","status":504}'


class ScriptedStreamAPI(LitAPI):
    """Streams what each request asks for, and tells the test what happened (also from a worker process).

    Request fields: `id`; `chunks` to yield, `gap_s` apart; `size` (bytes of "x" per chunk instead of a
    token); `hold_first` (wait for `release` before the first chunk); `quiet_after` (after that many
    chunks, go quiet until `release`, at most QUIET_S); `until_released` (stop once `release` is set).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(stream=True, **kwargs)
        self.release = CrossEvent()
        self.entered = CrossSemaphore()  # one token per predict that began
        self.started = CrossLog()  # ids, as predicts begin
        self.ended = CrossLog()  # [id, chunks yielded] as each generator's finally runs
        self.closed = CrossEvent()  # some generator's finally ran

    def decode_request(self, request: Any) -> Any:
        return request

    def predict(self, x: Any) -> Iterator[Any]:
        self.started.append(x["id"])
        self.entered.release()
        produced = 0
        try:
            if x.get("hold_first"):
                assert self.release.wait(10), "the test never released the first chunk"
            for i in range(x["chunks"]):
                if i and i == x.get("quiet_after"):
                    self.release.wait(QUIET_S)
                elif i:
                    time.sleep(x.get("gap_s", 0.0))  # the model's time per token
                if x.get("until_released") and self.release.is_set():
                    return
                yield "x" * x["size"] if "size" in x else {"token": i}
                produced += 1
        finally:
            self.ended.append([x["id"], produced])
            self.closed.set()


class AsyncScriptedStreamAPI(ScriptedStreamAPI):
    """The same script, as an `enable_async=True` LitAPI (its worker streams without a window)."""

    def __init__(self) -> None:
        super().__init__(enable_async=True)

    async def decode_request(self, request: Any) -> Any:
        return request

    async def predict(self, x: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        self.started.append(x["id"])
        produced = 0
        try:
            for i in range(x["chunks"]):
                if i:
                    await asyncio.sleep(x.get("gap_s", 0.0))
                yield "x" * x["size"]
                produced += 1
        finally:
            self.ended.append([x["id"], produced])
            self.closed.set()

    async def encode_response(self, output: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for chunk in output:
            yield chunk


def _lines_with_times(response: Any) -> list[tuple[bytes, float]]:
    return [(line, time.monotonic()) for line in response.iter_lines() if line]


# --- over a real socket, both worker modes ------------------------------------------------------------------


def test_a_stream_many_timeouts_long_with_short_gaps_is_never_cut(start_server: Start) -> None:
    api = ScriptedStreamAPI()
    server = start_server(api, timeout=TIMEOUT_S)
    began_s = time.monotonic()
    response = post(server, {"id": "long", "chunks": 40, "gap_s": GAP_S})
    assert time.monotonic() - began_s > 3 * TIMEOUT_S
    assert response.status_code == 200
    assert [json.loads(line) for line in response.content.splitlines()] == [{"token": i} for i in range(40)]
    endpoint = server.status.endpoints[0]
    assert (endpoint.ok, endpoint.timed_out, endpoint.cancelled) == (1, 0, 0)
    assert api.ended.values() == [["long", 40]]


def test_a_stream_that_goes_quiet_ends_with_the_error_line_when_it_has_been_quiet_for_the_timeout(
    start_server: Start,
) -> None:
    api = ScriptedStreamAPI()
    server = start_server(api, timeout=TIMEOUT_S)
    with post(server, {"id": "quiet", "chunks": 40, "gap_s": GAP_S, "quiet_after": 3}, stream=True) as response:
        assert response.status_code == 200, response.content
        lines = _lines_with_times(response)
    assert [line for line, _ in lines] == [b'{"token":0}', b'{"token":1}', b'{"token":2}', TIMED_OUT_LINE], lines
    quiet_s = lines[3][1] - lines[2][1]
    # About `timeout` after the last chunk (the client's clock sees it late or early by its own delays),
    # and well before the generator would have gone on by itself.
    assert TIMEOUT_S / 2 <= quiet_s < QUIET_S - 0.5, f"cut after {quiet_s:.3f} s of quiet"
    api.release.set()  # the generator goes on, finds its stream ended at its next chunk, and is closed
    assert api.closed.wait(10)
    # In a worker process the cancellation crosses on its own: a chunk may leave before it is read there.
    [[_, produced]] = api.ended.values()
    assert 3 <= produced < 40
    endpoint = server.status.endpoints[0]
    assert wait_until(lambda: server.status.endpoints[0].timed_out == 1)
    endpoint = server.status.endpoints[0]
    assert (endpoint.ok, endpoint.cancelled, endpoint.requests) == (0, 0, 1)  # counted once: timed out
    assert post(server, {"id": "next", "chunks": 1}).status_code == 200  # the worker moved on


def test_a_first_chunk_later_than_the_timeout_is_a_plain_504(start_server: Start) -> None:
    api = ScriptedStreamAPI()
    server = start_server(api, timeout=TIMEOUT_S)
    began_s = time.monotonic()
    response = post(server, {"id": "late", "chunks": 40, "gap_s": GAP_S, "hold_first": True})
    assert time.monotonic() - began_s >= TIMEOUT_S - 0.05
    assert (response.status_code, response.json()) == (504, {"detail": "Request timed out"})
    api.release.set()  # its first chunk comes now, to nobody: the generator is closed
    assert api.closed.wait(10)
    [[_, produced]] = api.ended.values()
    assert produced < 40
    endpoint = server.status.endpoints[0]
    assert (endpoint.ok, endpoint.timed_out) == (0, 1)


def test_a_stream_queued_past_its_timeout_is_never_run(worker_mode: str) -> None:
    api = ScriptedStreamAPI()
    with (
        serving(api, worker_mode=worker_mode, timeout=TIMEOUT_S, workers_per_device=1) as server,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        busy = pool.submit(post, server, {"id": "busy", "chunks": 400, "gap_s": GAP_S, "until_released": True})
        assert api.entered.acquire(timeout=10)  # the one worker streams "busy", with short gaps
        queued = post(server, {"id": "queued", "chunks": 1})
        assert (queued.status_code, queued.json()) == (504, {"detail": "Request timed out"})
        api.release.set()
        answer = busy.result(10)
        assert answer.status_code == 200 and TIMED_OUT_LINE not in answer.content  # it outlived the timeout
        assert wait_until(lambda: server.status.endpoints[0].dropped_timed_out == 1)
        assert api.started.values() == ["busy"]
        endpoint = server.status.endpoints[0]
        assert (endpoint.ok, endpoint.timed_out) == (1, 1)


@pytest.mark.parametrize("api_kind", [ScriptedStreamAPI, AsyncScriptedStreamAPI])
def test_a_client_that_stops_reading_lets_go_of_its_worker_after_the_timeout(
    start_server: Start, api_kind: Callable[[], ScriptedStreamAPI]
) -> None:
    """The stream stops moving when its client stops reading (a synchronous worker waits for room in
    the window, an async one or a worker process keeps producing into the server): the idle deadline
    passes, and the worker closes the generator while the client still holds the connection."""
    api = api_kind()
    server = start_server(api, timeout=TIMEOUT_S)
    assert server.port is not None
    body = encode_json({"id": "stuck", "chunks": 2000, "gap_s": 0.01, "size": 256 * 1024})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        sock.settimeout(10)
        sock.connect(("127.0.0.1", server.port))
        head = f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode() + body)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            assert chunk, "the server closed the connection before answering"
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")
        # From here on the client reads nothing, and does not hang up.
        assert api.closed.wait(15), "the generator still runs for a client that stopped reading"
        assert wait_until(lambda: server.status.endpoints[0].timed_out == 1)
        [[_, produced]] = api.ended.values()
        assert produced < 2000
    finally:
        sock.close()
    assert post(server, {"id": "next", "chunks": 1, "size": 1}).status_code == 200  # the worker is free
    endpoint = server.status.endpoints[0]
    assert (endpoint.ok, endpoint.timed_out, endpoint.cancelled) == (1, 1, 0)  # the stuck stream: timed out only


# --- OpenAI chat streams (Server-Sent Events), with the official client -----------------------------------


class PacedChat(LitAPI):
    """Streams 30 words GAP_S apart; when the last message says "quiet", goes quiet after two words."""

    def __init__(self) -> None:
        super().__init__(spec=OpenAISpec())
        self.release = CrossEvent()
        self.closed = CrossEvent()

    def predict(self, request: Any) -> Iterator[str]:
        quiet = "quiet" in request.messages[-1].content
        try:
            for i in range(3 if quiet else 30):
                if quiet and i == 2:
                    self.release.wait(QUIET_S)
                elif i:
                    time.sleep(GAP_S)
                yield f"w{i} "
        finally:
            self.closed.set()


def _chat(server: LitServer, content: str, n: int) -> Any:
    openai = pytest.importorskip("openai", reason="the official openai client is a test dependency")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    messages = [{"role": "user", "content": content}]
    return openai, client, client.chat.completions.create(model="m", messages=messages, n=n, stream=True)


@pytest.mark.parametrize("choices", [1, 2])
def test_an_openai_chat_stream_many_timeouts_long_is_never_cut(start_server: Start, choices: int) -> None:
    server = start_server(PacedChat(), timeout=TIMEOUT_S, workers_per_device=choices)  # the choices run at once
    began_s = time.monotonic()
    _, client, chunks = _chat(server, "talk", choices)
    with client:
        texts = [""] * choices
        for chunk in chunks:
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
    assert time.monotonic() - began_s > 2 * TIMEOUT_S
    assert texts == ["".join(f"w{i} " for i in range(30))] * choices
    assert (server.status.endpoints[0].ok, server.status.endpoints[0].timed_out) == (1, 0)


def test_an_openai_chat_stream_that_goes_quiet_ends_with_the_error_event(start_server: Start) -> None:
    api = PacedChat()
    server = start_server(api, timeout=TIMEOUT_S)
    openai, client, chunks = _chat(server, "quiet", 1)
    received: list[str] = []
    with client, pytest.raises(openai.APIError, match="Request timed out"):
        for chunk in chunks:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received).split() == ["w0", "w1"]
    api.release.set()
    assert api.closed.wait(10)
    assert wait_until(lambda: server.status.endpoints[0].timed_out == 1)


# --- on the loop: what a socket cannot reach on purpose ----------------------------------------------------


class _ThreadGatedStreamAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(stream=True)
        self.gate = threading.Event()
        self.closed = threading.Event()

    def predict(self, x: Any) -> Iterator[str]:
        try:
            yield "first"
            assert self.gate.wait(10)
            yield "second"
        finally:
            self.closed.set()


def _stream_request(loop: asyncio.AbstractEventLoop) -> tuple[StreamReply, InferenceRequest]:
    reply = StreamReply(loop, StreamItems(), threading.Semaphore(64))
    return reply, InferenceRequest({}, reply, None, Cancellation())


def test_a_stream_whose_body_never_starts_still_closes_the_generator() -> None:
    """The client leaves after the first chunk is in but before the response body is iterated (its
    async generator never starts, so no `finally` of its own could run): the task's end cancels it."""
    api = _ThreadGatedStreamAPI()
    hooks = Hooks.bind(api, plan_hooks(api))
    loop = asyncio.new_event_loop()
    reply, request = _stream_request(loop)
    counters = EndpointCounters()
    worker = threading.Thread(target=stream, args=(hooks, [request], lambda exc: Outcome.failure(INTERNAL_ERROR)))
    worker.start()
    try:

        async def handler() -> None:
            body = StreamBody(reply, Submission(request), counters, None, time.monotonic())
            first = await body.first()
            assert isinstance(first, StreamStart)
            body.response(first)  # and the task ends here, as when Quart is cancelled before sending the body

        loop.run_until_complete(handler())
        loop.run_until_complete(asyncio.sleep(0))
        assert request.cancellation.reason is DropReason.DISCONNECTED
        assert (counters.cancelled, counters.ok) == (1, 0)  # counted once, as it ended
        api.gate.set()
        worker.join(10)
        assert not worker.is_alive()
        assert api.closed.is_set()
    finally:
        api.gate.set()
        worker.join(10)
        loop.close()


@pytest.mark.parametrize("worker_done", [True, False])
def test_the_idle_deadline_spares_a_finished_stream_whose_client_is_behind(worker_done: bool) -> None:
    """The client reads nothing for longer than the timeout. While the worker still streams, the stream
    ends with the error line; once the worker's last item is in, the client may catch up at its pace."""
    loop = asyncio.new_event_loop()
    try:

        async def scenario() -> tuple[bytes, Cancellation, EndpointCounters]:
            reply, request = _stream_request(asyncio.get_running_loop())
            counters = EndpointCounters()
            body = StreamBody(reply, Submission(request), counters, 0.05, time.monotonic())
            for item in (StreamStart("text/plain", b"a"), b"b", *([STREAM_END] if worker_done else [])):
                reply.push(item)
            response = body.response(await body.first())
            await asyncio.sleep(0.2)  # on this loop, the deadline's timer (0.05 s) fires first
            return await response.get_data(), request.cancellation, counters

        data, cancellation, counters = loop.run_until_complete(scenario())
    finally:
        loop.close()
    if worker_done:
        assert (data, cancellation.reason, counters.timed_out, counters.ok) == (b"ab", None, 0, 1)
    else:
        expected = b"ab" + TIMED_OUT_LINE + b"\n"
        assert (data, cancellation.reason, counters.timed_out, counters.ok) == (expected, DropReason.TIMED_OUT, 1, 0)
    assert counters.cancelled == 0


def test_an_ended_stream_is_freed_at_once_not_by_the_garbage_collector() -> None:
    """The body and its idle deadline point at each other while the stream runs; ending lets go."""
    loop = asyncio.new_event_loop()
    gc.disable()
    try:

        async def scenario() -> weakref.ref[StreamBody]:
            reply, request = _stream_request(asyncio.get_running_loop())
            body = StreamBody(reply, Submission(request), EndpointCounters(), 30.0, time.monotonic())
            for item in (StreamStart("text/plain", b"a"), b"b", STREAM_END):
                reply.push(item)
            assert await body.response(await body.first()).get_data() == b"ab"
            return weakref.ref(body)

        freed = loop.run_until_complete(scenario())
        loop.run_until_complete(asyncio.sleep(0))  # the sending task's end is seen
        assert freed() is None
    finally:
        gc.enable()
        loop.close()


def test_a_worker_waiting_for_room_wakes_when_the_loop_ends_the_stream() -> None:
    """A synchronous worker blocks while its client is a window behind; it has no deadline of its own.
    When the loop ends the stream (here: its idle deadline passed), it cancels, then gives room back."""
    loop = asyncio.new_event_loop()
    try:
        queue = StreamItems()
        window = threading.Semaphore(2)  # the client has room for two unsent chunks
        request = InferenceRequest({}, StreamReply(loop, queue, window), None, Cancellation())
        fanout = StreamFanout([request])
        assert fanout.send_step(["a"], False)
        assert fanout.send_step(["b"], False)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            third = pool.submit(fanout.send_step, ["c"], False)  # waits for room
            assert not third.done()
            request.cancellation.cancel(DropReason.TIMED_OUT)
            window.release(64)
            assert third.result(10) is False  # nothing left to stream to
        loop.run_until_complete(asyncio.sleep(0))
        items = [queue.get_nowait() for _ in range(queue.qsize())]
        assert items == [StreamStart("text/plain; charset=utf-8", b"a"), b"b", TIMED_OUT_OUTCOME]
    finally:
        loop.close()
