"""The in-flight book of one worker process: which requests it holds, how many more it may take, and
the traffic that changes that (requests out, answers in), all on the server's event loop.

A worker process may hold `credits` requests: what its workers can run at once. Everything else waits
in the endpoint's queue, where queue depth, max_queue_size, deadlines and hang-ups behave exactly as in
thread mode. `pump` sends queued requests while there is room, and `Stop` once the queue is closed and
empty; each answer gives a credit back and pumps again. A streamed request also has chunk credits
(`process.stream_credits`), given back as its response body sends its chunks.

Threads: every method runs on the loop's thread, except `fail_all` once the loop has ended (nothing
else runs then); so the book needs no lock. `held` and `answered_at_s` are hints any thread may read.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import time
from typing import final

from litserve.engine.bridge import LoopHandle, call_in_loop, set_if_pending
from litserve.engine.messages import DropReason, InferenceRequest, Outcome, StreamEnd, StreamItem
from litserve.engine.request_queue import RequestQueue
from litserve.engine.stream_window import StreamWindow
from litserve.exceptions import WORKER_PROCESS_DIED
from litserve.hooks import HookPlan
from litserve.loggers import LogSink, warn_unlogged
from litserve.process.channel import Channel
from litserve.process.messages import (
    Answer,
    Answers,
    Batches,
    Cancel,
    Chunk,
    Credit,
    Dropped,
    ErrorReport,
    FromChild,
    HealthAnswer,
    HealthQuery,
    LogEntry,
    Ready,
    Request,
    SetupFailed,
    Stop,
    Stopped,
    ToChild,
)
from litserve.process.stream_credits import StreamCredits
from litserve.process.wire import BadFrame
from litserve.status import ErrorLog, ErrorRecord, Verdict, WorkerCounters, WorkerState

__all__ = ["InFlightBook"]

logger = logging.getLogger(__name__)

_PROCESS_DIED = Outcome.failure(WORKER_PROCESS_DIED)


@final
class InFlightBook:
    """Requests out to one worker process and answers back, over its current `Channel`."""

    def __init__(
        self,
        name: str,
        source: RequestQueue[InferenceRequest],
        plan: HookPlan,
        credits: int,
        counters: WorkerCounters,
        errors: ErrorLog,
        log: LogSink | None = None,
        capacity: int | None = None,
    ) -> None:
        self._name = name
        self._log = warn_unlogged if log is None else log  # where the process's LitAPI.log entries go
        self._source = source
        self._body_model = plan.body_model
        self._credits = credits  # how many it may hold
        self._capacity = credits if capacity is None else capacity  # how many of those can run at once
        self._counters = counters
        self._errors = errors
        self._ids = itertools.count(1)  # request ids and health tokens
        self._pending: dict[int, InferenceRequest] = {}
        self._health: dict[int, asyncio.Future[bool]] = {}
        self._channel: Channel | None = None
        self._loop: LoopHandle | None = None
        self._stop_deadline_s: float | None = None  # set once the server stops
        self._stop_sent = False
        self.answered_at_s = 0.0  # when (monotonic) the process last gave a request back
        self._streams = StreamCredits(self._grant)

    @property
    def most_chunks_ahead(self) -> int:
        """The most chunks one stream of this process had sent that its client had not taken yet (so far).

        Flow control keeps it at most `STREAM_WINDOW`, however slowly a client reads.
        """
        return self._streams.most_ahead

    @property
    def held(self) -> int:
        return len(self._pending)

    def attach(self, channel: Channel, loop: LoopHandle) -> None:
        """A new worker process serves (after a start or restart): send it what waits."""
        self._channel, self._loop, self._stop_sent = channel, loop, False
        self.pump()

    def stop(self, deadline_s: float) -> None:
        """The server stops: once the queue is empty, tell the process to finish by `deadline_s`."""
        self._stop_deadline_s = deadline_s
        self.pump()

    def fail_all(self, outcome: Outcome, keep_unstarted: bool = False) -> int:
        """The process is gone: answer the requests it held with `outcome`; returns how many.

        With `keep_unstarted`, those it cannot have started go back to the head of the queue instead, for
        the next process that can take them. Its workers take requests in the order they were sent, so
        the ones started and not answered are the oldest it holds, at most `capacity` of them: the rest
        waited inside it (see `credits_for`), and a request that killed it is never among them.
        """
        self._channel = None
        for request_id in self._pending:
            self._streams.forget(request_id)
        held, self._pending = list(self._pending.values()), {}
        self._source.parked -= max(0, len(held) - self._capacity)
        lost = held[: self._capacity] if keep_unstarted else held
        unstarted = held[len(lost) :]
        for request in reversed(unstarted):
            self._source.put_back(request)
        for request in lost:
            self._finish(request, outcome)
        if unstarted and self._source.on_put is not None:
            self._source.on_put()  # another process may have room for them now
        for future in list(self._health.values()):
            _resolve(future, False)
        return len(lost)

    # --- requests out ------------------------------------------------------------------------------------

    def pump(self) -> None:
        """Send queued requests while the process has room; `Stop` after the last one when stopping."""
        channel, source = self._channel, self._source
        while channel is not None and channel.is_open and len(self._pending) < self._credits:
            if not source.qsize() and not source.is_closed:
                return  # nothing waits (after every answer, usually): no exception raised and caught
            try:
                request = source.get_nowait()
            except queue.Empty:
                return
            if request is None:  # closed and empty: the server is stopping
                self._send_stop(channel)
                return
            now_s = time.monotonic()
            reason = request.drop_reason(now_s)
            if reason is not None:
                self._counters.count_drop(reason.verdict)
                continue
            if not self._send(channel, request, now_s):
                # The process just died: the request waits for the next one that can take it (this one
                # once restarted); offer it to the others now.
                self._source.put_back(request)
                on_put = self._source.on_put
                if on_put is not None:
                    on_put()
                return

    def _send_stop(self, channel: Channel) -> None:
        deadline_s = self._stop_deadline_s
        if deadline_s is not None and not self._stop_sent:
            self._stop_sent = channel.send(Stop(max(0.0, deadline_s - time.monotonic())))

    def _send(self, channel: Channel, request: InferenceRequest, handed_s: float) -> bool:
        """False when the request could not be written (it goes back to the queue). `handed_s`: now, as
        the server hands it over; pickling, a buffered write and the process's read all count toward its
        batch window (see engine.batcher)."""
        request_id = next(self._ids)
        payload, model_data = request.payload, None
        if self._body_model is not None and isinstance(payload, self._body_model):
            # The model class may live only in the user's notebook: send its JSON form (by alias, as it
            # came in), and the process validates it again with its own copy of the class.
            model_data = payload.model_dump(mode="json", by_alias=True, round_trip=True)
            payload = None
        context, shape, queued_s = request.context, request.shape, request.queued_s
        followed = self._source.others_coming()  # the adaptive batch window's signal, for the process
        message = Request(
            request_id, payload, request.deadline_s, context, model_data, handed_s, shape, queued_s, followed
        )
        try:
            sent = channel.send(message)
        except Exception as exc:  # the payload cannot be pickled: fail this request, keep serving
            self._errors.record(self._name, exc)
            logger.error("could not send a request to %s", self._name, exc_info=exc)
            self._finish(request, _PROCESS_DIED)
            return True
        if not sent:
            return False
        self._pending[request_id] = request
        if len(self._pending) > self._capacity:  # it waits inside the process: still queued (see `credits_for`)
            self._source.parked += 1
        self._counters.state = WorkerState.BUSY
        window = getattr(request.reply, "window", None)
        if isinstance(window, StreamWindow):
            self._streams.follow(request_id, window)
        request.cancellation.listener = lambda reason: self._cancel(request_id, reason)
        if request.cancellation.reason is not None:  # cancelled while being sent
            channel.send(Cancel(request_id, request.cancellation.reason))
        return True

    def _grant(self, request_id: int, count: int) -> None:
        # On the loop, as a stream's response body takes chunks.
        channel = self._channel
        if channel is not None and request_id in self._pending:
            channel.send(Credit(request_id, count))

    def _cancel(self, request_id: int, reason: DropReason) -> None:
        # When a client leaves or a deadline passes: on the loop, or a `predict()` caller's thread.
        loop = self._loop
        if loop is not None:
            loop.call(self._send_cancel, request_id, reason)

    def _send_cancel(self, request_id: int, reason: DropReason) -> None:
        channel = self._channel
        if channel is not None and request_id in self._pending:
            channel.send(Cancel(request_id, reason))

    def ask_health(self, future: asyncio.Future[bool]) -> int | None:
        """Ask the process whether its workers are healthy; the answer resolves `future`. None if not sent.

        From any loop: a test client calls the app on a loop of its own, and the question still goes out
        on the server's loop (the channel's), the answer back to `future`'s loop."""
        loop = self._loop
        if self._channel is None or loop is None:
            return None
        token = next(self._ids)
        self._health[token] = future
        if not loop.call(self._send_health_query, token):
            self._health.pop(token, None)
            return None
        return token

    def _send_health_query(self, token: int) -> None:
        channel = self._channel
        if channel is None or not channel.send(HealthQuery(token)):
            _resolve(self._health.pop(token, None), False)

    def forget_health(self, token: int) -> None:
        self._health.pop(token, None)

    # --- answers in --------------------------------------------------------------------------------------

    def receive(self, message: ToChild | FromChild | BadFrame) -> None:
        """Handle one message from the process (on the loop)."""
        match message:
            case Answer(request_id, outcome, batches):
                if batches:
                    self._counters.batch_sizes.update(batches)
                self._answer(request_id, outcome)
            case Answers(items, batches):
                if batches:
                    self._counters.batch_sizes.update(batches)
                for request_id, outcome in items:
                    self._answer(request_id, outcome)
            case Chunk(request_id, item):
                self._chunk(request_id, item)
            case Dropped(request_id, reason):
                if self._take(request_id) is not None:
                    self._counters.count_drop(reason.verdict)
            case Batches(sizes):
                self._counters.batch_sizes.update(sizes)
            case ErrorReport(record):
                self._keep_error(record)
            case LogEntry(key, value):
                self._log(key, value)
            case HealthAnswer(token, healthy):
                _resolve(self._health.pop(token, None), healthy)
            case BadFrame(error):  # its request, if any, ends at its deadline
                self._errors.record(self._name, error)
                logger.error("could not read a message from worker process %s: %s", self._name, error)
            case Ready() | SetupFailed() | Stopped():  # the supervisor's part (handshake, channel end)
                pass
            case _:  # what only the server sends: a bug on the other side, not a reason to stop serving
                self._errors.record(self._name, ValueError(f"unexpected message from a worker process: {message!r}"))
        self.pump()

    def _take(self, request_id: int) -> InferenceRequest | None:
        pending = self._pending
        request = pending.pop(request_id, None)
        if request is not None:
            if len(pending) >= self._capacity:  # one fewer waits inside the process
                self._source.parked -= 1
            self._streams.forget(request_id)
            self.answered_at_s = time.monotonic()
            if not self._pending:
                self._counters.state = WorkerState.IDLE
        return request

    def _answer(self, request_id: int, outcome: Outcome) -> None:
        request = self._take(request_id)
        if request is not None:
            self._finish(request, outcome)

    def _finish(self, request: InferenceRequest, outcome: Outcome) -> None:
        self._counters.count(outcome.verdict)
        request.reply.deliver(outcome)

    def _chunk(self, request_id: int, item: StreamItem) -> None:
        if isinstance(item, Outcome):  # the stream failed: its last item
            self._answer(request_id, item)
        elif isinstance(item, StreamEnd):
            request = self._take(request_id)
            if request is not None:
                self._counters.count(Verdict.OK)
                request.reply.push(item)
        else:
            request = self._pending.get(request_id)
            if request is not None:
                self._streams.received(request_id)
                request.reply.push(item)

    def _keep_error(self, record: ErrorRecord) -> None:
        where = f"{self._name}/{record.where}"
        self._errors.keep(ErrorRecord(where, record.summary, record.traceback, record.at_s))
        logger.error("%s raised in worker process %s:\n%s", where, self._name, record.traceback)


def _resolve(future: asyncio.Future[bool] | None, healthy: bool) -> None:
    """Answer a health question on its own loop (the server's, or a test client's)."""
    if future is None:
        return
    loop = future.get_loop()
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        set_if_pending(future, healthy)
    else:
        call_in_loop(loop, set_if_pending, future, healthy)
