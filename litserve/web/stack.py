"""The ASGI layers around the Quart app: users' middlewares, loggers' mounted apps, request tracking.

Built only from what the server was given: with none of them, Hypercorn serves the Quart app itself
and a request crosses no extra layer. Outermost first:

    lifespan -> the Quart app directly (so a middleware can never keep the server from starting)
    http     -> users' middlewares (the last one of the list outermost, as Starlette's add_middleware)
             -> apps mounted by loggers -> request tracking -> the Quart app
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any, final

__all__ = ["ASGIApp", "Middleware", "RequestTracker", "build_stack"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]  # (scope, receive, send); loose, so any framework's app fits
Middleware = tuple[Callable[..., Any], Mapping[str, Any]]  # cls(app, **kwargs)


@final
class RequestTracker:
    """Counts requests being served and announces each one (LitServe's `track_requests`, `on_request`).

    `active` is written on the HTTP loop only and may be read from any thread. `skip` holds the paths
    of the server's own routes (health, info, shutdown, ...), which are neither counted nor announced.
    """

    def __init__(
        self,
        counting: bool,
        on_request: Callable[[int | None], None] | None = None,
        on_response: Callable[[], None] | None = None,
    ) -> None:
        self.counting = counting
        self.active = 0
        self._on_request = on_request
        self._on_response = on_response

    def wrap(self, app: ASGIApp, skip: frozenset[str]) -> ASGIApp:
        on_request, on_response, counting = self._on_request, self._on_response, self.counting

        async def tracked(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] in skip:
                await app(scope, receive, send)
                return
            self.active += 1
            try:
                if on_request is not None:
                    on_request(self.active if counting else None)
                await app(scope, receive, send)
            finally:
                self.active -= 1
            if on_response is not None:
                on_response()

        return tracked


def build_stack(
    app: ASGIApp,
    middlewares: Sequence[Middleware] = (),
    mounts: Sequence[tuple[str, ASGIApp]] = (),
    tracker: RequestTracker | None = None,
    own_paths: frozenset[str] = frozenset(),
) -> ASGIApp:
    """`app` wrapped in the layers asked for; `app` itself when none are."""
    if not middlewares and not mounts and tracker is None:
        return app
    served = app if tracker is None else tracker.wrap(app, own_paths | {path for path, _ in mounts})
    if mounts:
        served = _mounted(served, mounts)
    for factory, kwargs in middlewares:
        served = factory(served, **kwargs)
    return _lifespan_to(app, served)


def _lifespan_to(app: ASGIApp, served: ASGIApp) -> ASGIApp:
    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        await (app if scope["type"] == "lifespan" else served)(scope, receive, send)

    return dispatch


def _mounted(app: ASGIApp, mounts: Sequence[tuple[str, ASGIApp]]) -> ASGIApp:
    """Requests under a mount's path go to its app, with `root_path` extended as ASGI asks."""

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        for prefix, mounted in mounts:
            if path == prefix or path.startswith(prefix + "/"):
                await mounted({**scope, "root_path": scope.get("root_path", "") + prefix}, receive, send)
                return
        await app(scope, receive, send)

    return dispatch
