"""What exists only while a server runs, put together in dependency order and taken apart in reverse.

`launch` binds the port, builds the endpoints and their workers, starts the HTTP thread and then the
workers (worker processes do their socket I/O on its loop), and waits for every `setup()`. Launched
without an address, it binds nothing and the HTTP thread runs only its loop: the app is then served by
whoever calls it as an ASGI app (an in-process test client), and everything else is the same. Each step
pushes its undo onto an ExitStack, kept only once everything is up, so a failed start leaves nothing
running and raises the real error. `Running.shutdown` is the stop sequence.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import final

from quart import Quart

from litserve.api import LitAPI
from litserve.config import ServerSettings, read_api_key
from litserve.engine.pool import Endpoint, WorkerFactory, WorkerPool
from litserve.runtime.sockets import bind_listening_socket
from litserve.runtime.thread import HttpThread
from litserve.status import ErrorLog
from litserve.web.app import create_app
from litserve.web.auth import ApiKeyCheck
from litserve.web.context import Gate, WebContext

__all__ = ["Parts", "Running", "assemble", "launch"]

HTTP_START_TIMEOUT_S = 30.0
WORKER_JOIN_TIMEOUT_S = 5.0  # beyond the graceful timeout, for workers to leave once their queue closed


@final
@dataclass
class Running:
    """The parts of a running server; dropped as a whole at stop(). No host and port: served in-process."""

    host: str | None
    port: int | None
    endpoints: list[Endpoint]
    pool: WorkerPool
    http: HttpThread
    gate: Gate
    api_key: str | None
    app: Quart
    started_s: float = field(default_factory=time.monotonic)

    @property
    def where(self) -> str:
        """Where it serves, for messages: `http://host:port`, or that it has no socket."""
        return "in-process (no socket)" if self.port is None else f"http://{self.host}:{self.port}"

    def shutdown(self, grace_s: float) -> None:
        """Refuse new requests, close the listener, let the workers finish, then end the HTTP loop.

        The workers finish while the loop still runs: it carries their answers to the clients (and worker
        processes' messages). Every step runs even if an earlier one is interrupted (a second Ctrl+C).
        """
        try:
            self.gate.close()
            self.http.close_listener()
            self.pool.stop(grace_s + WORKER_JOIN_TIMEOUT_S)
        finally:
            self.http.stop(grace_s + WORKER_JOIN_TIMEOUT_S)


@final
@dataclass(frozen=True)
class Parts:
    """A server's endpoints, workers (not started) and web app, before any socket or thread exists."""

    endpoints: list[Endpoint]
    pool: WorkerPool
    gate: Gate
    app: Quart
    api_key: str | None


WebFactory = Callable[[list[Endpoint], Gate, ApiKeyCheck | None], WebContext]


def assemble(
    apis: Sequence[LitAPI], settings: ServerSettings, errors: ErrorLog, make_workers: WorkerFactory, web: WebFactory
) -> Parts:
    """Build what serves requests: endpoints, their workers and the app (tests drive it in-process)."""
    endpoints = [Endpoint(api, settings.max_queue_size) for api in apis]
    pool = WorkerPool(endpoints, settings.devices, settings.workers_per_device, errors, make_workers)
    gate = Gate()
    api_key = read_api_key(settings.api_key)
    app = create_app(web(endpoints, gate, None if api_key is None else ApiKeyCheck(api_key)))
    return Parts(endpoints, pool, gate, app, api_key)


def launch(
    address: tuple[str, int] | None,
    apis: Sequence[LitAPI],
    settings: ServerSettings,
    errors: ErrorLog,
    make_workers: WorkerFactory,
    web: WebFactory,
    on_assembled: Callable[[Running | None], None],
) -> Running:
    """Bring a server up on `address` (host, port), or in-process when None; `on_assembled` sees it before
    setup() runs (None if it failed)."""
    with contextlib.ExitStack() as undo:
        sock = None if address is None else bind_listening_socket(*address)
        if sock is not None:
            undo.callback(sock.close)
        parts = assemble(apis, settings, errors, make_workers, web)
        pool = parts.pool
        http = HttpThread(parts.app, sock, settings.graceful_timeout_s, pool.loop_ended)
        host, port = (None, None) if sock is None or address is None else (address[0], int(sock.getsockname()[1]))
        running = Running(host, port, parts.endpoints, pool, http, parts.gate, parts.api_key, parts.app)
        on_assembled(running)  # visible to status (and so /health) while setup() runs
        undo.callback(on_assembled, None)
        undo.callback(http.stop, settings.graceful_timeout_s + WORKER_JOIN_TIMEOUT_S)
        loop = http.start(HTTP_START_TIMEOUT_S)
        undo.callback(pool.stop, WORKER_JOIN_TIMEOUT_S)  # runs before http.stop: the loop carries answers
        pool.start(loop)
        pool.wait_ready()
        undo.pop_all()
    return running
