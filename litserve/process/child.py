"""The worker process: `python -m litserve.process.child FD`, started by `process.supervisor`.

It runs the same worker threads as thread mode on its own request queue, which its idle workers fill
by reading the socket themselves (`ChildQueue`). The server sends requests, cancellations, health
checks, stream credits and `Stop`; workers answer through a `ChildReply`, which writes to the server
(with the sizes of the batches collected since its last message, for the server's status). When the
server goes away (even killed), the socket reads end of stream and this process exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Hashable, Sequence
from typing import Any, final

import cloudpickle

from litserve.engine.health import all_healthy
from litserve.engine.messages import STREAM_END, Cancellation, DropReason, InferenceRequest, Outcome, Reply, StreamItem
from litserve.engine.observe import Observers
from litserve.engine.pool import copy_api
from litserve.engine.stream_window import STREAM_WINDOW
from litserve.engine.worker import Worker
from litserve.exceptions import INTERNAL_ERROR
from litserve.hooks import HookPlan, plan_with_model
from litserve.process.child_queue import ChildQueue
from litserve.process.devices import DEVICE_FAILED_EXIT_CODE, child_device
from litserve.process.messages import (
    Answer,
    Answers,
    Batches,
    Cancel,
    ChildInit,
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
    crossable,
    decode,
    encode,
)
from litserve.process.stream_credits import ChildCredits
from litserve.process.wire import BadFrame, Link, LinkClosedError
from litserve.status import ErrorLog

__all__ = ["ChildReply", "main"]

_WHERE = "litserve-worker-process"
_INTERNAL_FAILURE = Outcome.failure(INTERNAL_ERROR)


@final
class ChildReply:
    """A request's reply inside a worker process: every answer becomes a message to the server.

    A streamed request has `room`: the credits the server granted for its chunks (`STREAM_WINDOW` at
    first, more as its client takes them), so a slow client makes this stream's worker wait here, not
    this process (or the server) hold its chunks.
    """

    __slots__ = ("_request_id", "_room", "_session")

    def __init__(self, request_id: int, session: _Session, room: ChildCredits | None = None) -> None:
        self._request_id = request_id
        self._session = session
        self._room = room

    @property
    def batch_key(self) -> Hashable:
        return self._session

    def deliver(self, outcome: Outcome) -> None:
        self._session.answer(Answer(self._request_id, crossable(outcome)), (self._request_id,))

    def deliver_batch(self, answers: Sequence[tuple[Reply, Outcome]]) -> None:
        items = tuple((_request_id(reply), crossable(outcome)) for reply, outcome in answers)
        self._session.answer(Answers(items), tuple(request_id for request_id, _ in items))

    def push(self, item: StreamItem) -> None:
        if type(item) is Outcome:
            self._session.answer(Chunk(self._request_id, crossable(item)), (self._request_id,))
        elif item is STREAM_END:
            self._session.send(Chunk(self._request_id, item), self._request_id)
        else:
            try:
                self._session.send(Chunk(self._request_id, item))
            except LinkClosedError:
                raise
            except Exception as exc:  # a chunk that cannot be pickled (a bytes subclass holding a lock)
                self._session.fail_stream(self._request_id, exc)

    def abandon(self, reason: DropReason) -> None:
        self._session.send(Dropped(self._request_id, reason), self._request_id)

    def wait_for_room(self) -> None:
        """Take a credit for the next chunk; wait for the server to grant more (or the stream to end)."""
        room = self._room
        if room is not None:
            room.take()


def _request_id(reply: Reply) -> int:
    # Replies grouped by batch_key share one session: each is a ChildReply.
    assert isinstance(reply, ChildReply)
    return reply._request_id


@final
class _Session:
    """What the worker process serves: its link to the server, its workers and the requests they hold."""

    def __init__(self, link: Link, init: ChildInit, plan: HookPlan, is_stream: bool) -> None:
        self.link = link
        self.plan = plan
        self.cancellations: dict[int, Cancellation] = {}
        self.rooms: dict[int, ChildCredits] = {}  # streamed requests' credits
        self.is_stream = is_stream
        self._batch_sizes: list[int] = []
        self._batch_lock = threading.Lock()
        self.stop_wait_s: float | None = None
        # Reports made before `Ready` (a callback or log() during setup) wait: the server reads `Ready` first.
        self._held: list[list[bytes | memoryview]] | None = []
        self._held_lock = threading.Lock()
        self.errors = ErrorLog(on_record=lambda record: self.report(ErrorReport(record)))
        self.queue = ChildQueue(link, self.handle, consumers=len(init.worker_names))
        self.workers: list[Worker] = []
        self.followed = True  # whether more came after the last request the server handed over

    def others_coming(self) -> bool:
        """The adaptive batch window's signal here: something from the server waits to be taken, or the
        last request it handed over said more were on their way then."""
        return self.followed or self.queue.has_unread()

    def send(self, message: FromChild, *finished: int) -> None:
        """Write one message; `finished` requests are forgotten first (their last message). The sizes of
        batches collected since the last message go with it, in the same write."""
        for request_id in finished:
            self.cancellations.pop(request_id, None)
            self.rooms.pop(request_id, None)
        if not self._batch_sizes:
            self.link.send(encode(message))
            return
        with self._batch_lock:
            sizes, self._batch_sizes = tuple(self._batch_sizes), []
        try:
            if type(message) is Answer:
                pieces = encode(Answer(message.request_id, message.outcome, sizes))
            elif type(message) is Answers:
                pieces = encode(Answers(message.items, sizes))
            else:
                pieces = encode(Batches(sizes)) + encode(message)
        except BaseException:  # a payload that cannot be pickled: the sizes go with the next message
            with self._batch_lock:
                self._batch_sizes[:0] = sizes
            raise
        self.link.send(pieces)

    def answer(self, message: Answer | Answers | Chunk, finished: tuple[int, ...]) -> None:
        """Send a request's last message; if it cannot be pickled, those requests get a 500 instead, the
        error is logged in the server with its traceback, and this process serves on."""
        try:
            self.send(message, *finished)
        except LinkClosedError:
            raise
        except Exception as exc:
            if isinstance(message, Answers):  # a batch: each answer that can go still goes
                for request_id, outcome in message.items:
                    self.answer(Answer(request_id, outcome), (request_id,))
                return
            self.errors.record(_WHERE, exc)
            for request_id in finished:
                self.send(Answer(request_id, _INTERNAL_FAILURE), request_id)

    def fail_stream(self, request_id: int, exc: Exception) -> None:
        """End a stream whose chunk could not be sent with a 500 (its error line once started); its worker
        stops it at the next chunk, as when its client left."""
        self.errors.record(_WHERE, exc)
        cancellation = self.cancellations.get(request_id)
        room = self.rooms.get(request_id)  # taken before the last message forgets it
        self.send(Chunk(request_id, _INTERNAL_FAILURE), request_id)
        if cancellation is not None:
            cancellation.cancel(DropReason.DISCONNECTED)
        if room is not None:  # a worker out of credits wakes, sees the cancellation and stops (no credit can come now)
            room.grant(STREAM_WINDOW)

    def batch_taken(self, size: int) -> None:
        """A worker collected a batch (on its thread): the server counts it with the next message."""
        with self._batch_lock:
            self._batch_sizes.append(size)

    def report(self, message: ErrorReport | LogEntry) -> None:
        """Send a report to the server, or hold it until `Ready` went out."""
        pieces = encode(message)
        with self._held_lock:
            if self._held is not None:
                self._held.append(pieces)
                return
        self.link.send(pieces)

    def ready(self) -> None:
        """Say `Ready`, then send the reports held until now (in order: new ones wait for the lock)."""
        with self._held_lock:
            self.link.send(encode(Ready(os.getpid())))
            held, self._held = self._held or [], None
            for pieces in held:
                self.link.send(pieces)

    def device_failed(self, exc: BaseException) -> None:
        """A worker hit a sticky CUDA error (its batch is answered): this process's CUDA context is broken
        for every worker in it, and only a new process gets a working one, so it exits for its supervisor
        to start another. The error was recorded (and sent to the server) when the hook raised."""
        os._exit(DEVICE_FAILED_EXIT_CODE)

    def log(self, key: str, value: Any) -> None:
        """LitAPI.log in this process: the entry goes to the server's loggers; never raises into a hook."""
        try:
            self.report(LogEntry(key, value))
        except LinkClosedError:
            pass  # the server is gone; this process is ending
        except Exception as exc:  # e.g. a value that cannot be pickled
            self.errors.record(_WHERE, exc)

    def handle(self, wire_form: Any) -> InferenceRequest | None:
        """One message from the server: a request to queue, or None when dealt with here.

        Runs on whichever thread read it (see ChildQueue), often a worker: nothing may escape.
        """
        try:
            return self._take(decode(wire_form))
        except LinkClosedError:
            raise
        except BaseException as exc:  # noqa: B036 - even SystemExit from a user's health() must not end a worker
            self.errors.record(_WHERE, exc)
            return None

    def _take(self, message: ToChild | FromChild | BadFrame) -> InferenceRequest | None:
        match message:
            case Request():
                return self._request(message)
            case Credit(request_id, count):
                room = self.rooms.get(request_id)
                if room is not None:
                    room.grant(count)
            case Cancel(request_id, reason):
                cancellation = self.cancellations.get(request_id)
                if cancellation is not None:
                    cancellation.cancel(reason)
                room = self.rooms.get(request_id)
                if room is not None:  # a worker waiting for credits wakes and sees the cancellation
                    room.grant(STREAM_WINDOW)
            case HealthQuery(token):
                self.send(HealthAnswer(token, asyncio.run(all_healthy(self.workers))))
            case Stop(wait_s):
                self.stop_wait_s = wait_s
                self.queue.close()
            case BadFrame(error, tag):  # e.g. a payload whose class this process cannot import
                self.errors.record(_WHERE, error)
                if tag:  # a request: answer it, so the server gives its slot back
                    self.send(Answer(tag, Outcome.failure(INTERNAL_ERROR)))
            case _:
                raise ValueError(f"unexpected message from the server: {message!r}")
        return None

    def _request(self, message: Request) -> InferenceRequest | None:
        payload = message.payload
        body_model = self.plan.body_model
        try:
            if message.model_data is not None and body_model is not None:
                payload = body_model.model_validate(message.model_data)
        except Exception as exc:  # fail this request only; the process keeps serving
            self.errors.record(_WHERE, exc)
            self.send(Answer(message.request_id, Outcome.failure(INTERNAL_ERROR)))
            return None
        self.followed = message.followed
        cancellation = Cancellation()
        self.cancellations[message.request_id] = cancellation
        room = None
        if self.is_stream:
            room = self.rooms[message.request_id] = ChildCredits()
        reply = ChildReply(message.request_id, self, room)
        return InferenceRequest(
            payload,
            reply,
            message.deadline_s,
            cancellation,
            message.context,
            message.handed_s,
            message.shape,
            message.queued_s,
        )


def main() -> None:
    # Ctrl+C in a terminal reaches the whole foreground process group, this process too. The server
    # decides how its workers end (`Stop` lets them finish what they hold; its socket closing ends them
    # at once): a worker process interrupted here would fail its requests in the middle of a graceful stop.
    # A handler, not SIG_IGN: an ignored signal stays ignored in the processes a LitAPI starts (a
    # DataLoader's workers, an engine's server); a handler goes back to the default in them.
    signal.signal(signal.SIGINT, _ignore_interrupt)
    sock = socket.socket(fileno=int(sys.argv[1]))
    link = Link(sock)
    try:
        init = decode(link.recv())
    except LinkClosedError:
        os._exit(0)
    assert isinstance(init, ChildInit), f"the first message must be a ChildInit, not {init!r}"
    sys.path[:] = list(init.sys_path)
    # Errors travel to the server process, which logs them and keeps the last one for its status;
    # logging them here as well would print every traceback twice.
    quiet = logging.getLogger("litserve")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    try:
        _serve(link, init)
    except LinkClosedError:
        pass
    # Worker threads may still sit in a user's hook; the server is gone or asked us to stop.
    os._exit(0)


def _ignore_interrupt(signum: int, frame: object) -> None:
    """SIGINT in a worker process: nothing (the server ends its workers)."""


def _serve(link: Link, init: ChildInit) -> None:
    try:
        # The body model comes resolved: this copy of a class shipped by value cannot resolve its
        # string annotations (`from __future__ import annotations`), as the server's could.
        api, callbacks, body_model = cloudpickle.loads(init.api_bytes)
        plan = plan_with_model(api, body_model)
    except BaseException as exc:
        link.send(encode(_setup_failed(exc)))
        return
    session = _Session(link, init, plan, api.stream)
    observers = Observers(callbacks, session.log)
    device = child_device(init.device)  # this process sees only its own GPU (CUDA_VISIBLE_DEVICES)
    session.workers = [
        Worker(
            name,
            copy_api(api),
            device,
            session.queue,
            session.errors,
            plan,
            observers=observers,
            on_batch=session.batch_taken,
            others_coming=session.others_coming,
            on_device_failure=session.device_failed,
        )
        for name in init.worker_names
    ]
    for worker in session.workers:
        worker.start()
    for worker in session.workers:
        failure = worker.ready.exception()
        if failure is not None:
            link.send(encode(_setup_failed(failure)))
            return
    session.ready()
    session.queue.serve()  # until Stop came; LinkClosedError when the server went away
    for worker in session.workers:
        worker.join(session.stop_wait_s)
    link.send(encode(Stopped()))


def _setup_failed(exc: BaseException) -> SetupFailed:
    try:
        original: bytes | None = bytes(cloudpickle.dumps(exc))
    except Exception:  # an exception that cannot travel: the summary and traceback text still do
        original = None
    return SetupFailed(f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc)), original)


if __name__ == "__main__":
    main()
