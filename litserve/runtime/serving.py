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
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, final

from quart import Quart

from litserve.api import LitAPI
from litserve.callbacks import WORKER_EVENTS, overrides
from litserve.config import ServerSettings, read_api_key
from litserve.engine.observe import NO_OBSERVERS, Observers
from litserve.engine.pool import Endpoint, WorkerFactory, WorkerPool
from litserve.engine.worker import thread_workers
from litserve.exceptions import ServerStateError
from litserve.extensions import Extensions, ShutdownKey
from litserve.inspector import RequestLog
from litserve.loggers import LogDrain
from litserve.runtime.sockets import bind_listening_socket, url_of
from litserve.runtime.switch import AppSwitch, Version
from litserve.runtime.thread import HttpThread
from litserve.status import EndpointCounters, ErrorLog, ErrorRecord, ServerState, ServerStatus
from litserve.web.app import create_app, serving_stack
from litserve.web.auth import ApiKeyCheck
from litserve.web.context import Gate, WebContext
from litserve.web.guard import ConnectionGuard, HostPolicy
from litserve.web.options import WebOptions
from litserve.web.shutdown import ShutdownApi
from litserve.web.stack import ASGIApp, RequestTracker

__all__ = ["Parts", "Running", "assemble", "assemble_observed", "launch", "version_of", "web_factory", "worker_factory"]

HTTP_START_TIMEOUT_S = 30.0
WORKER_JOIN_TIMEOUT_S = 5.0
NO_EXTENSIONS = Extensions()  # beyond the graceful timeout, for workers to leave once their queue closed


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
    app: ASGIApp  # what clients call: the Quart app, inside the middlewares and mounts asked for
    started_s: float = field(default_factory=time.monotonic)
    log_drain: LogDrain | None = None
    switch: AppSwitch | None = None  # on a socket: what Hypercorn serves (a hot swap changes its version)
    version: Version | None = None  # this run's version in the switch

    def status(self, state: ServerState, last_error: ErrorRecord | None) -> ServerStatus:
        """A snapshot of the running server, in `state`."""
        return ServerStatus(
            state=state,
            url=None if self.host is None or self.port is None else url_of(self.host, self.port),
            uptime_s=time.monotonic() - self.started_s,
            endpoints=tuple(e.status() for e in self.endpoints),
            last_error=last_error,
        )

    @property
    def url(self) -> str:
        """`http://host:port` for a client on this machine; ServerStateError when served in-process."""
        if self.host is None or self.port is None:
            raise ServerStateError("the server runs in-process without a socket: call its ASGI app `server.app`")
        return url_of(self.host, self.port)

    @property
    def where(self) -> str:
        """Where it serves, for messages: `on http://host:port`, or that it has no socket."""
        return "in-process (no socket)" if self.port is None else f"on {self.url}"

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
            try:
                self.http.stop(grace_s + WORKER_JOIN_TIMEOUT_S)
            finally:
                if self.log_drain is not None:  # last: worker processes' entries come through the loop
                    self.log_drain.stop()


@final
@dataclass(frozen=True)
class Parts:
    """A server's endpoints, workers (not started) and web app, before any socket or thread exists.

    `asgi` is what clients call: `app`, inside the middlewares and mounts the server was given (on a socket,
    Hypercorn serves it behind the connection guard, `web.guard`).
    """

    endpoints: list[Endpoint]
    pool: WorkerPool
    gate: Gate
    app: Quart
    api_key: str | None
    asgi: ASGIApp | None = None


WebFactory = Callable[[list[Endpoint], Gate, ApiKeyCheck | None], WebContext]


def web_factory(
    settings: ServerSettings,
    extensions: Extensions,
    errors: ErrorLog,
    *,
    status: Callable[[], ServerStatus],
    info: Callable[[], dict[str, Any]],
    stop: Callable[[], None],
    shutdown_key: ShutdownKey,
    tracker: RequestTracker | None,
    inspector: RequestLog | None = None,
) -> WebFactory:
    """What builds a start's WebContext once its endpoints, gate and API key exist (read the key now)."""
    shutdown = None
    if extensions.shutdown_path is not None:
        shutdown = ShutdownApi(extensions.shutdown_path, shutdown_key.current(), stop)

    def web(endpoints: list[Endpoint], gate: Gate, api_key: ApiKeyCheck | None) -> WebContext:
        return WebContext(
            endpoints=endpoints,
            timeout_s=settings.timeout_s,
            gate=gate,
            status=status,
            info=info,
            errors=errors,
            api_key=api_key,
            max_payload_bytes=settings.max_payload_bytes,
            health_path=extensions.health_path,
            info_path=extensions.info_path,
            shutdown=shutdown,
            middlewares=extensions.middlewares,
            mounts=extensions.mounts,
            tracker=tracker,
            options=extensions.web,
            inspector=inspector,
        )

    return web


def worker_factory(worker_mode: str, restart_workers: bool) -> WorkerFactory:
    """Threads of this process, or one worker process per device (imported only when asked for)."""
    if worker_mode not in ("thread", "process"):
        raise ValueError(f"worker_mode must be 'thread' or 'process', got {worker_mode!r}")
    if worker_mode == "process":
        from litserve.process import ProcessWorkers

        return ProcessWorkers(restart=restart_workers)
    return thread_workers


def assemble(
    apis: Sequence[LitAPI],
    settings: ServerSettings,
    errors: ErrorLog,
    make_workers: WorkerFactory,
    web: WebFactory,
    observers: Observers = NO_OBSERVERS,
    counters: Mapping[str, EndpointCounters] | None = None,
) -> Parts:
    """Build what serves requests: endpoints, their workers and the app (tests drive it in-process).

    `counters`: an endpoint whose path is there counts on with them (a hot swap keeps the old version's counts).
    """
    endpoints = [Endpoint(api, settings.max_queue_size, observers) for api in apis]
    for endpoint in endpoints:
        if counters is not None and endpoint.path in counters:
            endpoint.counters = counters[endpoint.path]
    pool = WorkerPool(endpoints, settings.devices, settings.workers_per_device, errors, make_workers)
    gate = Gate()
    api_key = read_api_key(settings.api_key)
    context = web(endpoints, gate, None if api_key is None else ApiKeyCheck(api_key))
    app = create_app(context)
    return Parts(endpoints, pool, gate, app, api_key, serving_stack(app, context))


def assemble_observed(
    apis: Sequence[LitAPI],
    settings: ServerSettings,
    errors: ErrorLog,
    make_workers: WorkerFactory,
    web: WebFactory,
    extensions: Extensions,
    undo: contextlib.ExitStack,
    counters: Mapping[str, EndpointCounters] | None = None,
) -> tuple[Parts, LogDrain | None]:
    """`assemble`, with the extensions' worker callbacks and, when there are loggers, a started `LogDrain`
    (a `litserve-loggers` thread that feeds them LitAPI.log's entries); `undo` stops it."""
    drain = None
    if extensions.loggers:
        drain = LogDrain(extensions.loggers)
        drain.start()
        undo.callback(drain.stop)
    # Workers get only the callbacks with worker events (in process mode, only those are shipped).
    callbacks = tuple(c for c in extensions.callbacks if overrides([c], *WORKER_EVENTS))
    observers = Observers(callbacks, None if drain is None else drain.put)
    return assemble(apis, settings, errors, make_workers, web, observers, counters), drain


def version_of(parts: Parts, host: str, options: WebOptions) -> Version:
    """What the HTTP thread serves for these parts on a socket bound to `host`: the app behind the connection
    guard (Host checks, stuck bodies)."""
    asgi = parts.app if parts.asgi is None else parts.asgi
    guard = ConnectionGuard(asgi, HostPolicy.for_bind(host, options.allowed_hosts), parts.endpoints)
    return Version(guard, parts.app, parts.pool.loop_ended, guard.stop_reading)


def _http_thread(
    parts: Parts, sock: socket.socket | None, settings: ServerSettings, read_timeout_s: float | None, asgi: ASGIApp
) -> HttpThread:
    """The HTTP thread: on a socket it serves `asgi` (the app switch), else it runs only the loop."""
    if sock is None:
        return HttpThread(parts.app, sock, settings.graceful_timeout_s, parts.pool.loop_ended, asgi)
    assert isinstance(asgi, AppSwitch)
    return HttpThread(
        parts.app,
        sock,
        settings.graceful_timeout_s,
        asgi.loop_ended,
        asgi,
        read_timeout_s=read_timeout_s,
        on_shutdown=asgi.stop_reading,
    )


def launch(
    address: tuple[str, int] | None,
    apis: Sequence[LitAPI],
    settings: ServerSettings,
    errors: ErrorLog,
    make_workers: WorkerFactory,
    web: WebFactory,
    on_assembled: Callable[[Running | None], None],
    extensions: Extensions = NO_EXTENSIONS,
) -> Running:
    """Bring a server up on `address` (host, port), or in-process when None; `on_assembled` sees it before
    setup() runs (None if it failed).

    The extensions' callbacks run in the workers around their hooks; its loggers get LitAPI.log's
    entries on a `litserve-loggers` thread, which runs while the server does. On a socket, Hypercorn serves
    an `AppSwitch` whose first version is this run's app (`runtime.swap` switches it to another).
    """
    with contextlib.ExitStack() as undo:
        sock = None if address is None else bind_listening_socket(*address)
        if sock is not None:
            undo.callback(sock.close)
        parts, drain = assemble_observed(apis, settings, errors, make_workers, web, extensions, undo)
        pool, asgi = parts.pool, parts.app if parts.asgi is None else parts.asgi
        host, port, switch, version = None, None, None, None
        if sock is not None and address is not None:
            host, port = address[0], int(sock.getsockname()[1])
            version = version_of(parts, host, extensions.web)
            switch = AppSwitch(version)
        http = _http_thread(parts, sock, settings, extensions.web.read_timeout_s, asgi if switch is None else switch)
        running = Running(host, port, parts.endpoints, pool, http, parts.gate, parts.api_key, asgi, log_drain=drain)
        running.switch, running.version = switch, version
        on_assembled(running)  # visible to status (and so /health) while setup() runs
        undo.callback(on_assembled, None)
        undo.callback(http.stop, settings.graceful_timeout_s + WORKER_JOIN_TIMEOUT_S)
        loop = http.start(HTTP_START_TIMEOUT_S)
        undo.callback(pool.stop, WORKER_JOIN_TIMEOUT_S)  # runs before http.stop: the loop carries answers
        pool.start(loop)
        pool.wait_ready()
        undo.pop_all()
    return running
