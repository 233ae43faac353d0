"""The Quart app factory: one app per server start, routes wired to the engine's endpoints."""

from __future__ import annotations

from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException as WerkzeugHTTPException

from litserve.specs.openai import OpenAISpec
from litserve.web.context import WebContext
from litserve.web.docs import add_docs_routes
from litserve.web.lean import LeanRoutes, refused, unexpected
from litserve.web.metrics import add_metrics_route
from litserve.web.openai_routes import ChatRoute, models
from litserve.web.routes import PredictRoute, error, guarded, health, info, root
from litserve.web.shutdown import shutdown_view
from litserve.web.stack import ASGIApp, build_stack
from litserve.web.status_page import add_status_page

__all__ = ["create_app", "serving_stack"]

_PREDICT_ROUTES = "litserve.predict_routes"  # app.extensions key: {path: PredictRoute}, for `web.lean`


def create_app(context: WebContext) -> Quart:
    """Build the app: each endpoint's POST route plus `/`, health, info and (when enabled) shutdown."""
    app = Quart("litserve.web")
    # Streams and long predicts are bounded by our own timeout, not Quart's response timeout.
    app.config["RESPONSE_TIMEOUT"] = None
    # Quart answers 413 for a larger body, with or without Content-Length (chunked bodies are counted).
    app.config["MAX_CONTENT_LENGTH"] = context.max_payload_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = context.max_payload_bytes
    # A body not received within read_timeout is a 408 (RequestTimeout, answered from our table below).
    app.config["BODY_TIMEOUT"] = context.options.read_timeout_s
    chat_models = []
    predict_routes: dict[str, PredictRoute] = app.extensions.setdefault(_PREDICT_ROUTES, {})
    for endpoint in context.endpoints:
        endpoint.counters.inspector = None if context.inspector is None else context.inspector.recorder(endpoint.path)
        route: PredictRoute | ChatRoute
        if isinstance(endpoint.api.spec, OpenAISpec):
            route = ChatRoute(endpoint, context)
            chat_models.append(endpoint.api.spec.model_name or type(endpoint.api).__name__)
        else:
            route = predict_routes[endpoint.path] = PredictRoute(endpoint, context)
        app.add_url_rule(endpoint.path, route.name, view_func=route.handle, methods=["POST"])
    if chat_models:
        listing = guarded(context, models(context, chat_models), accept_bearer=True)
        app.add_url_rule("/v1/models", view_func=listing, methods=["GET"])
    app.add_url_rule("/", view_func=guarded(context, root), methods=["GET"])
    app.add_url_rule(context.health_path, view_func=health(context), methods=["GET"])
    app.add_url_rule(context.info_path, view_func=guarded(context, info(context)), methods=["GET"])
    add_docs_routes(app, context)
    if context.shutdown is not None:
        app.add_url_rule(context.shutdown.path, view_func=shutdown_view(context.shutdown), methods=["POST"])
    add_status_page(app, context)
    add_metrics_route(app, context)

    _answer_errors(app, context)
    return app


def _answer_errors(app: Quart, context: WebContext) -> None:
    """Quart's own refusals and unexpected errors, answered from the one status-code table."""

    @app.errorhandler(WerkzeugHTTPException)
    async def http_error(exc: WerkzeugHTTPException) -> Response:
        # Quart's own refusals (404, 405, 413, ...), answered from the one status-code table.
        response = error(refused(context, request.path, request.method, exc.code))
        allow = dict(exc.get_headers()).get("Allow")
        if allow:  # 405 says which methods the path takes
            response.headers["Allow"] = allow
        return response

    @app.errorhandler(Exception)
    async def unexpected_error(exc: Exception) -> Response:
        # Handled here so Quart never logs through its own logger (which would add a handler).
        return error(unexpected(context, request.path, request.method, exc))


def serving_stack(app: Quart, context: WebContext) -> ASGIApp:
    """What Hypercorn serves: the app behind its lean predict routes (`web.lean`), inside users' middlewares,
    loggers' mounts and request tracking."""
    served = LeanRoutes(app, app.extensions.get(_PREDICT_ROUTES, {}), context)
    return build_stack(served, context.middlewares, context.mounts, context.tracker, context.own_paths)
