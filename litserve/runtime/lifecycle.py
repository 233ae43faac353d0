"""A server's state machine: CREATED -> STARTING -> RUNNING -> STOPPING -> STOPPED (or FAILED).

One lock guards the state and the running parts; `LitServer` asks this object whether it may start or
stop, and tells it what happened. Nothing here starts a thread or binds a socket.
"""

from __future__ import annotations

import threading
from typing import final

from litserve.exceptions import ServerStateError
from litserve.runtime.serving import Running
from litserve.status import ServerState

__all__ = ["Lifecycle"]


@final
class Lifecycle:
    """The state of one LitServer and the parts of its current run."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._state = ServerState.CREATED
        self._running: Running | None = None
        self.stopped = threading.Event()  # set when a run ended (or failed to start)

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
        (then this returns once that stop is done, waiting at most `wait_s`)."""
        with self._lock:
            state, running = self._state, self._running
            if state is ServerState.RUNNING:
                assert running is not None
                self._state = ServerState.STOPPING
                return running
        if state is ServerState.STOPPING:
            self.stopped.wait(wait_s)
        return None

    def ended(self) -> None:
        with self._lock:
            self._state = ServerState.STOPPED
        self.stopped.set()
