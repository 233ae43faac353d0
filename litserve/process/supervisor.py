"""Process mode: one worker process per device, driven from the server process.

The HTTP thread, the request queues, deadlines, disconnects and the status stay in the server
process. Requests cross to a child, and answers come back, on the server's event loop itself, with
no thread in between:

- when a request is queued (`RequestQueue.on_put`) or an answer frees room in a child, `pump` takes
  requests from the endpoint's queue while the child has room (`credits`: as many as its workers can
  batch at once) and writes each one to the child's socket, once, without blocking: what the socket
  cannot take now waits in a buffer that the loop flushes when it can;
- the loop reads the child's socket when it is readable and hands each answer to its request at
  once; end of stream means the child died: its requests get 500.

One thread per child, `litserve-proxy-<device>-<n>`, starts the child and waits for its `setup()`,
attaches its socket to the loop, and starts it again when it dies (setup() runs again; /health says
"not ready" until it is back). Before the event loop runs and after it ended (while stopping), that
thread does the socket I/O itself, with select(). Nothing ever blocks on the socket while holding the
worker's lock, and a write that fails (the child died) puts its request back at the head of the queue.

Batches are formed in the child, from its own queue, by the same worker loop as thread mode.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import queue
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Sequence
from typing import Any, final

from litserve.engine import bridge
from litserve.engine.messages import DropReason, InferenceRequest, Outcome, StreamEnd, StreamItem
from litserve.engine.request_queue import RequestQueue
from litserve.engine.worker import ASYNC_MAX_BATCHES_IN_FLIGHT
from litserve.exceptions import SHUTTING_DOWN, ErrorResponse
from litserve.hooks import HookPlan
from litserve.runtime.child import ChildInit
from litserve.runtime.ipc import (
    MAX_PIECES,
    RECV_SIZE,
    BadFrame,
    FrameReader,
    LinkClosedError,
    encode,
    send_all,
    unsent_part,
)
from litserve.status import ErrorLog, ErrorRecord, WorkerCounters, WorkerState

__all__ = ["Dispatch", "ProcessWorker", "RemoteError", "credits_for"]

logger = logging.getLogger(__name__)

_PROCESS_DIED = Outcome.failure(ErrorResponse(500, "Internal server error"))
_SHUTTING_DOWN = Outcome.failure(SHUTTING_DOWN)
_HEALTH_TIMEOUT_S = 5.0  # a worker process that cannot say it is healthy within this is not
_DETACH_WAIT_S = 5.0  # stop() waiting for a still-running loop to let go of a child's socket


class RemoteError(Exception):
    """An exception raised in a worker process; its message carries the child's traceback."""


@final
class ProcessWorker:
    """A worker process serving one endpoint on one device, with `len(worker_names)` threads inside.

    Its state is guarded by one lock, so any thread may queue, cancel or pump; socket reads happen on
    the event loop once `use_loop` gave it one, and on the supervisor thread otherwise.
    """

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
        self._lock = threading.Lock()
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._wake = threading.Event()  # the supervisor has something to look at
        self._ids = itertools.count(1)  # request ids and health tokens; 0 tags no request
        # Guarded by _lock:
        self._free = credits  # how many more requests the child may hold
        self._pending: dict[int, InferenceRequest] = {}
        self._answered_at_s = 0.0
        self._health_checks: dict[int, bridge.Reply[bool]] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._frames = FrameReader()
        self._live = False  # the child finished setup() and its socket is open
        self._stopping = False
        self._stop_sent = False
        self._stop_deadline_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._loop_done = False  # the loop ended (or stop() took the socket back): never attach again
        self._attached = False  # the loop reads and writes the socket
        self._unsent = bytearray()  # what the non-blocking socket did not take yet (attached only)
        self._let_go = threading.Event()  # set once the loop has handed the socket back
        self._broken = False  # a write failed: the child is dying; send nothing more to it
        # Wakes the supervisor out of its selector while it serves the socket itself (made by start()).
        self._poke_lock = threading.Lock()
        self._poke_in: socket.socket | None = None
        self._poke_out: socket.socket | None = None
        self._supervisor = threading.Thread(target=self._supervise, name=name, daemon=True)

    # --- the WorkerHandle surface (what pool, status and /health read) -----------------------------------

    @property
    def ready(self) -> concurrent.futures.Future[None]:
        return self._ready

    @property
    def held(self) -> int:
        """How many requests the child holds now."""
        return len(self._pending)

    @property
    def answered_at_s(self) -> float:
        """When (monotonic) the child last gave a request back; 0.0 before its first."""
        return self._answered_at_s

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None else process.pid

    def is_healthy(self) -> bool | Awaitable[bool]:
        """Serving, and the LitAPI's own `health()` agrees in the child (asked over the socket)."""
        if self.counters.state not in (WorkerState.IDLE, WorkerState.BUSY):
            return False
        loop = asyncio.get_running_loop()  # called by the /health route, on the HTTP loop
        future: asyncio.Future[bool] = loop.create_future()
        token = next(self._ids)
        with self._lock:
            self._health_checks[token] = bridge.Reply(loop, future)
            sent = self._write(encode(("health", token)))
        if not sent:
            with self._lock:
                self._health_checks.pop(token, None)
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
        self._poke_in, self._poke_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._poke_in.setblocking(False)
        self._supervisor.start()

    def join(self, timeout_s: float | None) -> bool:
        """Stop: send what is still queued, then "stop"; the child finishes what it has and exits."""
        deadline_s = time.monotonic() + (timeout_s if timeout_s is not None else 3600.0)
        with self._lock:
            self._stopping = True
            self._stop_deadline_s = deadline_s
            loop, attached = self._loop, self._attached
        if attached and loop is not None:
            if bridge.call_in_loop(loop, self._detach):
                # The loop still runs (its thread did not end in time): it lets go of the socket first.
                self._let_go.wait(min(_DETACH_WAIT_S, max(0.0, deadline_s - time.monotonic())))
            else:  # the loop is closed without having let go (its exit hook failed): nothing reads there
                self._detach()
        self._nudge()
        self.pump()
        if self._supervisor.ident is not None:
            self._supervisor.join(max(0.0, deadline_s - time.monotonic()))
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:  # stuck in the kernel (a GPU driver): it is the OS's now
                logger.error("worker process %s (pid %d) did not die when killed", self.name, process.pid)
            self._supervisor.join(5)
        if self._supervisor.is_alive():
            return False
        with self._poke_lock:
            for end in (self._poke_in, self._poke_out):
                if end is not None:
                    end.close()
            self._poke_in = self._poke_out = None
        return True

    def _nudge(self) -> None:
        """Wake the supervisor, whether it waits for an event or serves the socket itself."""
        self._wake.set()
        with self._poke_lock:
            if self._poke_in is not None:
                try:
                    self._poke_in.send(b"\0")
                except OSError:  # full: it has a wake-up to read already
                    pass

    # --- the event loop ----------------------------------------------------------------------------------

    def use_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The server's event loop runs: from now on it does this child's socket I/O."""
        with self._lock:
            self._loop = loop
        self._nudge()

    def leave_loop(self) -> None:
        """Called on the loop's thread as it ends: hand the socket back to the supervisor thread."""
        self._detach()

    def _can_attach(self) -> bool:
        # With the lock held.
        return self._loop is not None and not self._loop_done and not self._stopping

    def _attach(self) -> None:
        # On the loop, asked by the supervisor once the child is ready.
        with self._lock:
            loop, sock = self._loop, self._sock
            if self._attached or not self._can_attach() or not self._live or loop is None or sock is None:
                self._wake.set()  # declined: the supervisor looks again
                return
            self._loop_thread = threading.get_ident()
            loop.add_reader(sock.fileno(), self._on_readable)
            if self._unsent:
                loop.add_writer(sock.fileno(), self._on_writable)
            self._attached = True
        self.pump()

    def _detach(self) -> None:
        # On the loop: stop reading and writing here; the supervisor takes over the socket (and what
        # waits unsent), without blocking this thread.
        with self._lock:
            self._loop_done = True
            if self._attached:
                self._unregister()
        self._let_go.set()
        self._nudge()

    def _unregister(self) -> None:
        # With the lock held, on the loop.
        loop, sock = self._loop, self._sock
        self._attached = False
        if loop is not None and sock is not None and not loop.is_closed():
            loop.remove_reader(sock.fileno())
            loop.remove_writer(sock.fileno())

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        data = _receive(sock)
        if data is None:
            return
        if not data:  # the child died (or closed its end)
            with self._lock:
                if self._attached:
                    self._unregister()
                self._live = False
            self._nudge()
            return
        for message in self._frames.feed(data):
            self._handle(message, on_loop=True)
        self.pump()

    def _on_writable(self) -> None:
        with self._lock:
            sock, loop = self._sock, self._loop
            if not self._attached or sock is None or loop is None:
                return
            self._flush()
            if not self._unsent:
                loop.remove_writer(sock.fileno())

    def _ensure_writer(self) -> None:
        with self._lock:
            if self._attached and self._unsent and self._loop is not None and self._sock is not None:
                self._loop.add_writer(self._sock.fileno(), self._on_writable)

    def _on_loop(self) -> bool:
        """With the lock held: is this the loop's thread, and does the loop own the socket?"""
        return self._attached and threading.get_ident() == self._loop_thread

    def _write(self, pieces: list[bytes | memoryview]) -> bool:
        """With the lock held: write one frame now, or queue what the socket cannot take yet.

        Never blocks. False when there is no child to take it: none is serving, or a write just
        failed (the child died; its end of stream is seen next and the supervisor restarts it).
        """
        sock = self._sock
        if sock is None or not self._live or self._broken:
            return False
        rest: list[bytes | memoryview] = pieces
        if not self._unsent:  # otherwise keep frames in order behind what waits already
            try:
                sent = sock.sendmsg(pieces[:MAX_PIECES])
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._break(sock)
                return False
            rest = unsent_part(pieces, sent)
        if rest:
            for piece in rest:
                self._unsent += piece
            if self._attached and self._loop is not None:
                if self._on_loop():
                    self._loop.add_writer(sock.fileno(), self._on_writable)
                else:
                    bridge.call_in_loop(self._loop, self._ensure_writer)
            else:
                self._nudge()
        return True

    def _flush(self) -> None:
        # With the lock held: write what waits unsent, as far as the socket takes it now.
        sock = self._sock
        if sock is None or not self._unsent:
            return
        try:
            sent = sock.send(self._unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._break(sock)
            self._unsent.clear()
            return
        del self._unsent[:sent]

    def _break(self, sock: socket.socket) -> None:
        # With the lock held: a write failed. Send nothing more, and make sure the reader sees the end
        # of the stream (even if the error was not the child dying), so the child is started again.
        self._broken = True
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # --- the child ---------------------------------------------------------------------------------------

    def _supervise(self) -> None:
        first = True
        try:
            while True:
                with self._lock:
                    if self._stopping and not first:
                        break  # no restart while stopping
                try:
                    self._spawn()
                    self._handshake()
                except BaseException as exc:
                    self._end_child()
                    self.counters.state = WorkerState.FAILED
                    if first:
                        self._ready.set_exception(exc)
                    else:
                        self._errors.record(self.name, exc)
                        logger.error("worker process %s could not be restarted: %s", self.name, exc)
                    self._fail_pending(_SHUTTING_DOWN if self._stopping else _PROCESS_DIED)
                    return
                self.counters.state = WorkerState.IDLE
                with self._lock:
                    self._live = True
                if first:
                    first = False
                    self._ready.set_result(None)
                try:
                    self._serve_child()
                except Exception as exc:  # a bug of ours: end this child as if it died, and go on
                    self._errors.record(self.name, exc)
                    logger.error("serving worker process %s failed", self.name, exc_info=exc)
                    with self._lock:
                        self._live = False
                exited = self._end_child()
                with self._lock:
                    stopping = self._stopping
                if stopping:  # anything still unanswered was cut off by the stop (the child was killed)
                    self._fail_pending(_SHUTTING_DOWN)
                    break
                self._child_died(exited)
                if not self._restart:
                    return
            if self.counters.state is not WorkerState.FAILED:
                self.counters.state = WorkerState.STOPPED
        finally:
            self._wake.set()

    def _spawn(self) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "litserve.runtime.child", str(child_end.fileno())],
                pass_fds=[child_end.fileno()],
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        with self._lock:
            self._process = process
            self._sock = parent_end
            self._frames = FrameReader()
            self._unsent = bytearray()
            self._broken = False
            self._stop_sent = False
        send_all(parent_end, encode(self._init))

    def _recv(self, inbox: list[Any]) -> Any:
        """Blocking read of the next message (supervisor thread, while no loop reads the socket)."""
        sock = self._sock
        while not inbox:
            if sock is None:
                raise LinkClosedError("no worker process")
            try:
                data = sock.recv(RECV_SIZE)
            except OSError as exc:
                raise LinkClosedError("the worker process is gone") from exc
            if not data:
                raise LinkClosedError("the worker process is gone")
            inbox.extend(self._frames.feed(data))
        return inbox.pop(0)

    def _handshake(self) -> None:
        inbox: list[Any] = []
        message = self._recv(inbox)
        if message[0] == "setup_failed":
            _, summary, text, original = message
            error = RemoteError(f"{summary}\n\nin the worker process:\n{text}")
            if original is None:
                raise error
            import cloudpickle

            # The user's own exception, so `except ValueError` around start() works in both modes.
            raise cloudpickle.loads(original) from error
        assert message[0] == "ready", f"unexpected first message from a worker process: {message[0]}"
        sock = self._sock
        assert sock is not None
        sock.setblocking(False)  # from now on nobody blocks on it: the loop or _serve_here waits for it

    def _serve_child(self) -> None:
        """Until the child is gone or has stopped: let the loop do its I/O, or do it here."""
        while True:
            self._wake.clear()
            with self._lock:
                if not self._live:
                    return
                attached = self._attached
                loop = self._loop if self._can_attach() else None
            if attached:
                self._wake.wait()
            elif loop is not None:
                if not bridge.call_in_loop(loop, self._attach):
                    with self._lock:
                        self._loop_done = True
                    continue
                self._wake.wait()  # attached (until the child dies or the loop ends), or declined
            elif self._serve_here():
                return

    def _serve_here(self) -> bool:
        """Do the child's socket I/O on this thread: before the loop runs, after it ended, while stopping.

        Returns True when the child is done (it stopped or died), False when the loop can take over.
        """
        self.pump()
        with self._lock:
            sock = self._sock
        poke = self._poke_out
        if sock is None or poke is None:
            return True
        with selectors.DefaultSelector() as selector:  # epoll: no limit on fd numbers, unlike select()
            selector.register(sock, selectors.EVENT_READ)
            selector.register(poke, selectors.EVENT_READ)
            return self._serve_with(selector, sock, poke)

    def _serve_with(self, selector: selectors.BaseSelector, sock: socket.socket, poke: socket.socket) -> bool:
        while True:
            with self._lock:
                if self._sock is not sock or not self._live:
                    return True
                if self._can_attach():
                    return False
                wants_out = bool(self._unsent) and not self._broken
            selector.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if wants_out else 0))
            events = {key.fileobj: mask for key, mask in selector.select()}
            readable = [f for f, mask in events.items() if mask & selectors.EVENT_READ]
            writable = [f for f, mask in events.items() if mask & selectors.EVENT_WRITE]
            if poke in readable:
                try:
                    poke.recv(4096)
                except OSError:
                    pass
            if writable:
                with self._lock:
                    self._flush()
            if sock not in readable:
                continue
            data = _receive(sock)
            if data is None:
                continue
            for message in self._frames.feed(data) if data else ():
                if not isinstance(message, BadFrame) and message[0] == "stopped":
                    data = b""
                    break
                self._handle(message, on_loop=False)
            if not data:
                with self._lock:
                    self._live = False
                return True
            self.pump()

    def _end_child(self) -> int | None:
        with self._lock:
            sock, process = self._sock, self._process
            self._sock = None
            self._live = False
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if process is None:
            return None
        try:
            return process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            try:
                return process.wait(5)
            except subprocess.TimeoutExpired:
                logger.error("worker process %s (pid %d) did not die when killed", self.name, process.pid)
                return None

    def _fail_pending(self, outcome: Outcome) -> int:
        """Answer every request the child had and did not answer; gives each one's credit back."""
        with self._lock:
            lost = list(self._pending)
        for request_id in lost:
            self._answer(request_id, outcome, on_loop=False)
        return len(lost)

    def _child_died(self, returncode: int | None) -> None:
        self.counters.state = WorkerState.STARTING
        lost = self._fail_pending(_PROCESS_DIED)
        error = RemoteError(f"worker process {self.name} exited with code {returncode}; {lost} requests failed")
        self._errors.record(self.name, error)
        logger.error("%s%s", error, "; starting it again" if self._restart else "")
        if not self._restart:
            self.counters.state = WorkerState.FAILED
            return
        self.restarts += 1

    # --- requests in and answers out ---------------------------------------------------------------------

    def pump(self) -> None:
        """Send queued requests while the child has room; after the last one when stopping, "stop"."""
        if self._pump():  # a request went back to the queue: offer it to the other worker processes
            on_put = self._source.on_put
            if on_put is not None:
                on_put()

    def _pump(self) -> bool:
        """pump() under the lock; True if a request had to go back to the queue."""
        source = self._source
        with self._lock:
            while self._free > 0 and self._live and not self._broken:
                try:
                    request = source.get_nowait()
                except queue.Empty:
                    return False
                if request is None:  # closed and empty: we are stopping
                    if self._stopping and not self._stop_sent:
                        remaining_s = max(0.0, self._stop_deadline_s - time.monotonic())
                        self._stop_sent = self._write(encode(("stop", remaining_s)))
                    return False
                now_s = time.monotonic()
                reason = request.drop_reason(now_s)
                if reason is not None:
                    self._count_drop(reason)
                    continue
                if not self._send(request, now_s):
                    return True
            return False

    def _send(self, request: InferenceRequest, handed_s: float) -> bool:
        # With the lock held. False when the request went back to the queue. `handed_s`: now, as the
        # server hands the request over; pickling, a buffered write and the child's read all count
        # toward its batch window (see engine.batcher).
        request_id = next(self._ids)
        payload, model_data = request.payload, None
        body_model = self._plan.body_model
        try:
            if body_model is not None and isinstance(payload, body_model):
                # The model class may live only in the user's notebook: send its JSON form (by alias, as
                # it came in), and the child validates it again with its own copy of the class.
                model_data = payload.model_dump(mode="json", by_alias=True, round_trip=True)
                payload = None
            message = ("request", request_id, payload, request.deadline_s, request.context, model_data, handed_s)
            pieces = encode(message, tag=request_id)
        except Exception as exc:  # the payload cannot be pickled: fail this request, keep serving
            self._errors.record(self.name, exc)
            logger.error("could not send a request to %s", self.name, exc_info=exc)
            self._finish(request, _PROCESS_DIED, on_loop=self._on_loop())
            return True
        if not self._write(pieces):
            # The child just died: the request waits for the next worker that can take it (this one
            # once restarted). Its cancellation listener was never set, so a cancel reaches nobody.
            self._source.put_back(request)
            return False
        self._pending[request_id] = request
        self._free -= 1
        self.counters.state = WorkerState.BUSY
        cancellation = request.cancellation
        cancellation.listener = lambda reason: self._cancel(request_id, reason)
        if cancellation.reason is not None:  # cancelled while being sent
            self._write(encode(("cancel", request_id, cancellation.reason)))
        return True

    def _cancel(self, request_id: int, reason: DropReason) -> None:
        # When a client leaves or a deadline passes (on the loop, or a `predict()` caller's thread).
        with self._lock:
            if request_id in self._pending:
                self._write(encode(("cancel", request_id, reason)))

    def _handle(self, message: Any, on_loop: bool) -> None:
        if isinstance(message, BadFrame):  # its request, if any, ends at its deadline
            self._errors.record(self.name, message.error)
            logger.error("could not read a message from worker process %s: %s", self.pid, message.error)
            return
        kind = message[0]
        if kind == "results":
            for request_id, outcome in message[1]:
                self._answer(request_id, outcome, on_loop)
        elif kind == "result":
            self._answer(message[1], message[2], on_loop)
        elif kind == "chunk":
            self._chunk(message[1], message[2], on_loop)
        elif kind == "dropped":
            if self._take(message[1]) is not None:
                with self._lock:
                    self._count_drop(message[2])
        elif kind == "error":
            record: ErrorRecord = message[1]
            where = f"{self.name}/{record.where}"
            self._errors.keep(ErrorRecord(where, record.summary, record.traceback, record.at_s))
            logger.error("%s raised in worker process %s:\n%s", where, self.pid, record.traceback)
        elif kind == "health":
            with self._lock:
                waiting = self._health_checks.get(message[1])
            if waiting is not None:
                if on_loop:
                    bridge.deliver_here(waiting, bool(message[2]))
                else:
                    bridge.deliver(waiting, bool(message[2]))

    def _take(self, request_id: int) -> InferenceRequest | None:
        with self._lock:
            request = self._pending.pop(request_id, None)
            if request is not None:
                self._free += 1
                self._answered_at_s = time.monotonic()
                if not self._pending and self._live:
                    self.counters.state = WorkerState.IDLE
        return request

    def _answer(self, request_id: int, outcome: Outcome, on_loop: bool) -> None:
        request = self._take(request_id)
        if request is not None:
            self._finish(request, outcome, on_loop)

    def _finish(self, request: InferenceRequest, outcome: Outcome, on_loop: bool) -> None:
        if outcome.status < 400:
            self.counters.served += 1
        elif outcome.status >= 500:
            self.counters.errors += 1
        reply = request.reply
        if isinstance(reply, bridge.StreamReply):
            if on_loop:
                bridge.push_here(reply, outcome)
            else:
                bridge.push(reply, outcome)
        elif on_loop:
            bridge.deliver_here(reply, outcome)
        else:
            bridge.deliver(reply, outcome)

    def _chunk(self, request_id: int, item: StreamItem, on_loop: bool) -> None:
        if isinstance(item, Outcome | StreamEnd):
            request = self._take(request_id)
            if request is not None and isinstance(item, StreamEnd):
                self.counters.served += 1
        else:
            with self._lock:
                request = self._pending.get(request_id)
        if request is not None and isinstance(request.reply, bridge.StreamReply):
            if on_loop:
                bridge.push_here(request.reply, item)
            else:
                bridge.push(request.reply, item)

    def _count_drop(self, reason: DropReason) -> None:
        # With the lock held.
        if reason is DropReason.TIMED_OUT:
            self.counters.dropped_timed_out += 1
        else:
            self.counters.dropped_cancelled += 1


@final
class Dispatch:
    """An endpoint queue's `on_put` in process mode: offer the new request to the worker processes.

    The one holding the fewest requests goes first, so load spreads over the devices; between equals,
    the one that answered last, so at low load one process takes request after request with its model
    still in cache instead of the processes taking turns (turns cost the MLP benchmark's heavy model
    0.18 ms per request: two copies of its weights do not fit in this machine's cache together).
    """

    def __init__(self, workers: Sequence[ProcessWorker]) -> None:
        self._workers = tuple(workers)

    def __call__(self) -> None:
        for worker in sorted(self._workers, key=_preference):
            worker.pump()


def _preference(worker: ProcessWorker) -> tuple[int, float]:
    # A hint read without the worker's lock: a stale value only changes which process goes first.
    return worker.held, -worker.answered_at_s


def credits_for(max_batch_size: int, workers: int, enable_async: bool) -> int:
    """How many requests a child may hold: what its workers can run at once, no more.

    That is one full batch per worker thread (an async worker runs many batches at once). Everything
    else waits in the server's queue, where queue depth, max_queue_size, deadlines and hang-ups
    behave exactly as in thread mode. The price is a short gap between batches while an answer
    travels back and the next request travels over.
    """
    batches = ASYNC_MAX_BATCHES_IN_FLIGHT if enable_async else 1
    return max_batch_size * workers * batches


def _receive(sock: socket.socket) -> bytes | None:
    """What a non-blocking socket has: None if nothing yet, b"" at its end (or when it failed)."""
    try:
        return sock.recv(RECV_SIZE)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
