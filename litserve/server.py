"""LitServer: the facade that wires settings, engine, web app and HTTP thread, and owns the lifecycle."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from litserve.api import LitAPI
from litserve.callbacks import Callback, CallbackRunner, EventTypes
from litserve.client_file import write_client_file
from litserve.config import ServerSettings, check_apis, info_document, normalize_timeout, parse_size
from litserve.engine.devices import resolve_devices
from litserve.exceptions import ServerStateError
from litserve.extensions import (
    ShutdownKey,
    check_extensions,
    check_model_metadata,
    legacy_arguments,
    note_unneeded,
    request_tracker,
)
from litserve.inspector import request_log
from litserve.loggers import Logger
from litserve.notebook import PanelSet
from litserve.replay import Replayer
from litserve.runtime import registry
from litserve.runtime.console import StopRequested, show_logs, stop_on_signals
from litserve.runtime.lifecycle import Lifecycle
from litserve.runtime.serving import WORKER_JOIN_TIMEOUT_S, Running, launch, web_factory, worker_factory
from litserve.runtime.sockets import is_loopback
from litserve.runtime.swap import Recipe, take_over
from litserve.server_tools import ServerTools
from litserve.status import ErrorLog, ServerState, ServerStatus
from litserve.web.options import check_web_options
from litserve.web.stack import ASGIApp

__all__ = ["LitServer"]

logger = logging.getLogger("litserve")


class LitServer(ServerTools):
    """Serve one or more LitAPIs over HTTP from a notebook cell, a script or a test.

    Example:
        >>> server = LitServer(SimpleLitAPI(), accelerator="cpu").start(port=8000)
        >>> requests.post("http://127.0.0.1:8000/predict", json={"input": 4.0}).json()
        {'output': 16.0}
        >>> server.stop()

    Args:
        lit_api: a LitAPI, or a list of them each on its own `api_path`.
        accelerator: "auto", "cpu", "cuda", "gpu" or "mps".
        devices: "auto", a number of devices, or a list of GPU ids.
        workers_per_device: worker threads per device; each has its own LitAPI copy.
        worker_mode: "thread" (default): workers are threads of this process. "process": one spawned
            worker process per device (for several GPUs, or CPU-heavy Python hooks), each with
            `workers_per_device` threads; the LitAPI is shipped by value (cloudpickle), so classes
            defined in a notebook work. HTTP, queueing, deadlines and the status stay here.
        restart_workers: process mode: start a worker process again when it dies (its in-flight
            requests get 500; /health is 503 until setup() ran again).
        timeout: seconds a request may take from arrival, queued or running (504 after);
            on a stream, seconds it may wait for its first chunk and for each next one, not its
            whole length. False, None or -1 for no limit.
        max_queue_size: requests that may wait per endpoint before new ones get 503 (None: no bound).
        shutdown_timeout: seconds stop() lets in-flight requests finish.
        api_key: the key clients must send as `X-API-Key`; default: LIT_SERVER_API_KEY when the server
            starts, else none. `/health` never needs it. A LitAPI with `authorize(request)` decides itself.
        max_payload_size: the largest request body, in bytes or as "10MB"; larger ones get 413.
            Default 16 MiB.
        model_metadata: any JSON-able value shown as "model" by GET /info.
        healthcheck_path, info_path: where GET /health and GET /info live.
        enable_shutdown_api, shutdown_path: `POST /shutdown` stops the server; it needs the header
            `Authorization: Bearer <LIT_SHUTDOWN_API_KEY>` (without that variable a key is made and logged).
        track_requests: count requests being served (`server.active_requests`, callbacks' `on_request`).
        callbacks: `litserve.Callback`s called around setup, each hook, requests and the server's life.
        middlewares: ASGI middleware classes, or (class, kwargs) tuples, wrapped around the app.
        loggers: `litserve.Logger`s that receive `LitAPI.log(key, value)` entries, off the request path.
        generate_client_file: write `client.py` on start() too (True), or never (False); default: run() does.
        metrics_path, status_path, openapi_path, docs_path: where GET /metrics (Prometheus), the live
            status page, the OpenAPI document and its interactive docs live; None turns one off.
        disable_openapi_url: LitServe's switch: True turns off both the OpenAPI document and the docs page.
        server_timing: add a `Server-Timing` header (queue wait, predict time) to each answer.
        read_timeout: seconds a client may take to send a request's body (then 408) and headers (also bound by
            the 5 s keep-alive timeout); None: no limit on the body.
        allowed_hosts: `Host` names served besides loopback ones while bound to a loopback address (the
            DNS-rebinding guard answers others 403); `["*"]` serves any Host.
        inspect_requests: keep the last this many requests for `server.requests` and `server.replay`; 0: off;
            None (default): 100 in a notebook, off in a script. inspect_payload_bytes: payloads up to this
            size (as JSON) are kept whole for replay, larger ones only summarised (default 4096).
        **legacy: LitServe's `max_batch_size`, `batch_timeout`, `stream`, `api_path`, `spec` (deprecated here: pass
            them to LitAPI), and `fast_queue`, `loop` (accepted, not needed here; logged
            once at INFO). Any other name is a TypeError.

    Stability: the constructor arguments are LitServe's; start/stop/status are beta. Changed in 0.1:
    callbacks, loggers, middlewares, the route paths, the shutdown API and track_requests are honoured.
    """

    def __init__(
        self,
        lit_api: LitAPI | Sequence[LitAPI],
        accelerator: str = "auto",
        devices: int | str | Sequence[int] = "auto",
        workers_per_device: int = 1,
        timeout: float | bool | None = 30,
        *,
        worker_mode: str = "thread",
        restart_workers: bool = True,
        max_queue_size: int | None = None,
        shutdown_timeout: float = 3.0,
        api_key: str | None = None,
        max_payload_size: int | str | None = None,
        model_metadata: Any = None,
        healthcheck_path: str = "/health",
        info_path: str = "/info",
        shutdown_path: str = "/shutdown",
        enable_shutdown_api: bool = False,
        track_requests: bool = False,
        callbacks: Callback | Sequence[Callback] | None = None,
        middlewares: list[Any] | None = None,
        loggers: Logger | Sequence[Logger] | None = None,
        generate_client_file: bool | None = None,
        metrics_path: str | None = "/metrics",
        status_path: str | None = "/status",
        openapi_path: str | None = "/openapi.json",
        docs_path: str | None = "/docs",
        server_timing: bool = False,
        read_timeout: float | None = 30.0,
        allowed_hosts: Sequence[str] | None = None,
        disable_openapi_url: bool = False,
        inspect_requests: int | None = None,
        inspect_payload_bytes: int = 4096,
        **legacy: Any,
    ) -> None:
        self._apis = check_apis(lit_api, normalize_timeout(timeout), **legacy_arguments(legacy))
        self._worker_mode, self._workers = worker_mode, worker_factory(worker_mode, restart_workers)
        self._ext = check_extensions(
            self._apis,
            callbacks=callbacks,
            loggers=loggers,
            middlewares=middlewares,
            healthcheck_path=healthcheck_path,
            info_path=info_path,
            shutdown_path=shutdown_path if enable_shutdown_api else None,
            track_requests=track_requests,
            generate_client_file=generate_client_file,
            web=check_web_options(
                metrics_path=metrics_path,
                status_path=status_path,
                openapi_path=openapi_path,
                docs_path=docs_path,
                server_timing=server_timing,
                read_timeout=read_timeout,
                allowed_hosts=allowed_hosts,
                disable_openapi_url=disable_openapi_url,
                inspect_requests=inspect_requests,
                inspect_payload_bytes=inspect_payload_bytes,
            ),
        )
        self._settings = ServerSettings(
            devices=tuple(resolve_devices(accelerator, devices)),
            workers_per_device=workers_per_device,
            timeout_s=normalize_timeout(timeout),
            max_queue_size=max_queue_size,
            graceful_timeout_s=float(shutdown_timeout),
            max_payload_bytes=parse_size(max_payload_size),
            api_key=api_key,
            model_metadata=check_model_metadata(model_metadata),
        )
        self._init_lifecycle()

    def _init_lifecycle(self) -> None:
        """What changes while the server lives: its state, what runs, the last error, panels, hooks' state."""
        self._life = Lifecycle()
        self._errors = ErrorLog()
        self._callbacks = CallbackRunner(self._ext.callbacks, on_error=self._errors.record)
        self._tracker = request_tracker(self._ext, self._callbacks, self)
        self._shutdown_key = ShutdownKey()
        self._panels = PanelSet()
        self._inspector = request_log(self._ext.web.inspect_requests, self._ext.web.inspect_payload_bytes)
        self._replays = Replayer(self._settings.devices[0])

    # --- lifecycle -------------------------------------------------------------------------------

    def start(
        self, host: str | None = None, port: int | None = None, *, generate_client_file: bool | None = None
    ) -> LitServer:
        """Start serving in the background and return once every worker finished `setup()`.

        Binds the port first (a taken port raises `PortInUseError`), starts the workers and the HTTP
        thread, and waits for every `setup()` (a failure raises `WorkerSetupError` with the user's
        exception as its cause). Whatever failed to start is stopped again before raising. Calling
        start() on a running server returns it unchanged. A LitServer of this process already on
        `port` (a notebook cell run again) hands this one its socket, HTTP thread and open connections
        (hot swap): this server's workers run setup() while the old one still serves (a failure raises
        here and leaves the old one serving), then take the new requests, and the old server ends
        STOPPED. With another host, `worker_mode` or devices, the old server is stopped first instead
        (logged with the reason).

        Args:
            host: address to bind; default "127.0.0.1" (use "0.0.0.0" to be reachable from other machines).
            port: port to bind; default 8000; 0 picks a free port (read it from `server.port`).
            generate_client_file: also write `client.py` into the working directory (default: the
                constructor's `generate_client_file=True`).

        Returns:
            The server itself, so `server = LitServer(api).start()` works.

        Raises:
            PortInUseError, WorkerSetupError, ServerStateError.
        """
        if self._life.begin_start(host, port):
            return self
        host = "127.0.0.1" if host is None else host
        running = self._launch((host, 8000 if port is None else port))
        assert running.port is not None
        registry.remember(running.port, self)
        if not is_loopback(host) and running.api_key is None:
            logger.warning("litserve is listening on %s, reachable from other machines, without an API key", host)
        if generate_client_file or (generate_client_file is None and self._ext.generate_client_file):
            write_client_file(self.url + self._apis[0].api_path)  # before the startup line: it is there then
        self._callbacks.trigger_event(EventTypes.ON_SERVER_START.value, litserver=self)
        logger.info("litserve running on %s", self.url)
        if self._ext.web.docs_path is not None and self._ext.web.openapi_path is not None:
            logger.info("Swagger UI is available at %s%s", self.url, self._ext.web.docs_path)
        logger.info("Application startup complete.")
        return self

    def _start_in_process(self) -> LitServer:
        """start() without a socket: in-process ASGI clients call `app` (`litserve.utils.wrap_litserve_start`)."""
        if not self._life.begin_start(None, None, on_socket=False):
            self._launch(None)
            self._callbacks.trigger_event(EventTypes.ON_SERVER_START.value, litserver=self)
        return self

    def _launch(self, address: tuple[str, int] | None) -> Running:
        """STARTING -> RUNNING, or FAILED with nothing left running (the error is raised)."""
        adopted: list[Running] = []

        def adopt(running: Running) -> None:  # at the switch: this server runs (while the old one drains)
            self._life.started(running)
            registry.remember(running.port or 0, self)
            adopted.append(running)

        try:
            recipe = self._recipe()
            # A LitServer of this process on the port hands its socket over (hot swap), or is stopped.
            running = None if address is None else take_over(address, self, recipe, adopt)
            if running is None:
                r, assembled = recipe, self._life.assembled
                running = launch(address, r.apis, r.settings, r.errors, r.make_workers, r.web, assembled, r.extensions)
        except BaseException:
            if not adopted:  # once switched, this server serves (and owns the socket) whatever happened after
                self._life.failed()
            raise
        if not adopted:  # adopted: RUNNING since the switch (or stopped since, and stays so)
            self._life.started(running)
        return running

    def _recipe(self, apis: Sequence[LitAPI] | None = None) -> Recipe:
        """What builds this server's serving parts for `apis` (default: its own), at start() and swap()."""
        apis, settings = self._apis if apis is None else apis, self._settings
        web = web_factory(
            settings,
            self._ext,
            self._errors,
            status=lambda: self.status,
            info=lambda: info_document(settings, apis, self._worker_mode),
            stop=self.stop,
            shutdown_key=self._shutdown_key,
            tracker=self._tracker,
            inspector=self._inspector,
        )
        return Recipe(apis, settings, self._errors, self._workers, web, self._ext, self._worker_mode)

    def stop(self) -> None:
        """Stop serving: refuse new requests, let in-flight ones finish, join every thread, free the port.

        Idempotent and bounded by `shutdown_timeout` plus a few seconds for workers. A worker stuck
        inside a hook is left to finish on its own (it is a daemon thread) and logged.
        """
        current = threading.current_thread().name
        if current.startswith("litserve-") and current != "litserve-stopper":
            # Called from a hook or the HTTP thread: it cannot wait for itself, so stop from a helper.
            threading.Thread(target=self.stop, name="litserve-stopper", daemon=True).start()
            return
        running = self._life.begin_stop(self._settings.graceful_timeout_s + 3 * WORKER_JOIN_TIMEOUT_S)
        if running is None:  # not running, or another thread stopped it (and is done)
            return
        # Even if the shutdown is interrupted (a second Ctrl+C), the state ends STOPPED and the port is free.
        try:
            running.shutdown(self._settings.graceful_timeout_s)
        finally:
            if running.port is not None:
                registry.forget(running.port, self)
            self._life.ended()
            self._replays.clear()  # replay's LitAPI copies (their models, their device memory) go too
            self._panels.join(WORKER_JOIN_TIMEOUT_S)
        self._callbacks.trigger_event(EventTypes.ON_SERVER_END.value, litserver=self)
        logger.info("litserve stopped (was %s)", running.where)

    def run(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        num_api_servers: int | None = None,
        log_level: str = "info",
        generate_client_file: bool | None = None,
        api_server_worker_type: str | None = None,
    ) -> None:
        """Start, then block until Ctrl+C, SIGTERM or `stop()` from another thread; always stops.

        Logs the URL and `Application startup complete.` to stderr, and writes `client.py` into the
        working directory unless it exists or `generate_client_file=False` (here or to the constructor).
        Works in Jupyter too: it does not use the calling thread's event loop. `num_api_servers` and
        `api_server_worker_type` are LitServe's; accepted, not needed here (logged once).
        """
        show_logs(log_level)
        note_unneeded({"num_api_servers": num_api_servers, "api_server_worker_type": api_server_worker_type})
        if generate_client_file is None:
            generate_client_file = self._ext.generate_client_file is not False
        with stop_on_signals():
            try:
                self.start(host, port, generate_client_file=generate_client_file)
                while not self._life.stopped.wait():
                    pass  # pragma: no cover - wait() without a timeout returns only when set
            except (KeyboardInterrupt, StopRequested):
                logger.info("stopping on request")
            finally:
                self.stop()

    def __enter__(self) -> LitServer:
        return self.start() if self._life.state is not ServerState.RUNNING else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- what the server looks like ----------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        return self._life.state

    @property
    def app(self) -> ASGIApp:
        """The current run's ASGI app (inside any middlewares), for `wrap_litserve_start`'s test clients.

        Each start() builds a new one; ServerStateError before the first. Stability: beta.
        """
        running = self._life.running
        if running is None:
            raise ServerStateError(f"the server is {self.state.value}; its app exists once it is started")
        return running.app

    @property
    def active_requests(self) -> int | None:
        """Requests being served now (LitServe's name); None unless `track_requests=True`."""
        tracker = self._tracker
        return tracker.active if tracker is not None and tracker.counting else None

    @property
    def port(self) -> int | None:
        """The bound port while running (the real one when started with port=0)."""
        running = self._life.running
        return None if running is None else running.port

    @property
    def url(self) -> str:
        """`http://host:port` while running; raises ServerStateError otherwise (also when served in-process)."""
        running = self._life.running
        if running is None:
            raise ServerStateError(f"the server is {self.state.value}; it has a URL only once start() is called")
        return running.url

    @property
    def status(self) -> ServerStatus:
        """A frozen snapshot: state, URL, per-endpoint counts and queue depth, workers, last error."""
        state, running = self._life.snapshot()
        if running is None:
            return ServerStatus(state=state, url=None, uptime_s=0.0, last_error=self._errors.last)
        return running.status(state, self._errors.last)

    def __repr__(self) -> str:
        running = self._life.running
        where = "" if running is None else f" {running.where}"
        return f"<LitServer {self.state.value}{where} apis={[type(a).__name__ for a in self._apis]}>"
