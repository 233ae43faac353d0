"""One worker process's lifecycle: spawn, handshake, serve, restart when it dies, stop.

A `ProcessWorker` stands for one worker process (one device of one endpoint, with `workers_per_device`
threads inside). Its thread, `litserve-proxy-<device>-<n>`, starts the process, sends it the LitAPI and
waits for its `setup()` on the still-blocking socket, then hands the socket to the server's event loop
as a `Channel`, where the in-flight book (`process.book`) exchanges requests and answers. When the
channel ends (the process exited, was killed, or stopped) the loop answers what the process held and
wakes the thread, which reaps the process and starts it again unless the server is stopping.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable
from typing import Any, final

from litserve.engine.bridge import LoopHandle
from litserve.engine.messages import InferenceRequest, Outcome
from litserve.engine.request_queue import RequestQueue
from litserve.exceptions import SHUTTING_DOWN, WORKER_PROCESS_DIED
from litserve.hooks import HookPlan
from litserve.loggers import LogSink
from litserve.process.book import InFlightBook
from litserve.process.channel import Channel
from litserve.process.devices import DEVICE_FAILED_EXIT_CODE, child_environment
from litserve.process.messages import ChildInit, FromChild, Ready, SetupFailed, ToChild, decode, encode
from litserve.process.wire import RECV_SIZE, BadFrame, FrameReader, LinkClosedError, send_all
from litserve.status import ErrorLog, WorkerCounters, WorkerState

__all__ = ["ChildState", "ProcessWorker", "RemoteError"]

logger = logging.getLogger(__name__)

_PROCESS_DIED = Outcome.failure(WORKER_PROCESS_DIED)
_SHUTTING_DOWN = Outcome.failure(SHUTTING_DOWN)
_HEALTH_TIMEOUT_S = 5.0  # a worker process that cannot say it is healthy within this is not
_REAP_TIMEOUT_S = 10.0  # a process whose socket ended but that does not exit within this is killed
_KILL_WAIT_S = 5.0


class RemoteError(Exception):
    """An exception raised in a worker process; its message carries the process's traceback."""


class ChildState(enum.Enum):
    """Lifecycle of a ProcessWorker."""

    CREATED = "created"  # start() not called yet
    STARTING = "starting"  # spawning the process and waiting for its setup() (again, after a death)
    SERVING = "serving"  # its channel is open on the loop
    STOPPING = "stopping"  # join() was called: no restart; the process finishes what it holds
    STOPPED = "stopped"  # the thread ended after a stop (or a death without restart)
    FAILED = "failed"  # setup() failed, or the process could not be started again


@final
class ProcessWorker:
    """A worker process serving one endpoint on one device, with `len(worker_names)` threads inside."""

    def __init__(
        self,
        name: str,
        init: ChildInit,
        source: RequestQueue[InferenceRequest],
        errors: ErrorLog,
        plan: HookPlan,
        credits: int,
        capacity: int,
        restart: bool,
        log: LogSink | None = None,
    ) -> None:
        self.name = name
        self.device = init.device
        self.counters = WorkerCounters()
        self.restarts = 0
        self.state = ChildState.CREATED
        self._init = init
        self._errors = errors
        self._restart = restart
        self.book = InFlightBook(name, source, plan, credits, self.counters, errors, log, capacity)
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._gone = threading.Event()  # the current process's channel ended
        # Set once, by join() or when the loop ends: decides "no restart" and 503 rather than 500, so no
        # later state change (the loop opening a channel, a process dying) can undo a stop.
        self._stopping = threading.Event()
        self._state_lock = threading.Lock()
        self._loop: LoopHandle | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: Channel | None = None
        self._thread = threading.Thread(target=self._supervise, name=name, daemon=True)

    # --- the WorkerHandle surface ------------------------------------------------------------------------

    @property
    def ready(self) -> concurrent.futures.Future[None]:
        return self._ready

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None else process.pid

    def start(self, loop: LoopHandle) -> None:
        self._loop = loop
        self.state = ChildState.STARTING
        self._thread.start()

    def offer(self) -> None:
        """Requests are waiting: send what the process has room for (from any thread)."""
        loop = self._loop
        if loop is not None:
            loop.call(self.book.pump)

    def is_healthy(self) -> bool | Awaitable[bool]:
        """Serving, and the LitAPI's own `health()` agrees in the process (asked over the socket)."""
        if self.state is not ChildState.SERVING:
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()  # the caller's loop
        token = self.book.ask_health(future)
        if token is None:
            return False
        return self._health_verdict(token, future)

    async def _health_verdict(self, token: int, future: asyncio.Future[bool]) -> bool:
        try:
            return await asyncio.wait_for(future, _HEALTH_TIMEOUT_S)
        except asyncio.TimeoutError:  # not TimeoutError: they differ before Python 3.11
            return False
        finally:
            self.book.forget_health(token)

    def join(self, timeout_s: float | None) -> bool:
        """Stop: the process gets what is still queued, then `Stop`; it finishes what it holds and exits.

        Past `timeout_s` it is killed, and what it held is answered 503. True once the thread ended.
        """
        if self._thread.ident is None:
            return True
        deadline_s = time.monotonic() + (timeout_s if timeout_s is not None else 3600.0)
        self._stopping.set()
        self._set_state(ChildState.STOPPING, self.counters.state)
        loop = self._loop
        if loop is None or not loop.call(self.book.stop, deadline_s):
            self._end_without_loop()
        self._thread.join(max(0.0, deadline_s - time.monotonic()))
        if self._thread.is_alive():  # past the deadline: what the process still holds is answered 503
            self._kill()
            if loop is None or not loop.call(self._close_channel):
                self._end_without_loop()
            self._thread.join(_KILL_WAIT_S)
        return not self._thread.is_alive()

    # --- the thread --------------------------------------------------------------------------------------

    def loop_ended(self) -> bool:
        """On the HTTP loop's thread as it ends: a process still served (the loop died) ends for good."""
        if self._thread.is_alive():
            self._stopping.set()
            self._set_state(ChildState.STOPPING, self.counters.state)
            self._kill()
            self._close_channel()  # answers what it held (503) and wakes the thread, which reaps it
        return True

    def _supervise(self) -> None:
        first = True
        while first or not self._stopping.is_set():
            try:
                sock, frames, early = self._spawn_and_handshake()
            except BaseException as exc:
                self._could_not_start(exc, first)
                return
            self._gone.clear()
            if not self._serve_on_loop(sock, frames, early, first):
                self._could_not_start(RuntimeError("the server's event loop ended before it could serve"), first)
                return
            first = False
            self._gone.wait()
            returncode = self._reap()
            if self._stopping.is_set():
                break
            self._died(returncode)
            if not self._restart:
                self._set_state(ChildState.FAILED, WorkerState.FAILED)
                return
        self._set_state(ChildState.STOPPED, WorkerState.STOPPED)

    def _set_state(self, state: ChildState, worker_state: WorkerState) -> None:
        with self._state_lock:
            if self._stopping.is_set() and state in (ChildState.STARTING, ChildState.SERVING):
                state = ChildState.STOPPING  # a stop, once asked for, is never undone
            self.state, self.counters.state = state, worker_state

    def _serve_on_loop(self, sock: socket.socket, frames: FrameReader, early: list[Any], first: bool) -> bool:
        """Hand the socket to the loop; False (the process killed) when the loop has ended."""
        loop = self._loop
        assert loop is not None
        if loop.call(self._open, sock, frames, early, first):
            return True
        sock.close()
        self._kill()
        self._reap()
        return False

    def _spawn_and_handshake(self) -> tuple[socket.socket, FrameReader, list[Any]]:
        """Start a process and wait for its setup(); the socket, its reader and what came after `Ready`."""
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "litserve.process.child", str(child_end.fileno())],
                pass_fds=[child_end.fileno()],
                stdin=subprocess.DEVNULL,
                env=child_environment(self._init.device, os.environ),  # only its own GPU
            )
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        try:
            send_all(parent_end, encode(self._init))
            frames = FrameReader()
            first, *early = _first_messages(parent_end, frames)
            _check_handshake(decode(first))
        except BaseException:
            parent_end.close()
            self._reap()
            raise
        return parent_end, frames, early

    def _open(self, sock: socket.socket, frames: FrameReader, early: list[Any], first: bool) -> None:
        # On the loop: the process finished setup(); serve it here from now on.
        loop = self._loop
        assert loop is not None
        channel = Channel(sock, frames, loop, self.book.receive, self._channel_closed)
        self._channel = channel
        channel.open()
        self._set_state(ChildState.SERVING, WorkerState.IDLE)
        if first:
            self._ready.set_result(None)
        self.book.attach(channel, loop)
        for wire_form in early:  # read together with `Ready`
            self.book.receive(decode(wire_form))

    def _close_channel(self) -> None:
        # On the loop.
        if self._channel is not None:
            self._channel.close()

    def _channel_closed(self) -> None:
        # On the loop (or after it ended): answer what the process held, then wake the thread.
        self._channel = None
        stopping = self._stopping.is_set()
        if not stopping:
            self._set_state(ChildState.STARTING, WorkerState.STARTING)
        # What it held but cannot have started waits for the restarted process; without a restart, nothing
        # would ever take it: it fails too, as a dead worker's requests do.
        keep_unstarted = self._restart and not stopping
        lost = self.book.fail_all(_SHUTTING_DOWN if stopping else _PROCESS_DIED, keep_unstarted=keep_unstarted)
        if lost:
            logger.error("worker process %s ended holding %d requests", self.name, lost)
        self._gone.set()

    def _end_without_loop(self) -> None:
        # The loop has ended (or never ran): nothing else touches the channel or the book now.
        channel = self._channel
        self._kill()
        if channel is not None:
            channel.close()
        else:
            self._channel_closed()

    def _reap(self) -> int | None:
        process = self._process
        if process is None:
            return None
        try:
            return process.wait(_REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._kill()
            try:
                return process.wait(_KILL_WAIT_S)
            except subprocess.TimeoutExpired:  # stuck in the kernel (a GPU driver): it is the OS's now
                logger.error("worker process %s (pid %d) did not die when killed", self.name, process.pid)
                return None

    def _kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def _could_not_start(self, exc: BaseException, first: bool) -> None:
        self._set_state(ChildState.FAILED, WorkerState.FAILED)
        if first:
            self._ready.set_exception(exc)
        else:
            self._errors.record(self.name, exc)
            logger.error("worker process %s could not be restarted: %s", self.name, exc)

    def _died(self, returncode: int | None) -> None:
        why = " after a sticky CUDA error broke its device" if returncode == DEVICE_FAILED_EXIT_CODE else ""
        error = RemoteError(f"worker process {self.name} exited with code {returncode}{why}")
        self._errors.record(self.name, error)
        logger.error("%s%s", error, "; starting it again" if self._restart else "")
        if self._restart:
            self.restarts += 1


def _first_messages(sock: socket.socket, frames: FrameReader) -> list[Any]:
    """Block for the process's first message (the socket still blocks during the handshake), and
    return it with whatever else the same reads completed."""
    while True:
        try:
            data = sock.recv(RECV_SIZE)
        except OSError as exc:
            raise LinkClosedError("the worker process is gone") from exc
        if not data:
            raise LinkClosedError("the worker process exited during setup")
        messages: list[Any] = frames.feed(data)
        if messages:
            return messages


def _check_handshake(message: ToChild | FromChild | BadFrame) -> None:
    """Return on `Ready`; raise setup()'s own exception (or a RemoteError) on `SetupFailed`."""
    match message:
        case Ready():
            return
        case SetupFailed(summary, text, original):
            error = RemoteError(f"{summary}\n\nin the worker process:\n{text}")
            if original is None:
                raise error
            import cloudpickle

            # The user's own exception, so `except ValueError` around start() works in both modes.
            raise cloudpickle.loads(original) from error
    raise RemoteError(f"unexpected first message from a worker process: {message!r}")
