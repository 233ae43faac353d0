"""LitServer's LitServe-compatible options beyond the engine's settings, checked once at construction:
callbacks, loggers, middlewares, where the server's own routes live, and the arguments that the
design makes unnecessary (accepted, and said so once).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, final

from litserve.api import RESERVED_PATHS, LitAPI
from litserve.callbacks import Callback, CallbackRunner, EventTypes, check_callbacks, overrides
from litserve.codec import encode_json
from litserve.loggers import Logger, check_loggers, mount_of
from litserve.web.options import WebOptions
from litserve.web.stack import Middleware, RequestTracker

__all__ = [
    "SHUTDOWN_KEY_ENV",
    "Extensions",
    "check_api_paths",
    "check_extensions",
    "check_middlewares",
    "check_model_metadata",
    "legacy_arguments",
    "ShutdownKey",
    "note_unneeded",
    "request_tracker",
]

logger = logging.getLogger("litserve")

SHUTDOWN_KEY_ENV = "LIT_SHUTDOWN_API_KEY"
# The server's own routes may move (healthcheck_path, metrics_path, ...), but never onto another's reserved path.
_FORBIDDEN_OWN_PATHS = RESERVED_PATHS | {"/"}
_DEFAULT_OWN_PATHS = {
    "healthcheck_path": "/health",
    "info_path": "/info",
    "metrics_path": "/metrics",
    "openapi_path": "/openapi.json",
    "docs_path": "/docs",
}
_NO_WEB_OPTIONS = WebOptions()

# Why each LitServe argument changes nothing here (said once, at INFO, when one is given).
_UNNEEDED = {
    "fast_queue": "requests reach workers through in-process queues (or one socket per worker process), not "
    "multiprocessing queues",
    "num_api_servers": "one HTTP server thread serves every endpoint; the workers do the heavy work",
    "api_server_worker_type": "one HTTP server thread serves every endpoint; the workers do the heavy work",
    "loop": "the worker loop follows the LitAPI's own max_batch_size, stream and enable_async",
}


@final
@dataclass(frozen=True, slots=True)
class Extensions:
    """What LitServer was given beyond the engine's settings, checked."""

    callbacks: tuple[Callback, ...] = ()
    loggers: tuple[Logger, ...] = ()
    middlewares: tuple[Middleware, ...] = ()
    mounts: tuple[tuple[str, Any], ...] = ()  # (path, ASGI app) that loggers asked to mount
    health_path: str = "/health"
    info_path: str = "/info"
    shutdown_path: str | None = None  # None: no shutdown route (404)
    track_requests: bool = False
    generate_client_file: bool | None = None  # None: run() writes client.py, start() does not
    web: WebOptions = WebOptions()  # metrics, status page, OpenAPI docs, HTTP-layer limits


def check_extensions(
    apis: Sequence[LitAPI],
    *,
    callbacks: Callback | Sequence[Callback] | None = None,
    loggers: Logger | Sequence[Logger] | None = None,
    middlewares: Sequence[Any] | None = None,
    healthcheck_path: str = "/health",
    info_path: str = "/info",
    shutdown_path: str | None = None,
    track_requests: bool = False,
    generate_client_file: bool | None = None,
    web: WebOptions = _NO_WEB_OPTIONS,
) -> Extensions:
    """LitServer's arguments of the same names, checked; a TypeError or ValueError says what to change.

    `shutdown_path` is None unless `enable_shutdown_api=True`.
    """
    if not isinstance(track_requests, bool):
        raise TypeError(f"track_requests must be True or False, got {track_requests!r}")
    if generate_client_file is not None and not isinstance(generate_client_file, bool):
        raise TypeError(f"generate_client_file must be True, False or None, got {generate_client_file!r}")
    own = {"healthcheck_path": healthcheck_path, "info_path": info_path}
    if shutdown_path is not None:
        own["shutdown_path"] = shutdown_path
    checked_loggers = check_loggers(loggers)
    mounts = tuple(mount for mount in map(mount_of, checked_loggers) if mount is not None)
    web = _yield_to_mounts(web, mounts)
    own.update(web.paths())
    _check_paths(own, [api.api_path for api in apis], mounts)
    return Extensions(
        callbacks=check_callbacks(callbacks),
        loggers=checked_loggers,
        middlewares=check_middlewares(middlewares),
        mounts=mounts,
        health_path=healthcheck_path,
        info_path=info_path,
        shutdown_path=shutdown_path,
        track_requests=track_requests,
        generate_client_file=generate_client_file,
        web=web,
    )


def check_api_paths(extensions: Extensions, apis: Sequence[LitAPI]) -> None:
    """LitAPIs swapped into a running server: a ValueError if a path clashes with its own routes or mounts."""
    own = {"healthcheck_path": extensions.health_path, "info_path": extensions.info_path, **extensions.web.paths()}
    if extensions.shutdown_path is not None:
        own["shutdown_path"] = extensions.shutdown_path
    _check_paths(own, [api.api_path for api in apis], extensions.mounts)


def _yield_to_mounts(web: WebOptions, mounts: Sequence[tuple[str, Any]]) -> WebOptions:
    """A logger's app mounted where the server's own metrics route would be (LitServe's Prometheus
    logger mounts one on /metrics) takes that path: the built-in route is then off."""
    if web.metrics_path is not None and any(path == web.metrics_path for path, _ in mounts):
        logger.info("a logger mounts an app on %s; the built-in metrics route is off", web.metrics_path)
        return dataclasses.replace(web, metrics_path=None)
    return web


def _check_path(name: str, path: Any) -> None:
    if not isinstance(path, str) or not path.startswith("/") or path == "/":
        raise ValueError(f"{name} must be a path starting with '/', e.g. '/health' or '/v1/health'; got {path!r}")
    if path.endswith("/"):
        raise ValueError(f"{name} must not end with '/', got {path!r}; write {path.rstrip('/')!r}")


def _check_paths(own: dict[str, str], api_paths: Sequence[str], mounts: Sequence[tuple[str, Any]]) -> None:
    taken = {path: f"the api_path of a LitAPI ({path!r})" for path in api_paths}
    for name, path in own.items():
        _check_path(name, path)
        if path in _FORBIDDEN_OWN_PATHS and path != _DEFAULT_OWN_PATHS.get(name):
            raise ValueError(f"{name} {path!r} is reserved by the server; pick another, e.g. '/v1{path}'")
        if path in taken:
            raise ValueError(f"{name} {path!r} is already {taken[path]}; give each its own path")
        taken[path] = f"the {name}"
    for path, app in mounts:
        _check_path("a logger's mount path", path)
        if not callable(app):
            raise TypeError(f"a logger mounts {app!r} on {path!r}, which is not an ASGI app")
        clash = [where for other, where in taken.items() if other == path or other.startswith(path + "/")]
        if clash:
            raise ValueError(f"a logger mounts an app on {path!r}, which would hide {clash[0]}; mount it elsewhere")
        taken[path] = "a logger's mount path"


def check_middlewares(middlewares: Sequence[Any] | None) -> tuple[Middleware, ...]:
    """`middlewares=[Cls, (Cls, {"option": value}), ...]` as (factory, kwargs) pairs; a TypeError otherwise.

    Each becomes `Cls(app, **kwargs)` around the app when the server starts (Starlette's convention).
    """
    if middlewares is None:
        return ()
    if not isinstance(middlewares, list):
        raise TypeError(
            "middlewares must be a list of middleware classes or (class, kwargs) tuples, e.g. "
            f"middlewares=[(GZipMiddleware, {{'minimum_size': 1000}})]; got {type(middlewares).__name__}"
        )
    return tuple(_middleware(entry) for entry in middlewares)


def _middleware(entry: Any) -> Middleware:
    if isinstance(entry, tuple):
        if len(entry) != 2 or not callable(entry[0]) or not isinstance(entry[1], Mapping):
            raise TypeError(
                f"a middleware given as a tuple must be (class, kwargs dict), e.g. (GZipMiddleware, "
                f"{{'minimum_size': 1000}}); got {entry!r}"
            )
        return entry[0], dict(entry[1])
    if not callable(entry):
        raise TypeError(f"a middleware must be an ASGI middleware class (called as cls(app)), got {entry!r}")
    return entry, {}


def check_model_metadata(metadata: Any) -> Any:
    """LitServe's rule: /info must be able to show it."""
    try:
        encode_json(metadata)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model_metadata must be JSON serializable ({exc})") from exc
    return metadata


_DEPRECATED = ("max_batch_size", "batch_timeout", "stream", "api_path", "spec")  # LitServer's; LitAPI takes them now


def legacy_arguments(given: Mapping[str, Any]) -> dict[str, Any]:
    """LitServer's `**legacy`: the deprecated per-API arguments to apply (check_apis warns), after saying
    once which of the others change nothing here. Any other name is a TypeError, as for a plain function."""
    unknown = sorted(set(given) - set(_DEPRECATED) - set(_UNNEEDED))
    if unknown:
        raise TypeError(f"LitServer() got an unexpected keyword argument {unknown[0]!r}")
    note_unneeded({name: value for name, value in given.items() if name in _UNNEEDED})
    return {name: value for name, value in given.items() if name in _DEPRECATED}


def note_unneeded(given: Mapping[str, Any]) -> None:
    """Say once, at INFO, which of LitServe's arguments (passed with a value) change nothing here, and why."""
    named = [f"{name}={value!r} ({_UNNEEDED[name]})" for name, value in given.items() if value]
    if named:
        logger.info("accepted for LitServe compatibility, not needed by this server: %s", "; ".join(named))


@final
class ShutdownKey:
    """The shutdown route's token: LIT_SHUTDOWN_API_KEY when set (read at each start), else one made for
    this server and logged once at WARNING (as LitServe does: nobody could use the route otherwise)."""

    def __init__(self) -> None:
        self._made: str | None = None

    def __repr__(self) -> str:  # never show the key
        return "ShutdownKey()"

    def current(self) -> str:
        key = os.environ.get(SHUTDOWN_KEY_ENV) or self._made
        if key:
            return key
        self._made = key = secrets.token_urlsafe(32)
        logger.warning(
            "the shutdown API is on but %s is not set; this server's shutdown key is %s "
            "(POST to the shutdown path with the header 'Authorization: Bearer <key>')",
            SHUTDOWN_KEY_ENV,
            key,
        )
        return key


def request_tracker(extensions: Extensions, runner: CallbackRunner, server: Any) -> RequestTracker | None:
    """The HTTP layer that counts requests and calls `on_request`/`on_response`, only if something needs it."""
    callbacks = extensions.callbacks
    wants_request = overrides(callbacks, EventTypes.ON_REQUEST)
    wants_response = overrides(callbacks, EventTypes.ON_RESPONSE)
    if not (extensions.track_requests or wants_request or wants_response):
        return None

    def on_request(active_requests: int | None) -> None:
        runner.trigger_event(EventTypes.ON_REQUEST.value, active_requests=active_requests, litserver=server)

    def on_response() -> None:
        runner.trigger_event(EventTypes.ON_RESPONSE.value, litserver=server)

    return RequestTracker(
        extensions.track_requests, on_request if wants_request else None, on_response if wants_response else None
    )
