"""Hot swap: new LitAPIs take over a running server's socket, HTTP thread and open connections.

A swap builds a new set of everything except the listening socket and the `litserve-http` thread: endpoints,
queues, workers, app and connection guard. It starts the new workers on the same loop and waits for every
`setup()`. If one fails, WorkerSetupError is raised, the new workers are stopped and the old version keeps
serving: nothing was switched. Otherwise the app switch (`runtime.switch`) makes the new version current.
New requests go to it, on open keep-alive connections too, and requests that arrived earlier finish on the
old workers. Once the old version has no call in progress (bounded), its workers stop (their threads end and
drop their LitAPI copies; worker processes exit) and its app shuts down. An endpoint whose path the new
version keeps counts on with the old one's counters.

Two doors lead here:
- `server.swap(new_api)`: the same server and settings, new LitAPIs (`swap_apis`).
- `start()` on a port that another LitServer of this process serves, as when a notebook cell is re-run
  (`take_over`). The new server adopts the old one's socket and HTTP thread if both use the same host,
  worker mode and devices; the old server is then STOPPED and owns nothing. Otherwise the old server is
  stopped and the new one starts afresh, with one log line saying why.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast, final

from litserve.api import LitAPI
from litserve.callbacks import CallbackRunner, EventTypes
from litserve.config import ServerSettings
from litserve.engine import bridge
from litserve.engine.bridge import LoopHandle
from litserve.engine.pool import WorkerFactory
from litserve.exceptions import ServerStateError
from litserve.extensions import Extensions
from litserve.runtime import registry
from litserve.runtime.lifecycle import Lifecycle, SwapTicket
from litserve.runtime.serving import WORKER_JOIN_TIMEOUT_S, Running, WebFactory, assemble_observed, version_of
from litserve.status import ErrorLog

__all__ = ["Recipe", "swap_apis", "take_over"]

logger = logging.getLogger("litserve")

STARTUP_TIMEOUT_S = 60.0  # the new app's lifespan startup (Hypercorn's own bound on it)
NO_TIMEOUT_DRAIN_S = 30.0  # how long the old version may finish its requests when the server has no timeout

T = TypeVar("T")


@final
@dataclass(frozen=True)
class Recipe:
    """What builds a server's serving parts: its LitAPIs, settings and the factories `launch` is given."""

    apis: Sequence[LitAPI]
    settings: ServerSettings
    errors: ErrorLog
    make_workers: WorkerFactory
    web: WebFactory
    extensions: Extensions
    worker_mode: str


class Holder(Protocol):
    """What a LitServer holding a port shows a newcomer that may take its place."""

    _life: Lifecycle
    _settings: ServerSettings
    _worker_mode: str
    _callbacks: CallbackRunner

    def stop(self) -> None: ...


def swap_apis(life: Lifecycle, recipe: Recipe, on_switched: Callable[[], None]) -> Running:
    """Swap a running server's LitAPIs for `recipe.apis` (`server.swap`); returns the new running parts.

    `on_switched` runs at the switch, under the swap lock (the server records its new LitAPIs).
    Raises WorkerSetupError (the old version keeps serving) or ServerStateError (not running on a socket,
    or stop() was called before the switch).
    """

    def switched(running: Running) -> None:
        life.replaced(running)
        on_switched()

    with life.swapping() as ticket:
        if ticket is None:
            raise ServerStateError(
                f"the server is {life.state.value}; swap() needs a server started on a socket with start()"
            )
        return _swap(ticket, recipe, recipe.settings, switched)


def take_over(
    address: tuple[str, int], newcomer: object, recipe: Recipe, on_adopted: Callable[[Running], None]
) -> Running | None:
    """The running parts of `newcomer` after it adopted the socket of the LitServer of this process on
    `address`'s port; None when there is none, or after stopping it because it cannot be swapped in place.

    `on_adopted` runs at the switch (the newcomer serves from then on), before the old version has drained.
    """
    host, port = address
    found = registry.holder_of(port)
    if found is None or found is newcomer:
        return None
    holder = cast(Holder, found)  # only LitServers are registered
    reason = _why_not_in_place(holder, host, recipe)
    if reason is None:
        with holder._life.swapping() as ticket:
            if ticket is not None:
                return _adopt(holder, ticket, recipe, on_adopted)
        reason = f"it is {holder._life.state.value}"
    logger.info("stopping the LitServer on port %d and starting the new one (no hot swap: %s)", port, reason)
    holder.stop()
    return None


def _why_not_in_place(holder: Holder, host: str, recipe: Recipe) -> str | None:
    """Why `holder` cannot hand its socket to a server built from `recipe` on `host`; None if it can."""
    running = holder._life.running
    if running is not None and running.host != host:
        return f"it is bound to {running.host}, the new one asks for {host}"
    if holder._worker_mode != recipe.worker_mode:
        return f"worker_mode changes from {holder._worker_mode!r} to {recipe.worker_mode!r}"
    if holder._settings.devices != recipe.settings.devices:
        return f"devices change from {list(holder._settings.devices)} to {list(recipe.settings.devices)}"
    return None


def _adopt(holder: Holder, ticket: SwapTicket, recipe: Recipe, on_adopted: Callable[[Running], None]) -> Running:
    def switched(running: Running) -> None:
        running.http.set_timeouts(recipe.settings.graceful_timeout_s, recipe.extensions.web.read_timeout_s)
        holder._life.handed_over()
        on_adopted(running)

    running = _swap(ticket, recipe, holder._settings, switched)
    holder._callbacks.trigger_event(EventTypes.ON_SERVER_END.value, litserver=holder)
    return running


def _swap(
    ticket: SwapTicket, recipe: Recipe, old_settings: ServerSettings, on_switched: Callable[[Running], None]
) -> Running:
    """Start the new version beside the old one, switch, then retire the old one (see the module docstring)."""
    old = ticket.running
    assert old.switch is not None and old.host is not None, "only a server on a socket is swapped"
    loop = old.http.loop
    counters = {endpoint.path: endpoint.counters for endpoint in old.endpoints}
    with contextlib.ExitStack() as undo:
        settings = recipe.settings
        parts, drain = assemble_observed(
            recipe.apis, settings, recipe.errors, recipe.make_workers, recipe.web, recipe.extensions, undo, counters
        )
        version = version_of(parts, old.host, recipe.extensions.web)
        undo.callback(parts.pool.stop, WORKER_JOIN_TIMEOUT_S)
        parts.pool.start(loop)
        parts.pool.wait_ready(ticket.abort)  # a failing setup() raises here: nothing switched
        switch = old.switch
        _on_loop(loop, lambda: switch.switch_to(version), STARTUP_TIMEOUT_S)
        undo.pop_all()
    asgi = parts.app if parts.asgi is None else parts.asgi
    new = Running(old.host, old.port, parts.endpoints, parts.pool, old.http, parts.gate, parts.api_key, asgi)
    new.started_s, new.log_drain, new.switch, new.version = old.started_s, drain, old.switch, version
    _retire_counts(old)
    on_switched(new)
    finished = _retire(old, ticket.abort, old_settings)
    logger.info(
        "swapped %s for %s %s: %d requests finished on the old version", _names(old), _names(new), new.where, finished
    )
    return new


def _retire(old: Running, abort: concurrent.futures.Future[None], settings: ServerSettings) -> int:
    """Wait (bounded; not after a stop() began) until the switched-out version is idle, then stop its workers
    and shut its app down. Returns how many of its calls finished after the switch."""
    switch, version, loop = old.switch, old.version, old.http.loop
    assert switch is not None and version is not None
    drain_s = (NO_TIMEOUT_DRAIN_S if settings.timeout_s is None else settings.timeout_s) + settings.graceful_timeout_s
    idle = asyncio.run_coroutine_threadsafe(switch.wait_idle(version, drain_s), loop.loop)
    waited: list[concurrent.futures.Future[Any]] = [idle, abort]
    try:  # an interrupted wait (Ctrl+C) still stops the old version below: nothing else would
        concurrent.futures.wait(waited, drain_s + WORKER_JOIN_TIMEOUT_S, concurrent.futures.FIRST_COMPLETED)
    finally:
        if not idle.done() or idle.cancelled() or not idle.result():
            idle.cancel()
            logger.warning("the swapped-out version still runs %d request(s); its workers stop now", version.calls)
        _stop_version(old, settings)
    return version.finished_late


def _stop_version(old: Running, settings: ServerSettings) -> None:
    """Stop a switched-out version's workers, shut its app down, end its log drain."""
    switch, version, loop = old.switch, old.version, old.http.loop
    assert switch is not None and version is not None
    old.gate.close()
    try:
        old.pool.stop(settings.graceful_timeout_s + WORKER_JOIN_TIMEOUT_S)
        _on_loop(loop, lambda: switch.retire(version), WORKER_JOIN_TIMEOUT_S)
    except Exception:  # the new version serves already: the swap is done, whatever the old one's end
        logger.exception("the swapped-out version did not stop cleanly")
    finally:
        if old.log_drain is not None:  # last: worker processes' entries come through the loop
            old.log_drain.stop()


def _retire_counts(old: Running) -> None:
    """The old workers' counts stay in their endpoints' totals (a kept path's counters are the new version's)."""
    for endpoint in old.endpoints:
        endpoint.counters.retired_workers.extend(worker.counters for worker in endpoint.workers)


def _on_loop(loop: LoopHandle, make_work: Callable[[], Coroutine[Any, Any, T]], timeout_s: float) -> T:
    """Run `make_work()` on the HTTP loop and wait for its result from this (another) thread; cancel it on timeout.

    The coroutine is made on the loop, so a loop that ends first (a stop() meanwhile) leaves none unawaited.
    """
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def begin() -> None:
        if future.set_running_or_notify_cancel():
            task = asyncio.ensure_future(make_work())
            task.add_done_callback(lambda done: _settle(done, future))
            future.add_done_callback(lambda _: task.cancel() if future.cancelled() else None)

    if not bridge.call_in_loop(loop.loop, begin):
        raise ServerStateError("the server's event loop has ended")
    try:
        return future.result(timeout_s)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise


def _settle(task: asyncio.Future[T], future: concurrent.futures.Future[T]) -> None:
    if task.cancelled():
        future.cancel()
    elif task.exception() is not None:
        future.set_exception(task.exception())
    else:
        future.set_result(task.result())


def _names(running: Running) -> str:
    return "+".join(type(endpoint.api).__name__ for endpoint in running.endpoints)
