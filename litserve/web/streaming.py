"""Streamed responses: chunks from a worker's StreamReply become the response body as they arrive."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import final

from quart import Response

from litserve.codec import encode_json
from litserve.engine.messages import STREAM_END, DropReason, Outcome, StreamItem, StreamStart
from litserve.engine.submit import Submission
from litserve.status import EndpointCounters, Verdict

__all__ = ["STREAM_WINDOW", "StreamBody"]

# Chunks a stream may have produced and not yet sent before its (synchronous) worker waits.
STREAM_WINDOW = 64

NDJSON = "application/x-ndjson"


def _error_line(outcome: Outcome) -> bytes:
    return encode_json({"error": outcome.detail, "status": outcome.status}) + b"\n"


@final
class StreamBody:
    """Owns one streamed request on the loop: waits for its first item, then yields the rest.

    At the deadline the submission's timer puts the 504 on the same queue the worker writes to, so one
    `await` serves both. Ending early for any reason (client gone, deadline, server stopping) marks the
    request cancelled, which the worker sees at its next chunk and closes the user's generators.

    Counting: a stream counts as ok once its 200 is sent; if the client then leaves it also counts as
    cancelled, and if the deadline then cuts it, as timed out.
    """

    def __init__(
        self,
        queue: asyncio.Queue[StreamItem],
        window: threading.Semaphore,
        submission: Submission,
        counters: EndpointCounters,
    ) -> None:
        self._queue = queue
        self._window = window
        self._submission = submission
        self._counters = counters

    async def first(self) -> Outcome | StreamStart | None:
        """The stream's first item: a StreamStart, a failure Outcome, or None for an empty stream."""
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            self._submission.cancel()
            self._counters.count(Verdict.CANCELLED)
            raise
        if isinstance(item, Outcome):
            return item
        if isinstance(item, StreamStart):
            self._window.release()
            return item
        if item is STREAM_END:
            return None
        raise AssertionError(f"a stream cannot start with raw bytes: {item!r}")

    def response(self, start: StreamStart | None, timer: asyncio.TimerHandle | None) -> Response:
        """The 200 response whose body yields the rest of the stream; `timer` is cancelled when it ends."""
        media_type = NDJSON if start is None else start.media_type
        first_data = b"" if start is None else start.data
        body = self._body(first_data, start is not None, timer)
        response = Response(body, status=200, content_type=media_type)
        response.timeout = None  # our own deadline governs the stream, not Quart's RESPONSE_TIMEOUT
        return response

    async def _body(self, first_data: bytes, is_open: bool, timer: asyncio.TimerHandle | None) -> AsyncIterator[bytes]:
        finished = not is_open
        try:
            if first_data:
                yield first_data
            queue = self._queue
            # One HTTP chunk per stream chunk, never several joined: LitServe's clients (and its own
            # tests) parse each chunk they read as one JSON line.
            while not finished:
                item = await queue.get()
                if isinstance(item, bytes):
                    self._window.release()
                    yield item
                    continue
                finished = True
                if isinstance(item, Outcome):
                    if item.reason is DropReason.TIMED_OUT:
                        self._counters.count(Verdict.TIMED_OUT)
                    yield _error_line(item)
        finally:
            if timer is not None:
                timer.cancel()
            self._window.release(STREAM_WINDOW)  # a worker waiting for room wakes and sees why
            if not finished:
                # The client left (Quart cancels the response) or the server is stopping.
                self._submission.cancel()
                self._counters.count(Verdict.CANCELLED)
