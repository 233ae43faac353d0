"""Streamed responses: chunks from a worker's StreamReply become the response body as they arrive."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import final

from quart import Response

from litserve.codec import encode_json
from litserve.engine.messages import STREAM_END, DropReason, Outcome, StreamItem, StreamStart
from litserve.engine.submit import Submission
from litserve.status import EndpointCounters, Verdict

__all__ = ["STREAM_WINDOW", "StreamBody", "ndjson_error_line"]

# Chunks a stream may have produced and not yet sent before its (synchronous) worker waits.
STREAM_WINDOW = 64

NDJSON = "application/x-ndjson"


def ndjson_error_line(outcome: Outcome) -> bytes:
    """How a started NDJSON stream ends on a failure: one last line naming it."""
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
        error_line: Callable[[Outcome], bytes] = ndjson_error_line,
        trailer: bytes = b"",
    ) -> None:
        self._queue = queue
        self._window = window
        self._submission = submission
        self._counters = counters
        self._error_line = error_line  # a spec's streams end their own way (e.g. an SSE error event)
        self._trailer = trailer  # sent after a stream that ended normally (e.g. SSE's `data: [DONE]`)

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

    async def collect(self) -> Outcome:
        """The whole stream as one answer: 200 with every chunk joined, or the failure that ended it.

        For a spec's request whose client wants one document (the spec's encoder sends it at the end).
        """
        first = await self.first()
        if first is None or isinstance(first, Outcome):
            return first or Outcome(200, b"")
        parts = [first.data]
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, bytes):
                    parts.append(item)
                    self._window.release()
                elif isinstance(item, Outcome):
                    return item
                else:
                    return Outcome(200, b"".join(parts), first.media_type)
        except asyncio.CancelledError:
            self._submission.cancel()
            self._counters.count(Verdict.CANCELLED)
            raise

    def cancel(self) -> None:
        """End the request early without counting it (its answer is given another way)."""
        self._submission.cancel()

    def iterate(self, start: StreamStart | None, timer: asyncio.TimerHandle | None) -> AsyncIterator[bytes]:
        """The stream's bytes from its first item on; `timer` is cancelled when it ends."""
        return self._body(b"" if start is None else start.data, start is not None, timer)

    def response(self, start: StreamStart | None, timer: asyncio.TimerHandle | None) -> Response:
        """The 200 response whose body yields the rest of the stream; `timer` is cancelled when it ends."""
        media_type = NDJSON if start is None else start.media_type
        response = Response(self.iterate(start, timer), status=200, content_type=media_type)
        response.timeout = None  # our own deadline governs the stream, not Quart's RESPONSE_TIMEOUT
        return response

    async def _body(self, first_data: bytes, is_open: bool, timer: asyncio.TimerHandle | None) -> AsyncIterator[bytes]:
        finished = not is_open
        try:
            if first_data:
                yield first_data
            queue = self._queue
            while not finished:
                item = await queue.get()
                parts: list[bytes] = []
                # Coalesce what is already waiting into one write: fewer sends when the worker is ahead.
                while True:
                    if isinstance(item, bytes):
                        parts.append(item)
                        self._window.release()
                    else:
                        finished = True
                        if isinstance(item, Outcome):
                            if item.reason is DropReason.TIMED_OUT:
                                self._counters.count(Verdict.TIMED_OUT)
                            parts.append(self._error_line(item))
                        else:
                            parts.append(self._trailer)
                        break
                    if queue.empty():
                        break
                    item = queue.get_nowait()
                if parts:
                    yield b"".join(parts)
        finally:
            if timer is not None:
                timer.cancel()
            self._window.release(STREAM_WINDOW)  # a worker waiting for room wakes and sees why
            if not finished:
                # The client left (Quart cancels the response) or the server is stopping.
                self._submission.cancel()
                self._counters.count(Verdict.CANCELLED)
