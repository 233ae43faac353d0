"""Streamed responses: chunks from a worker's StreamReply become the response body as they arrive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, final

from quart import Response

from litserve.codec import encode_json
from litserve.engine.bridge import StreamReply
from litserve.engine.messages import STREAM_END, Outcome, StreamItem, StreamStart
from litserve.engine.stream_window import STREAM_WINDOW
from litserve.engine.submit import IdleDeadline, Submission
from litserve.status import EndpointCounters, Verdict
from litserve.web.stack import Send

__all__ = ["STREAM_WINDOW", "StreamBody", "StreamStarted", "ndjson_error_line"]


NDJSON = "application/x-ndjson"
SSE = "text/event-stream"  # the only streams whose waiting items are joined into one write (`_gather`)


def ndjson_error_line(outcome: Outcome) -> bytes:
    """How a started NDJSON stream ends on a failure: one last line naming it."""
    return encode_json({"error": outcome.detail, "status": outcome.status}) + b"\n"


@final
class StreamBody:
    """Owns one streamed request on the loop: waits for its first item, then yields the rest.

    A stream's `timeout` is decided here, and only here: an idle deadline (`IdleDeadline`) that
    passes `timeout_s` after the stream last moved, that is after it arrived, then each time chunks
    are taken to be sent. A long answer that keeps coming is never cut. A generator that goes quiet is,
    and so is a client that stops reading: its chunks wait unsent (a synchronous worker then waits for
    room in the window), which is quiet too, so no worker is held longer. Once the worker's last item
    is here, the deadline no longer passes: only the client is left to catch up. (`timeout_s=None`: no
    idle deadline; a spec's request answered as one document keeps the whole-request timer instead.)

    When the deadline passes, the submission puts the 504 on the same queue the worker writes to, so
    one `await` serves both: before the first chunk it is the answer, after it the stream's error line.
    Ending early for any reason (deadline, client gone, server stopping) marks the request cancelled,
    which the worker sees at its next chunk (or wakes to, if it waits for room), and closes the user's
    generators, even when the body never started.

    Counting: each request counts once, in one outcome. An answer given instead of a stream (a failure
    before the first chunk, an empty stream, a collected document) is the route's to count. A stream
    whose 200 is sent counts here, when it ends, by how it ended: ok when it finished, timed out when its
    deadline cut it, cancelled when its client left first, or as its error line's outcome. A body told
    to `count_nothing` (an OpenAI choice after the first) never counts: the request counts by its first.
    """

    def __init__(
        self,
        reply: StreamReply,
        submission: Submission,
        counters: EndpointCounters,
        timeout_s: float | None,
        arrival_s: float,
        error_line: Callable[[Outcome], bytes] = ndjson_error_line,
        trailer: bytes = b"",
    ) -> None:
        self._reply = reply
        self._queue = reply.queue
        self._window = reply.window
        self._submission = submission
        self._counters: EndpointCounters | None = counters  # None: this body never counts
        self._error_line = error_line  # a spec's streams end their own way (e.g. an SSE error event)
        self._trailer = trailer  # sent after a stream that ended normally (e.g. SSE's `data: [DONE]`)
        self._is_sent = False  # its 200 is out
        self._is_over = False  # ended and counted; nothing is left to do on any path
        self._is_drained = False  # its last item was taken: nothing more to write after its last bytes
        self._coalesce = False  # join the items already waiting into one write (`_gather`)
        self._owed = 0  # window slots of chunks taken since the last release (given back per run)
        self._idle = None if timeout_s is None else IdleDeadline(reply.loop, timeout_s, arrival_s, self._on_idle)
        self._arrival_s = arrival_s
        self._held = None if counters.inspector is None else counters.inspector.held()  # the request inspector's

    async def first(self) -> Outcome | StreamStart | None:
        """The stream's first item: a StreamStart, a failure Outcome, or None for an empty stream."""
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            self._client_left()
            raise
        if isinstance(item, StreamStart):
            if self._idle is not None:
                self._idle.moved()
            self._window.release()
            return item
        self._end(None)  # the route counts this answer
        if isinstance(item, Outcome):
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
                    continue
                self._end(None)
                if isinstance(item, Outcome):
                    return item
                return Outcome(200, b"".join(parts), first.media_type)
        except asyncio.CancelledError:
            self._client_left()
            raise

    def count_nothing(self) -> None:
        """Never count this body: another body of the same request counts it."""
        self._counters = None

    def cancel(self) -> None:
        """End the request early without counting it (its answer is given another way)."""
        if not self._is_over:
            self._submission.cancel()
            self._end(None)

    def iterate(self, start: StreamStart | None) -> AsyncIterator[bytes]:
        """The stream's bytes from its first item on, for a 200 that is being sent (counted as it ends).

        Call it in the task that sends the response: that task ends however the body does, even when
        the body never started (the client left first), and a stream not over by then is cancelled.
        """
        return self._body(self._begin(start))

    async def send_asgi(self, start: StreamStart | None, send: Send) -> None:
        """Send the stream's bytes as ASGI body messages, then its end: what `iterate` yields, without an
        async generator's step per chunk (the lean route's way; same rules for the calling task)."""
        first_data = self._begin(start)
        if first_data:
            await send({"type": "http.response.body", "body": first_data, "more_body": True})
        queue = self._queue
        while not self._is_drained:
            data = self._next_write()
            if data is None:
                await queue.wait()
            elif data:
                await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _begin(self, start: StreamStart | None) -> bytes:
        """The 200 is being sent (by the calling task): count an empty stream, end the stream with the task;
        the first chunk's bytes."""
        self._is_sent = True
        if start is None and self._counters is not None:
            self._counters.count(Verdict.OK)  # an empty stream: over already (`first` saw its end)
            self._record(Verdict.OK, None)
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(self._on_sent)
        if start is None:
            self._is_drained = True
            return b""
        self._coalesce = start.media_type.partition(";")[0] == SSE
        return start.data

    def response(self, start: StreamStart | None) -> Response:
        """The 200 response whose body yields the rest of the stream."""
        media_type = NDJSON if start is None else start.media_type
        response = Response(self.iterate(start), status=200, content_type=media_type)
        response.timeout = None  # our own deadline governs the stream, not Quart's RESPONSE_TIMEOUT
        return response

    async def _body(self, first_data: bytes) -> AsyncIterator[bytes]:
        if first_data:
            yield first_data
        queue = self._queue
        while not self._is_drained:
            data = self._next_write()
            if data is None:
                await queue.wait()
            elif data:
                yield data

    def _next_write(self) -> bytes | None:
        """The next bytes to write from the items that came; None when none waits yet. The last item marks
        the stream drained and gives its last bytes (the error line or the trailer, maybe none).

        The window's slots of the chunks taken go back once per run, when the items run out (before the
        body waits), not one lock round per chunk: a worker waiting for room has it once the body has
        taken every chunk that waited, as the window is all chunks either waiting or taken.
        """
        queue = self._queue
        item = queue.take()
        if item is None:
            if self._owed:
                self._window.release(self._owed)
                self._owed = 0
            return None
        if isinstance(item, bytes):
            self._owed += 1
            if self._coalesce and not queue.empty():
                item, self._is_drained = self._gather(item)
            if self._idle is not None:
                self._idle.moved()
            return item
        self._is_drained = True
        return self._last(item)

    def _gather(self, data: bytes) -> tuple[bytes, bool]:
        """`data` and the items already waiting, joined into one write; True when the stream ended there.

        Server-Sent Events only: their events are self-delimiting, so fewer, larger writes change nothing
        for a client while the worker is ahead. NDJSON and text streams never join items: LitServe's
        clients (its own tests too) parse each HTTP chunk they read as one JSON line.
        """
        queue = self._queue
        parts = [data]
        while not queue.empty():
            item = queue.get_nowait()
            if not isinstance(item, bytes):
                parts.append(self._last(item))
                return b"".join(parts), True
            parts.append(item)
            self._owed += 1
        return b"".join(parts), False

    def _last(self, item: StreamItem) -> bytes:
        """The stream's end: its error line for a failure, else its trailer; the end is counted once."""
        if isinstance(item, Outcome):
            self._end(item.verdict, item)
            return self._error_line(item)
        self._end(Verdict.OK)
        return self._trailer

    def _record(self, verdict: Verdict, failure: Outcome | None) -> None:
        """Tell the request inspector (when on) how the stream ended."""
        inspector = None if self._counters is None else self._counters.inspector
        if inspector is not None:
            inspector.stream_ended(self._held, verdict, time.monotonic() - self._arrival_s, failure)

    def _on_idle(self) -> None:
        """The idle deadline passed (on the loop)."""
        if self._reply.is_finished:
            return  # the worker is done; its last items wait for the client, which may take its time
        self._submission.expire()  # the 504 is queued before the worker is told
        self._end(Verdict.TIMED_OUT if self._is_sent else None)

    def _on_sent(self, task: asyncio.Task[Any]) -> None:
        self._client_left()

    def _client_left(self) -> None:
        # The client went away (Quart cancels the response) or the server is stopping.
        if not self._is_over:
            self._submission.cancel()  # before a worker waiting for room wakes
            self._end(Verdict.CANCELLED)

    def _end(self, verdict: Verdict | None, failure: Outcome | None = None) -> None:
        """The stream is over for its client: count how (once), stop its deadline, wake its worker."""
        if self._is_over:
            return
        self._is_over = True
        if self._idle is not None:
            self._idle.cancel()
        if verdict is not None and self._counters is not None:
            self._counters.count(verdict)
            self._record(verdict, failure)
        self._window.release(STREAM_WINDOW)  # a worker waiting for room wakes and sees why


@final
@dataclass(frozen=True, slots=True)
class StreamStarted:
    """A stream whose first item is here: its 200 is to be sent, then `body.iterate(start)`."""

    body: StreamBody
    start: StreamStart | None
    status_code: int = 200
