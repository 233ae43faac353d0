"""A stream's body on the loop: the window's slots come back as the body takes chunks, so a worker that
is a window ahead of its client goes on; both ways of sending (async generator, ASGI) write the same."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from litserve.engine.bridge import StreamReply
from litserve.engine.messages import STREAM_END, StreamStart
from litserve.engine.request_queue import RequestQueue
from litserve.engine.stream_items import StreamItems
from litserve.engine.stream_window import StreamWindow
from litserve.engine.submit import Submission, submit
from litserve.status import EndpointCounters
from litserve.web.streaming import StreamBody

CHUNKS = 40
WINDOW = 3  # far fewer slots than chunks: the worker waits for room again and again


async def _stream_through_a_small_window(way: str) -> tuple[list[bytes], EndpointCounters]:
    reply = StreamReply(asyncio.get_running_loop(), StreamItems(), StreamWindow(WINDOW))
    submission = submit(RequestQueue(), {}, reply, None, None, time.monotonic())
    assert isinstance(submission, Submission)
    counters = EndpointCounters()
    body = StreamBody(reply, submission, counters, 30.0, time.monotonic())

    def worker() -> None:  # as a synchronous worker streams: a slot before each chunk
        reply.wait_for_room()
        reply.push(StreamStart("application/x-ndjson", b"0\n"))
        for i in range(1, CHUNKS):
            reply.wait_for_room()
            reply.push(b"%d\n" % i)
        reply.push(STREAM_END)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        first = await asyncio.wait_for(body.first(), 10)
        assert isinstance(first, StreamStart)
        if way == "iterate":
            return await asyncio.wait_for(_collect(body.iterate(first)), 10), counters
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        await asyncio.wait_for(body.send_asgi(first, send), 10)
        assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
        return [m["body"] for m in sent[:-1]], counters
    finally:
        stuck = not body_took_all(thread)
        reply.window.release(CHUNKS)  # a worker left waiting (the test failed) must still end
        thread.join(10)
        assert not stuck, "the worker never got room for its next chunk"


def body_took_all(thread: threading.Thread) -> bool:
    thread.join(5)
    return not thread.is_alive()


async def _collect(chunks: Any) -> list[bytes]:
    return [chunk async for chunk in chunks]


@pytest.mark.parametrize("way", ["iterate", "send_asgi"])
def test_a_worker_a_window_ahead_goes_on_as_the_body_takes_its_chunks(way: str) -> None:
    chunks, counters = asyncio.run(_stream_through_a_small_window(way))
    assert chunks == [b"%d\n" % i for i in range(CHUNKS)]  # one write per chunk, in order
    assert counters.ok == 1  # counted once, when it ended
