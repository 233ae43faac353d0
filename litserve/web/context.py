"""What the web layer needs from the server, passed in as one value (the web layer imports no server)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, final

from litserve.engine.messages import Outcome
from litserve.engine.pool import Endpoint
from litserve.exceptions import ErrorResponse
from litserve.inspector import RequestLog
from litserve.status import ErrorLog, ServerStatus
from litserve.web.auth import ApiKeyCheck
from litserve.web.options import WebOptions
from litserve.web.shutdown import ShutdownApi
from litserve.web.stack import ASGIApp, Middleware, RequestTracker

__all__ = ["Gate", "WebContext", "count_refusal"]


@final
class Gate:
    """Whether routes still take new requests. Closed on the caller's thread at stop; read on the loop."""

    __slots__ = ("is_open",)

    def __init__(self) -> None:
        self.is_open = True

    def close(self) -> None:
        self.is_open = False


@dataclass(frozen=True, slots=True)
class WebContext:
    """Everything the routes read: endpoints, limits, auth, readiness, the /info document, where the
    server's own routes live, and the ASGI layers around the app (see `web.stack`)."""

    endpoints: Sequence[Endpoint]
    timeout_s: float | None
    gate: Gate
    status: Callable[[], ServerStatus]  # a fresh snapshot (health, metrics, the status page read it)
    info: Callable[[], dict[str, Any]]
    errors: ErrorLog
    api_key: ApiKeyCheck | None = None
    max_payload_bytes: int | None = None
    health_path: str = "/health"
    info_path: str = "/info"
    shutdown: ShutdownApi | None = None  # POST shutdown_path, when enable_shutdown_api=True
    middlewares: Sequence[Middleware] = ()
    mounts: Sequence[tuple[str, ASGIApp]] = ()
    tracker: RequestTracker | None = None
    options: WebOptions = WebOptions()  # metrics, status page, OpenAPI docs, HTTP-layer limits
    inspector: RequestLog | None = None  # the server's request inspector (None: off)

    def is_ready(self) -> bool:
        return self.status().is_ready

    @property
    def own_paths(self) -> frozenset[str]:
        """The paths of the server's own routes (not of an endpoint)."""
        paths = {"/", self.health_path, self.info_path}
        if self.shutdown is not None:
            paths.add(self.shutdown.path)
        paths.update(self.options.paths().values())
        return frozenset(paths)


def count_refusal(endpoints: Iterable[Endpoint], path: str, method: str, answer: ErrorResponse) -> None:
    """An answer given before or outside a predict route (the connection guard, Quart's own refusals such
    as a 413 while reading the body) counts for the endpoint whose POST it answered: its outcome and its
    status code, as a route's own answers are counted."""
    if method != "POST":
        return
    for endpoint in endpoints:
        if endpoint.path == path:
            endpoint.counters.count(Outcome.failure(answer).verdict)
            endpoint.counters.count_code(answer.status)
            if endpoint.counters.inspector is not None:
                endpoint.counters.inspector.answered(Outcome.failure(answer), 0.0)
            return
