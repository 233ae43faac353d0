"""`GET /metrics`: the server's figures in Prometheus' text format (`litserve.metrics` builds them).

One `CollectorRegistry` per app (so per server start), never prometheus_client's global one. The route
needs the API key like every route but `/health`; `LitServer(metrics_path=None)` leaves it out (404),
another path moves it. A scrape runs on the HTTP loop and costs one status snapshot; the request path
never touches prometheus_client. prometheus_client is imported only when the route is on.
"""

from __future__ import annotations

from typing import Any

from quart import Quart, Response

from litserve.web.context import WebContext
from litserve.web.routes import guarded

__all__ = ["CONTENT_TYPE", "REGISTRY_KEY", "add_metrics_route"]

REGISTRY_KEY = "litserve.metrics"  # app.extensions[REGISTRY_KEY]: this app's registry (tests read it)
# The text format every Prometheus version reads (our names need none of the newer format's escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def add_metrics_route(app: Quart, context: WebContext) -> None:
    """Serve `context.options.metrics_path` (if on) from a registry of this app's own.

    The registry's collector is unregistered when the app stops serving (the server stopped).
    """
    path = context.options.metrics_path
    if path is None:
        return
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from litserve.metrics import StatusCollector

    registry = CollectorRegistry(auto_describe=False)
    collector = StatusCollector(context.status)
    registry.register(collector)
    app.extensions[REGISTRY_KEY] = registry

    async def metrics() -> Response:
        return Response(generate_latest(registry), status=200, content_type=CONTENT_TYPE)

    async def unregister() -> None:
        try:
            registry.unregister(collector)
        except KeyError:  # already gone: an in-process client's lifespan may end the app twice
            pass

    app.after_serving(unregister)
    view: Any = guarded(context, metrics)
    app.add_url_rule(path, "litserve_metrics", view_func=view, methods=["GET"])
