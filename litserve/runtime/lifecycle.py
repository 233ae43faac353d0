"""A server's state machine: CREATED -> STARTING -> RUNNING -> STOPPING -> STOPPED (or FAILED).

One lock guards the state and the running parts; `LitServer` asks this object whether it may start or
stop, and tells it what happened. Nothing here starts a thread or binds a socket.

A hot swap (`runtime.swap`) replaces the running parts while the state stays RUNNING. Swaps of one server
run one at a time (`swapping`). A stop() that begins during a swap aborts it (its new workers are stopped
and nothing is switched, or, once switched, the old version is no longer waited for) and then stops
whatever runs when the swap has ended.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import final

from litserve.exceptions import ServerStateError
from litserve.runtime.serving import Running
from litserve.status import ServerState

__all__ = ["Lifecycle", "SwapTicket"]


@final
@dataclass(frozen=True)
class SwapTicket:
    """A swap's right to replace `running`: `abort` fails (ServerStateError) when stop() begins meanwhile."""

    running: Running
    abort: concurrent.futures.Future[None]


@final
class Lifecycle:
    """The state of one LitServer and the parts of its current run."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._state = ServerState.CREATED
        self._running: Running | None = None
        self.stopped = threading.Event()  # set when a run ended (or failed to start)
        self._swap_lock = threading.RLock()  # held by a swap from start to end (reentrant: a hook may stop())
        self._abort: concurrent.futures.Future[None] | None = None  # the swap in progress's

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def running(self) -> Running | None:
        return self._running

    def snapshot(self) -> tuple[ServerState, Running | None]:
        """The state and the running parts, read together."""
        with self._lock:
            return self._state, self._running

    def serving(self, doing: str) -> Running:
        """The running parts; ServerStateError naming `doing` when not RUNNING."""
        state, running = self.snapshot()
        if running is None or state is not ServerState.RUNNING:
            raise ServerStateError(f"the server is {state.value}; call start() before {doing}")
        return running

    def begin_start(self, host: str | None, port: int | None, *, on_socket: bool = True) -> bool:
        """True when already running there; else move to STARTING (or say why it cannot start now)."""
        with self._lock:
            if self._state is ServerState.RUNNING:
                running = self._running
                assert running is not None
                if on_socket and running.port is None:
                    raise ServerStateError("this server runs in-process without a socket; call stop() before start()")
                if (port is not None and port not in (0, running.port)) or (host is not None and host != running.host):
                    raise ServerStateError(f"already running {running.where}; stop() it to start on {host}:{port}")
                return True
            if self._state in (ServerState.STARTING, ServerState.STOPPING):
                raise ServerStateError(f"the server is {self._state.value}; wait for it to finish first")
            self._state = ServerState.STARTING
            self.stopped.clear()
        return False

    def assembled(self, running: Running | None) -> None:
        """Parts exist (visible to status while setup() runs), or are gone again (None)."""
        with self._lock:
            self._running = running

    def started(self, running: Running) -> None:
        with self._lock:
            self._running = running
            self._state = ServerState.RUNNING

    def failed(self) -> None:
        with self._lock:
            self._state = ServerState.FAILED
            self.stopped.set()

    def begin_stop(self, wait_s: float) -> Running | None:
        """The run to shut down (now STOPPING), or None: not running, or another thread stopped it
        (then this returns once that stop is done, waiting at most `wait_s`).

        A swap in progress is aborted, and this returns once it has ended, with what runs then.
        """
        with self._lock:
            state = self._state
            if state is ServerState.RUNNING:
                self._state = ServerState.STOPPING
                if self._abort is not None and not self._abort.done():
                    self._abort.set_exception(ServerStateError("stop() was called during the swap"))
        if state is ServerState.RUNNING:
            with self._swap_lock:  # the swap, aborted, ends within its bounded steps
                return self._running  # None: a newer server took this one's socket over meanwhile
        if state is ServerState.STOPPING:
            self.stopped.wait(wait_s)
        return None

    @contextlib.contextmanager
    def swapping(self) -> Iterator[SwapTicket | None]:
        """Hold this server's swap (waiting for one in progress); the ticket is None unless it runs on a socket."""
        with self._swap_lock:
            with self._lock:
                running = self._running
                if self._state is not ServerState.RUNNING or running is None or running.switch is None:
                    ticket = None
                else:
                    ticket = SwapTicket(running, concurrent.futures.Future())
                    self._abort = ticket.abort
            try:
                yield ticket
            finally:
                with self._lock:
                    self._abort = None

    def replaced(self, running: Running) -> None:
        """A swap switched to `running` (the state stays what it is: RUNNING, or STOPPING if a stop began)."""
        with self._lock:
            self._running = running

    def handed_over(self) -> None:
        """A newer server took this one's socket and HTTP thread over (a hot swap): it is STOPPED, owns nothing."""
        with self._lock:
            self._running = None
            self._state = ServerState.STOPPED
        self.stopped.set()

    def ended(self) -> None:
        with self._lock:
            self._state = ServerState.STOPPED
        self.stopped.set()
