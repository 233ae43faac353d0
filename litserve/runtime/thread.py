"""The `litserve-http` thread: a private asyncio loop serving a Quart app with Hypercorn.

The thread hands its loop back through a `concurrent.futures.Future` once Hypercorn has finished
lifespan startup on the already-listening socket, and carries any startup error back the same way.
It is stopped through Hypercorn's shutdown trigger, which closes the listener, lets in-flight
requests finish for up to `graceful_timeout_s`, then cancels what is left.

Without a socket (a server started for an in-process ASGI client, `litserve.utils.wrap_litserve_start`)
the thread runs only the loop: worker processes' channels live on it, while the app is called on
whichever loop its ASGI caller runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, final

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app
from quart import Quart

from litserve.engine import bridge
from litserve.engine.bridge import LoopHandle

__all__ = ["EVENT_LOOP_ENV", "HttpThread", "loop_factory"]

logger = logging.getLogger(__name__)

EVENT_LOOP_ENV = "LITSERVE_EVENT_LOOP"
_LOOP_CHOICES = ("asyncio", "uvloop")


def loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes the HTTP thread's loop: asyncio's (what its installed event loop policy makes), or uvloop.

    `choice` (default: the LITSERVE_EVENT_LOOP variable, else "asyncio") is "asyncio" or "uvloop" (an error
    if it is not installed). uvloop is not the default: it has not shown a consistent win here. Hypercorn
    and h11 run on it a little cheaper (server CPU per request 0.82x to 1.02x), but requests per second
    moved 0.97x to 1.21x for trivial JSON and 1.00x to 1.11x for streams over five interleaved runs, inside
    this machine's noise (benchmarks/README.md).
    """
    picked = (os.environ.get(EVENT_LOOP_ENV, "") if choice is None else choice).strip().lower() or "asyncio"
    if picked not in _LOOP_CHOICES:
        raise ValueError(f"{EVENT_LOOP_ENV}={picked!r}: choose one of {', '.join(_LOOP_CHOICES)}")
    if picked == "asyncio":
        return asyncio.new_event_loop
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        raise RuntimeError(f"{EVENT_LOOP_ENV}=uvloop, but uvloop is not installed: pip install uvloop") from exc
    new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new_loop


def _hypercorn_config(graceful_timeout_s: float, read_timeout_s: float | None) -> Config:
    config = Config()
    _set_timeouts(config, graceful_timeout_s, read_timeout_s)
    # Hypercorn's own lines go to our logger; the library never installs handlers.
    config.errorlog = logging.getLogger("litserve.hypercorn")
    config.accesslog = None
    return config


def _set_timeouts(config: Config, graceful_timeout_s: float, read_timeout_s: float | None) -> None:
    # Hypercorn reads both each time it needs them (at shutdown; as a connection goes idle), so they may change
    # while it serves.
    config.graceful_timeout = graceful_timeout_s
    # Hypercorn's keep-alive timer runs from the connection's start (or its last answer) until a request's
    # headers are complete: it is also the bound on reading headers (the body's is Quart's BODY_TIMEOUT).
    keep_alive_s = Config.keep_alive_timeout
    config.keep_alive_timeout = keep_alive_s if read_timeout_s is None else min(keep_alive_s, read_timeout_s)


@final
class HttpThread:
    """Runs `app` on `sock` in a thread named `litserve-http` until `stop()`; with no socket, only the loop.

    `on_loop_exit` runs on that thread as the loop ends, before it closes (the workers are told, in case
    it ends without a stop because serving failed). `asgi`, when given, is served instead of `app`
    (ASGI layers around it, which pass lifespan events to `app`). `on_shutdown` runs on the loop as
    shutdown begins, before Hypercorn starts draining (the connection guard ends stuck body reads).
    `read_timeout_s` bounds the wait for a request's headers (None: Hypercorn's keep-alive timeout).
    """

    def __init__(
        self,
        app: Quart,
        sock: socket.socket | None,
        graceful_timeout_s: float,
        on_loop_exit: Callable[[], None],
        asgi: Any = None,
        *,
        read_timeout_s: float | None = None,
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self._app: Quart | None = app  # dropped once serving: a hot swap may replace it (`runtime.switch`)
        self._on_shutdown = on_shutdown
        self._asgi = app if asgi is None else asgi  # what Hypercorn serves: the app, or layers around it
        self._on_loop_exit = on_loop_exit
        self._sock = sock
        self._config = _hypercorn_config(graceful_timeout_s, read_timeout_s)
        self._ready: concurrent.futures.Future[asyncio.AbstractEventLoop] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None  # set: Hypercorn stops accepting and drains
        self._release: asyncio.Event | None = None  # set: the loop may end once Hypercorn has stopped
        self._servers: list[asyncio.AbstractServer] = []  # Hypercorn's listening servers (on the loop only)
        self._thread = threading.Thread(target=self._main, name="litserve-http", daemon=True)
        self._new_loop = asyncio.new_event_loop

    def start(self, timeout_s: float) -> LoopHandle:
        """Start serving; return the loop once requests are accepted, or raise what stopped it."""
        self._new_loop = loop_factory()  # the environment is read at start (a bad value raises here)
        self._thread.start()
        loop = self._ready.result(timeout_s)
        assert self._thread.ident is not None
        return LoopHandle(loop, self._thread.ident)

    @property
    def loop(self) -> LoopHandle:
        """The running loop (after `start()` returned)."""
        loop, ident = self._loop, self._thread.ident
        assert loop is not None and ident is not None, "the HTTP thread has not started"
        return LoopHandle(loop, ident)

    def set_timeouts(self, graceful_timeout_s: float, read_timeout_s: float | None) -> None:
        """Change the graceful timeout and the bound on reading headers (see `__init__`) while serving."""
        _set_timeouts(self._config, graceful_timeout_s, read_timeout_s)

    def close_listener(self) -> None:
        """Refuse new connections now and let Hypercorn finish the open ones (up to the graceful timeout).

        The loop keeps running until `stop()`: workers still answer through it while they finish.
        """
        loop, shutdown = self._loop, self._shutdown
        if loop is not None and shutdown is not None:
            bridge.call_in_loop(loop, self._begin_shutdown, loop, shutdown)

    def stop(self, timeout_s: float) -> bool:
        """Close the listener (if not yet), let the loop end and join the thread; True if it ended in time."""
        if self._thread.ident is None:
            self._close_socket()
            return True
        self.close_listener()
        loop, release = self._loop, self._release
        if loop is not None and release is not None:
            bridge.call_in_loop(loop, release.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning("the litserve-http thread did not stop within %.1f s", timeout_s)
            return False
        return True

    def _begin_shutdown(self, loop: asyncio.AbstractEventLoop, shutdown: asyncio.Event) -> None:
        # On the loop. Stop listening first: an accept in the loop turns before Hypercorn closes its
        # servers would open a connection that Hypercorn, shutting down, neither serves nor closes until
        # the graceful period ends. Closing the servers closes the listening socket, so a client
        # connecting from now on is refused at once (its backlog is reset), on asyncio's loop and uvloop's
        # alike (uvloop listens through libuv: taking the socket's reader away, as this did, does nothing there).
        for server in self._servers:
            server.close()  # Hypercorn closes them again: a no-op
        if self._on_shutdown is not None and not shutdown.is_set():
            self._on_shutdown()
        shutdown.set()

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()

    def _main(self) -> None:
        loop = self._new_loop()
        loop.set_exception_handler(_report_loop_error)
        try:
            loop.run_until_complete(self._serve(loop))
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                logger.exception("the HTTP server stopped with an error")
        finally:
            try:
                _cancel_leftover_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())  # e.g. gzip of big answers
            finally:
                try:
                    self._on_loop_exit()
                finally:
                    loop.close()
                    self._close_socket()
            if not self._ready.done():
                self._ready.set_exception(RuntimeError("the HTTP server stopped before it was ready"))

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        self._shutdown = asyncio.Event()
        self._release = asyncio.Event()
        self._loop = loop

        if self._sock is None:  # no Hypercorn: the loop alone, until stop()
            self._ready.set_result(loop)
            await self._release.wait()
            return

        async def mark_ready() -> None:
            # Once: an in-process ASGI client's lifespan may run the app's startup again (same app).
            if not self._ready.done():
                self._ready.set_result(loop)

        app, self._app = self._app, None
        assert app is not None
        app.before_serving(mark_ready)
        _keep_servers(loop, self._servers)
        sockets = Sockets(secure_sockets=[], insecure_sockets=[self._sock], quic_sockets=[])
        await worker_serve(
            wrap_app(self._asgi, self._config.wsgi_max_body_size, "asgi"),
            self._config,
            sockets=sockets,
            shutdown_trigger=self._shutdown.wait,
        )
        await self._release.wait()


def _keep_servers(loop: asyncio.AbstractEventLoop, servers: list[asyncio.AbstractServer]) -> None:
    """Add each server made on `loop` to `servers`: Hypercorn keeps its own out of reach, and stopping closes them.

    (`asyncio.start_server`, which Hypercorn calls, makes its server with the running loop's `create_server`.)
    """
    create_server = loop.create_server

    async def create_and_keep(*args: Any, **kwargs: Any) -> asyncio.AbstractServer:
        server = await create_server(*args, **kwargs)
        servers.append(server)
        return server

    loop.create_server = create_and_keep  # type: ignore[method-assign,assignment]


def _report_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's default report, except the false alarm of a connection Hypercorn cancelled at stop.

    When stop's graceful period ends, Hypercorn cancels the connections still open. On Python 3.11 and 3.12
    the done-callback asyncio's `start_server` puts on each connection task calls `task.exception()`
    without checking `task.cancelled()` first (3.13 checks), so every such cancellation is reported as an
    "Exception in callback ... CancelledError". That cancellation is the intended end of the connection.
    """
    handle = context.get("handle")
    callback = getattr(handle, "_callback", None)  # asyncio's handles; uvloop's only show it in their repr
    name = repr(handle) if callback is None else getattr(callback, "__qualname__", "")
    if isinstance(context.get("exception"), asyncio.CancelledError) and (
        "StreamReaderProtocol.connection_made.<locals>.callback" in name
    ):
        logger.debug("a connection was cancelled at the end of the graceful period")
        return
    loop.default_exception_handler(context)


def _cancel_leftover_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks: set[asyncio.Task[Any]] = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
