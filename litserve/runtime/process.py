"""Process mode: one worker process per device, driven from the server process.

The HTTP thread, the request queues, deadlines, disconnects and the status stay in the server
process. For each child process this module keeps two threads:

- `litserve-proxy-<device>-<n>-send` takes requests from the endpoint's queue while the child has
  room (`credits`: as many as its workers can batch at once) and sends each one across, once;
- `litserve-proxy-<device>-<n>-recv` reads the child's answers and hands them to the waiting
  requests through the bridge, and notices at once when the child dies (end of stream on the
  socket): its requests get 500, the child is started again (setup() runs again), and /health says
  "not ready" until it is back.

Batches are formed in the child, from its own queue, by the same worker loop as thread mode.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable
from typing import final

from litserve.engine import bridge
from litserve.engine.messages import DropReason, InferenceRequest, Outcome, StreamEnd, StreamItem
from litserve.engine.request_queue import RequestQueue
from litserve.engine.worker import ASYNC_MAX_BATCHES_IN_FLIGHT
from litserve.exceptions import ErrorResponse
from litserve.hooks import HookPlan
from litserve.runtime.child import ChildInit
from litserve.runtime.ipc import Link, LinkClosedError
from litserve.status import ErrorLog, ErrorRecord, WorkerCounters, WorkerState

__all__ = ["ProcessWorker", "RemoteError", "credits_for"]

logger = logging.getLogger(__name__)

_PROCESS_DIED = Outcome.failure(ErrorResponse(500, "Internal server error"))
_HEALTH_TIMEOUT_S = 5.0  # a worker process that cannot say it is healthy within this is not


class RemoteError(Exception):
    """An exception raised in a worker process; its message carries the child's traceback."""


@final
class ProcessWorker:
    """A worker process serving one endpoint on one device, with `len(worker_names)` threads inside."""

    def __init__(
        self,
        name: str,
        api_bytes: bytes,
        device: str,
        worker_names: tuple[str, ...],
        source: RequestQueue[InferenceRequest],
        errors: ErrorLog,
        plan: HookPlan,
        credits: int,
        restart: bool,
    ) -> None:
        self.name = name
        self.device = device
        self.counters = WorkerCounters()
        self.restarts = 0
        self._init = ChildInit(
            api_bytes=api_bytes,
            device=device,
            worker_names=worker_names,
            sys_path=tuple(sys.path),
        )
        self._source = source
        self._errors = errors
        self._plan = plan
        self._restart = restart
        self._credits = threading.Semaphore(credits)
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._child_ready = threading.Event()  # set while a child is serving (or we are stopping)
        self._stopping = False
        self._lock = threading.Lock()
        self._pending: dict[int, InferenceRequest] = {}
        self._health_checks: dict[int, bridge.Reply[bool]] = {}
        self._ids = itertools.count()
        self._process: subprocess.Popen[bytes] | None = None
        self._link: Link | None = None
        self._sender = threading.Thread(target=self._send_loop, name=f"{name}-send", daemon=True)
        self._receiver = threading.Thread(target=self._receive_loop, name=f"{name}-recv", daemon=True)

    # --- the WorkerHandle surface (what pool, status and /health read) -----------------------------------

    @property
    def ready(self) -> concurrent.futures.Future[None]:
        return self._ready

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None else process.pid

    def is_healthy(self) -> bool | Awaitable[bool]:
        """Serving, and the LitAPI's own `health()` agrees in the child (asked over the socket)."""
        link = self._link
        if link is None or self.counters.state not in (WorkerState.IDLE, WorkerState.BUSY):
            return False
        loop = asyncio.get_running_loop()  # called by the /health route, on the HTTP loop
        future: asyncio.Future[bool] = loop.create_future()
        token = next(self._ids)
        with self._lock:
            self._health_checks[token] = bridge.Reply(loop, future)
        try:
            link.send(("health", token))
        except LinkClosedError:
            return False
        return self._health_verdict(token, future)

    async def _health_verdict(self, token: int, future: asyncio.Future[bool]) -> bool:
        try:
            return await asyncio.wait_for(future, _HEALTH_TIMEOUT_S)
        except asyncio.TimeoutError:  # not TimeoutError: they differ before Python 3.11
            return False
        finally:
            with self._lock:
                self._health_checks.pop(token, None)

    def start(self) -> None:
        self._receiver.start()

    def join(self, timeout_s: float | None) -> bool:
        """Stop: send nothing new, let the child finish what it has, end it, join both threads."""
        deadline_s = time.monotonic() + (timeout_s if timeout_s is not None else 3600.0)
        self._stopping = True
        self._child_ready.set()
        self._credits.release()  # wake the sender if it waits for room
        if self._sender.ident is not None:
            self._sender.join(max(0.0, deadline_s - time.monotonic()))
        link, process = self._link, self._process
        if link is not None:
            try:
                link.send(("stop", max(0.0, deadline_s - time.monotonic())))
            except LinkClosedError:
                pass
        if self._receiver.ident is not None:
            self._receiver.join(max(0.0, deadline_s - time.monotonic()))
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)
            self._receiver.join(5)
        return not self._receiver.is_alive() and not self._sender.is_alive()

    # --- the child ---------------------------------------------------------------------------------------

    def _spawn(self) -> Link:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "litserve.runtime.child", str(child_end.fileno())],
                pass_fds=[child_end.fileno()],
                stdin=subprocess.DEVNULL,
            )
        finally:
            child_end.close()
        link = Link(parent_end)
        link.send(self._init)
        self._link = link
        return link

    def _handshake(self, link: Link) -> None:
        message = link.recv()
        if message[0] == "setup_failed":
            _, summary, text, original = message
            error = RemoteError(f"{summary}\n\nin the worker process:\n{text}")
            if original is None:
                raise error
            import cloudpickle

            # The user's own exception, so `except ValueError` around start() works in both modes.
            raise cloudpickle.loads(original) from error
        assert message[0] == "ready", f"unexpected first message from a worker process: {message[0]}"

    def _receive_loop(self) -> None:
        first = True
        while not self._stopping:
            try:
                link = self._spawn()
                self._handshake(link)
            except BaseException as exc:
                self._end_child()
                self.counters.state = WorkerState.FAILED
                if first:
                    self._ready.set_exception(exc)
                else:
                    self._errors.record(self.name, exc)
                    logger.error("worker process %s could not be restarted: %s", self.name, exc)
                self._child_ready.set()  # let the sender leave: there is no child to send to
                self._stopping = True
                return
            self.counters.state = WorkerState.IDLE
            self._child_ready.set()
            if first:
                first = False
                self._ready.set_result(None)
                self._sender.start()
            self._read_answers(link)
            exited = self._end_child()
            if self._stopping:
                break
            self._child_died(exited)
        if self.counters.state is not WorkerState.FAILED:
            self.counters.state = WorkerState.STOPPED

    def _read_answers(self, link: Link) -> None:
        while True:
            try:
                message = link.recv()
            except LinkClosedError:
                return
            kind = message[0]
            if kind == "results":
                for request_id, outcome in message[1]:
                    self._answer(request_id, outcome)
            elif kind == "result":
                self._answer(message[1], message[2])
            elif kind == "chunk":
                self._chunk(message[1], message[2])
            elif kind == "dropped":
                self._dropped(message[1], message[2])
            elif kind == "error":
                record: ErrorRecord = message[1]
                where = f"{self.name}/{record.where}"
                self._errors.keep(ErrorRecord(where, record.summary, record.traceback, record.at_s))
                logger.error("%s raised in worker process %s:\n%s", where, self.pid, record.traceback)
            elif kind == "health":
                with self._lock:
                    waiting = self._health_checks.get(message[1])
                if waiting is not None:
                    bridge.deliver(waiting, bool(message[2]))
            elif kind == "stopped":
                return

    def _end_child(self) -> int | None:
        link, process = self._link, self._process
        self._link = None
        if link is not None:
            link.close()
        if process is None:
            return None
        try:
            return process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(5)

    def _child_died(self, returncode: int | None) -> None:
        self._child_ready.clear()
        self.counters.state = WorkerState.STARTING
        with self._lock:
            lost = list(self._pending)
        for request_id in lost:
            self._answer(request_id, _PROCESS_DIED)  # releases each request's credit
        error = RemoteError(f"worker process {self.name} exited with code {returncode}; {len(lost)} requests failed")
        self._errors.record(self.name, error)
        logger.error("%s%s", error, "; starting it again" if self._restart else "")
        if not self._restart:
            self.counters.state = WorkerState.FAILED
            self._stopping = True
            self._child_ready.set()
            return
        self.restarts += 1

    # --- requests in and answers out ---------------------------------------------------------------------

    def _send_loop(self) -> None:
        # Holds a credit for every request the child has and not yet answered.
        while True:
            self._credits.acquire()
            self._child_ready.wait()
            if self._stopping:
                return
            request = self._source.get()
            if request is None:
                return
            # The child may have died while we waited for a request: send only to a serving child.
            self._child_ready.wait()
            reason = request.drop_reason(time.monotonic())
            if reason is not None:
                self._count_drop(reason)
                self._credits.release()
                continue
            self._send(request)

    def _send(self, request: InferenceRequest) -> None:
        request_id = next(self._ids)
        with self._lock:
            self._pending[request_id] = request
        payload, model_data = request.payload, None
        body_model = self._plan.body_model
        if body_model is not None and isinstance(payload, body_model):
            # The model class may live only in the user's notebook: send its JSON form (by alias, as it
            # came in), and the child validates it again with its own copy of the class.
            model_data = payload.model_dump(mode="json", by_alias=True, round_trip=True)
            payload = None
        link = self._link
        try:
            if link is None:
                raise LinkClosedError("no worker process")
            link.send(("request", request_id, payload, request.deadline_s, request.context, model_data))
        except LinkClosedError:
            # The child died: answer now (the receiver may already have failed the others).
            self._answer(request_id, _PROCESS_DIED)
            return
        except Exception as exc:  # the payload cannot be pickled: fail this request, keep serving
            self._errors.record(self.name, exc)
            logger.error("could not send a request to %s", self.name, exc_info=exc)
            self._answer(request_id, _PROCESS_DIED)
            return
        self.counters.state = WorkerState.BUSY
        cancellation = request.cancellation
        cancellation.listener = lambda reason: self._cancel(request_id, reason)
        if cancellation.reason is not None:  # cancelled while being sent
            self._cancel(request_id, cancellation.reason)

    def _cancel(self, request_id: int, reason: DropReason) -> None:
        # Runs on the HTTP loop when a client leaves or a deadline passes: a short write to the child.
        link = self._link
        if link is not None:
            try:
                link.send(("cancel", request_id, reason))
            except LinkClosedError:
                pass

    def _take(self, request_id: int) -> InferenceRequest | None:
        with self._lock:
            request = self._pending.pop(request_id, None)
            if not self._pending:
                self.counters.state = WorkerState.IDLE
        if request is not None:
            self._credits.release()
        return request

    def _answer(self, request_id: int, outcome: Outcome) -> None:
        request = self._take(request_id)
        if request is not None:
            self._finish(request, outcome)

    def _finish(self, request: InferenceRequest, outcome: Outcome) -> None:
        if outcome.status < 400:
            self.counters.served += 1
        elif outcome.status >= 500:
            self.counters.errors += 1
        if isinstance(request.reply, bridge.StreamReply):
            bridge.push(request.reply, outcome)
        else:
            bridge.deliver(request.reply, outcome)

    def _chunk(self, request_id: int, item: StreamItem) -> None:
        if isinstance(item, Outcome | StreamEnd):
            request = self._take(request_id)
            if request is not None and isinstance(item, StreamEnd):
                self.counters.served += 1
        else:
            with self._lock:
                request = self._pending.get(request_id)
        if request is not None and isinstance(request.reply, bridge.StreamReply):
            bridge.push(request.reply, item)

    def _dropped(self, request_id: int, reason: DropReason) -> None:
        if self._take(request_id) is not None:
            self._count_drop(reason)

    def _count_drop(self, reason: DropReason) -> None:
        with self._lock:  # counted by the sender and the receiver thread
            if reason is DropReason.TIMED_OUT:
                self.counters.dropped_timed_out += 1
            else:
                self.counters.dropped_cancelled += 1


def credits_for(max_batch_size: int, workers: int, enable_async: bool) -> int:
    """How many requests a child may hold: what its workers can run at once, no more.

    That is one full batch per worker thread (an async worker runs many batches at once). Everything
    else waits in the server's queue, where queue depth, max_queue_size, deadlines and hang-ups
    behave exactly as in thread mode. The price is a short gap between batches while an answer
    travels back and the next request travels over.
    """
    batches = ASYNC_MAX_BATCHES_IN_FLIGHT if enable_async else 1
    return max_batch_size * workers * batches
