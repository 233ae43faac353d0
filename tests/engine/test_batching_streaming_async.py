"""Dynamic batching, streaming and async LitAPIs, over a real socket."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import pytest
import requests
import torch

from litserve import HTTPException, LitAPI, LitServer
from litserve.testing import serving
from tests.helpers import post, raw_request, wait_until
from tests.sync import CrossEvent, CrossLog, CrossSemaphore

Start = Callable[..., LitServer]


# --- batching -------------------------------------------------------------------------------------------


class RecordingBatchAPI(LitAPI):
    """Squares each input; records every batch size predict saw; inputs < 0 fail in decode_request,
    and input 1000 fails in encode_response."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sizes = CrossLog()
        self.arrived = CrossSemaphore()
        self.gate = CrossEvent()

    def decode_request(self, request: Any) -> Any:
        if request["input"] < 0:
            raise HTTPException(400, "negative input")
        return request["input"]

    def predict(self, x: Any) -> Any:
        self.sizes.append(len(x))
        self.arrived.release()
        assert self.gate.wait(10)
        return [v * v for v in x]

    def encode_response(self, output: Any) -> Any:
        if output == 1000 * 1000:
            raise RuntimeError("cannot encode")
        return {"output": output}


def test_batches_form_up_to_max_batch_size_and_each_answer_is_its_own(worker_mode: str) -> None:
    api = RecordingBatchAPI(max_batch_size=4, batch_timeout=0.5)
    with serving(api, worker_mode=worker_mode) as server, concurrent.futures.ThreadPoolExecutor(8) as pool:
        first = pool.submit(post, server, {"input": 0})
        assert api.arrived.acquire(timeout=10)  # the worker is busy with the first request
        rest = [pool.submit(post, server, {"input": i}) for i in range(1, 8)]
        assert wait_until(lambda: server.status.endpoints[0].in_flight == 8)  # all arrived, one running
        api.gate.set()
        answers = [first.result(10).json()] + [f.result(10).json() for f in rest]
    assert answers == [{"output": i * i} for i in range(8)]
    assert api.sizes.values()[0] == 1
    assert max(api.sizes.values()) == 4 and all(size <= 4 for size in api.sizes.values())
    assert sum(api.sizes.values()) == 8


def test_a_lone_request_is_served_as_a_batch_of_one(worker_mode: str) -> None:
    api = RecordingBatchAPI(max_batch_size=8, batch_timeout=0.05)
    api.gate.set()
    with serving(api, worker_mode=worker_mode) as server:
        assert post(server, {"input": 3}).json() == {"output": 9}
    assert api.sizes.values() == [1]


def test_a_decode_error_fails_only_its_own_item(worker_mode: str) -> None:
    api = RecordingBatchAPI(max_batch_size=4, batch_timeout=0.5)
    with serving(api, worker_mode=worker_mode) as server, concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = pool.submit(post, server, {"input": 1})
        assert api.arrived.acquire(timeout=10)
        bad = pool.submit(post, server, {"input": -1})
        good = pool.submit(post, server, {"input": 2})
        assert wait_until(lambda: server.status.endpoints[0].in_flight == 3)
        api.gate.set()
        assert first.result(10).json() == {"output": 1}
        assert (bad.result(10).status_code, bad.result(10).json()) == (400, {"detail": "negative input"})
        assert good.result(10).json() == {"output": 4}
    assert api.sizes.values() == [1, 1]  # the failed item never reached predict


def test_an_encode_error_fails_only_its_own_item(worker_mode: str) -> None:
    api = RecordingBatchAPI(max_batch_size=4, batch_timeout=0.5)
    with serving(api, worker_mode=worker_mode) as server, concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = pool.submit(post, server, {"input": 1})
        assert api.arrived.acquire(timeout=10)  # the worker holds the first; the next two queue together
        bad = pool.submit(post, server, {"input": 1000})
        good = pool.submit(post, server, {"input": 2})
        assert wait_until(lambda: server.status.endpoints[0].in_flight == 3)
        api.gate.set()
        assert first.result(10).json() == {"output": 1}
        assert (bad.result(10).status_code, bad.result(10).json()) == (500, {"detail": "Internal server error"})
        assert good.result(10).json() == {"output": 4}
        endpoint = server.status.endpoints[0]
        assert (endpoint.ok, endpoint.server_errors) == (2, 1)
    assert api.sizes.values() == [1, 2]  # the failing item and the good one were one batch


class TorchBatchAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(max_batch_size=4, batch_timeout=0.5)
        self.kinds = CrossLog()

    def decode_request(self, request: Any) -> Any:
        return torch.tensor(request["input"], dtype=torch.float32)

    def predict(self, x: Any) -> Any:
        self.kinds.append((type(x).__name__, list(x.shape)))
        return x.sum(dim=1)

    def encode_response(self, output: Any) -> Any:
        return {"output": float(output)}


class NumpyBatchAPI(TorchBatchAPI):
    def decode_request(self, request: Any) -> Any:
        return np.asarray(request["input"], dtype=np.float64)

    def predict(self, x: Any) -> Any:
        self.kinds.append((type(x).__name__, list(x.shape)))
        return x.sum(axis=1)


@pytest.mark.parametrize(("api_class", "kind"), [(TorchBatchAPI, "Tensor"), (NumpyBatchAPI, "ndarray")])
def test_default_batch_stacks_tensors_and_arrays(api_class: type[TorchBatchAPI], kind: str, worker_mode: str) -> None:
    api = api_class()
    with serving(api, worker_mode=worker_mode) as server, concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: post(server, {"input": [i, i, i]}).json(), range(4)))
    assert answers == [{"output": 3.0 * i} for i in range(4)]
    assert {k for k, _ in api.kinds.values()} == {kind}
    assert all(shape[1:] == [3] for _, shape in api.kinds.values())


def test_server_level_batching_arguments_are_deprecated_but_work(worker_mode: str) -> None:
    api = RecordingBatchAPI()
    api.gate.set()
    with pytest.warns(DeprecationWarning) as warned:
        server = LitServer(api, accelerator="cpu", worker_mode=worker_mode, max_batch_size=2, batch_timeout=0.01)
    assert [str(w.message).split(";")[1] for w in warned] == [
        " pass it to the LitAPI instead: MyAPI(max_batch_size=2)",
        " pass it to the LitAPI instead: MyAPI(batch_timeout=0.01)",
    ]
    assert (api.max_batch_size, api.batch_timeout) == (2, 0.01)
    with server.start(port=0):
        assert post(server, {"input": 5}).json() == {"output": 25}


# --- streaming ------------------------------------------------------------------------------------------


class GatedStreamAPI(LitAPI):
    """Yields `n` chunks; each after the first waits for the test; records when its generator closed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(stream=True, **kwargs)
        self.step = CrossSemaphore()
        self.closed = CrossEvent()
        self.produced = CrossLog()

    def decode_request(self, request: Any) -> Any:
        return request["n"]

    def predict(self, n: Any) -> Iterator[Any]:
        try:
            for i in range(n):
                if i > 0:
                    assert self.step.acquire(timeout=10), "the test never released the next chunk"
                self.produced.append(i)
                yield {"token": i}
        finally:
            self.closed.set()


def test_chunks_reach_the_client_as_they_are_produced(start_server: Start) -> None:
    api = GatedStreamAPI()
    server = start_server(api)
    with post(server, {"n": 3}, stream=True) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = response.iter_lines()
        # The first chunk arrives while predict is still blocked before producing the second.
        assert json.loads(next(lines)) == {"token": 0}
        assert api.produced.values() == [0]
        api.step.release()
        assert json.loads(next(lines)) == {"token": 1}
        api.step.release()
        assert json.loads(next(lines)) == {"token": 2}
        assert list(lines) == []
    assert api.closed.wait(10)


def test_a_client_that_leaves_mid_stream_closes_the_generator(start_server: Start) -> None:
    api = GatedStreamAPI()
    server = start_server(api)
    assert server.port is not None
    sock = raw_request(server.port, "/predict", b'{"n": 1000}')
    received = b""
    while b'{"token":0}' not in received:
        chunk = sock.recv(4096)
        assert chunk, f"the server closed the stream early: {received!r}"
        received += chunk
    sock.close()
    assert wait_until(lambda: server.status.endpoints[0].cancelled == 1)
    api.step.release()  # the generator yields once more, sees the client is gone, and is closed
    assert api.closed.wait(10)
    assert api.produced.values() == [0, 1]
    assert post(server, {"n": 1}).status_code == 200  # the worker moved on
    endpoint = server.status.endpoints[0]
    assert (endpoint.ok, endpoint.cancelled, endpoint.requests) == (1, 1, 2)  # the one that left counts once


_MANY_CHUNKS = 400


def test_the_deadline_ends_a_running_stream_with_an_error_line(worker_mode: str) -> None:
    api = GatedStreamAPI()
    # The first chunk comes at once, well within the timeout even from a loaded worker process; the second never.
    with serving(api, worker_mode=worker_mode, timeout=1.0) as server:
        response = post(server, {"n": _MANY_CHUNKS})
        assert response.status_code == 200
        assert response.content.splitlines() == [b'{"token":0}', b'{"error":"Request timed out","status":504}']
        # The worker learns of the deadline by message (process mode) and checks it between chunks, so a loaded
        # machine may let it make a few more before it stops: feed it chunks until it closes the generator, which
        # must happen long before it runs out of them.
        for _ in range(_MANY_CHUNKS):
            api.step.release()
            if api.closed.wait(0.05):
                break
        assert api.closed.is_set()
        assert len(api.produced.values()) < _MANY_CHUNKS
        endpoint = server.status.endpoints[0]
        assert (endpoint.ok, endpoint.timed_out, endpoint.requests) == (0, 1, 1)


class FailingStreamAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(stream=True)

    def predict(self, x: Any) -> Iterator[str]:
        if x.get("early"):
            raise HTTPException(418, "no tea")
        yield "a"
        yield "b"
        raise RuntimeError("broke mid-stream")


def test_errors_before_and_after_the_first_chunk(start_server: Start) -> None:
    server = start_server(FailingStreamAPI())
    early = post(server, {"early": True})
    assert (early.status_code, early.json()) == (418, {"detail": "no tea"})
    late = post(server, {})
    assert late.status_code == 200
    assert late.headers["content-type"].startswith("text/plain")
    assert late.content == b'ab{"error":"Internal server error","status":500}\n'
    endpoint = server.status.endpoints[0]
    # Each counts once, by how it ended: the 418 before its status, the 500 by its error line.
    assert (endpoint.ok, endpoint.client_errors, endpoint.server_errors, endpoint.requests) == (0, 1, 1, 2)


class UnevenBatchedStreamAPI(LitAPI):
    """Request i streams i+1 tokens; finished requests get None (no chunk) for the remaining steps."""

    def __init__(self) -> None:
        super().__init__(max_batch_size=4, batch_timeout=0.5, stream=True)
        self.sizes = CrossLog()
        self.arrived = CrossSemaphore()
        self.gate = CrossEvent()

    def decode_request(self, request: Any) -> Any:
        return request["length"]

    def predict(self, lengths: list[int]) -> Iterator[list[Any]]:
        self.sizes.append(len(lengths))
        self.arrived.release()
        assert self.gate.wait(10)
        for step in range(max(lengths)):
            yield [f"{length}:{step};" if step < length else None for length in lengths]


def test_batched_streams_of_uneven_lengths(worker_mode: str) -> None:
    api = UnevenBatchedStreamAPI()
    with serving(api, worker_mode=worker_mode) as server, concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = pool.submit(post, server, {"length": 2})
        assert api.arrived.acquire(timeout=10)
        rest = [pool.submit(post, server, {"length": n}) for n in (1, 3, 4)]
        assert wait_until(lambda: server.status.endpoints[0].in_flight == 4)
        api.gate.set()
        bodies = [f.result(10).text for f in [first, *rest]]
    assert bodies == ["2:0;2:1;", "1:0;", "3:0;3:1;3:2;", "4:0;4:1;4:2;4:3;"]
    assert api.sizes.values() == [1, 3]


# --- async ----------------------------------------------------------------------------------------------


class OverlapAPI(LitAPI):
    """Every predict waits until `expected` predicts are running at once: it only finishes if they overlap."""

    def __init__(self, expected: int) -> None:
        super().__init__(enable_async=True)
        self.expected = expected
        self.running = 0
        self.all_in: asyncio.Event | None = None

    async def decode_request(self, request: Any) -> Any:
        return request["input"]

    async def predict(self, x: Any) -> Any:
        if self.all_in is None:
            self.all_in = asyncio.Event()  # created on the worker's own loop
        self.running += 1
        if self.running == self.expected:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), 20)
        return x * 2

    async def encode_response(self, output: Any) -> Any:
        return {"output": output}


@pytest.mark.timeout(120)
def test_one_async_worker_serves_a_hundred_requests_at_once(worker_mode: str) -> None:
    with (
        serving(OverlapAPI(100), worker_mode=worker_mode, workers_per_device=1) as server,
        concurrent.futures.ThreadPoolExecutor(100) as pool,
    ):
        answers = list(pool.map(lambda i: post(server, {"input": i}).json(), range(100)))
    assert answers == [{"output": 2 * i} for i in range(100)]
    assert len(server.status.workers) == 1


class AsyncStreamAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(stream=True, enable_async=True)

    async def predict(self, x: Any) -> AsyncIterator[dict[str, int]]:
        for i in range(x["n"]):
            await asyncio.sleep(0)
            yield {"i": i}

    async def encode_response(self, outputs: AsyncIterator[dict[str, int]]) -> AsyncIterator[dict[str, int]]:
        async for output in outputs:
            yield {"token": output["i"]}


def test_async_generators_stream(start_server: Start) -> None:
    server = start_server(AsyncStreamAPI())
    response = post(server, {"n": 3})
    assert [json.loads(line) for line in response.content.splitlines()] == [{"token": 0}, {"token": 1}, {"token": 2}]


# --- construction-time checks -----------------------------------------------------------------------------


class ReturnsInsteadOfYields(LitAPI):
    def predict(self, x: Any) -> Any:
        return x


class YieldsWithoutStream(LitAPI):
    def predict(self, x: Any) -> Iterator[Any]:
        yield x


class AsyncWithoutFlag(LitAPI):
    async def predict(self, x: Any) -> Any:
        return x


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (lambda: ReturnsInsteadOfYields(stream=True), {}, "must be a generator"),
        (lambda: YieldsWithoutStream(), {}, "stream=False"),
        (lambda: AsyncWithoutFlag(), {}, "enable_async=True"),
        (lambda: ReturnsInsteadOfYields(enable_async=True), {}, "must be `async def`"),
        (lambda: ReturnsInsteadOfYields(max_batch_size=2, batch_timeout=5), {"timeout": 1}, "batch_timeout"),
    ],
)
def test_mismatched_hooks_are_refused_at_construction(
    make: Callable[[], LitAPI], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LitServer(make(), accelerator="cpu", **kwargs)


class ManyChunksAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(stream=True)

    def predict(self, x: Any) -> Iterator[str]:
        for i in range(x["n"]):
            yield f"{i},"


def test_a_stream_longer_than_its_window_arrives_whole(start_server: Start) -> None:
    server = start_server(ManyChunksAPI())
    response = post(server, {"n": 1000})
    assert response.text == "".join(f"{i}," for i in range(1000))


class JsonLinesAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(stream=True)

    def decode_request(self, request: Any) -> Any:
        return request["n"]

    def predict(self, n: Any) -> Iterator[int]:
        yield from range(n)

    def encode_response(self, outputs: Iterator[int]) -> Iterator[dict[str, int]]:
        for output in outputs:
            yield {"i": output}


def test_each_stream_chunk_is_its_own_http_chunk(start_server: Start) -> None:
    """LitServe's clients (its e2e tests too) read with iter_content and parse each piece as one JSON line."""
    server = start_server(JsonLinesAPI())
    with requests.post(server.url + "/predict", json={"n": 300}, stream=True, timeout=30) as response:
        pieces = [json.loads(piece) for piece in response.iter_content(chunk_size=4000) if piece]
    assert pieces == [{"i": i} for i in range(300)]


@pytest.mark.parametrize(
    ("media_type", "writes"),
    [
        ("application/x-ndjson", [b"a\n", b"b\n", b"c\n"]),  # one HTTP chunk per item, as LitServe sends it
        ("text/plain; charset=utf-8", [b"a\n", b"b\n", b"c\n"]),
        ("text/event-stream", [b"a\n", b"b\nc\nEND"]),  # SSE: the items already waiting go out as one write
    ],
)
def test_only_server_sent_events_join_waiting_items_into_one_write(media_type: str, writes: list[bytes]) -> None:
    from litserve.engine.bridge import StreamReply
    from litserve.engine.messages import STREAM_END, StreamStart
    from litserve.engine.request_queue import RequestQueue
    from litserve.engine.stream_items import StreamItems
    from litserve.engine.submit import Submission, submit
    from litserve.status import EndpointCounters
    from litserve.web.streaming import STREAM_WINDOW, StreamBody

    async def body_writes() -> list[bytes]:
        queue = StreamItems()
        reply = StreamReply(asyncio.get_running_loop(), queue, threading.Semaphore(STREAM_WINDOW))
        submission = submit(RequestQueue(), {}, reply, None, None, time.monotonic())
        assert isinstance(submission, Submission)
        body = StreamBody(reply, submission, EndpointCounters(), 30.0, time.monotonic(), trailer=b"END")
        for item in (StreamStart(media_type, b"a\n"), b"b\n", b"c\n", STREAM_END):  # all waiting at once
            queue.put_nowait(item)
        first = await body.first()
        assert isinstance(first, StreamStart)
        return [data async for data in body.iterate(first)]

    trailer = [] if media_type == "text/event-stream" else [b"END"]
    assert asyncio.run(body_writes()) == writes + trailer
