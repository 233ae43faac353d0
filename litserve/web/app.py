"""The Quart app factory: one app per server start, routes wired to the engine's endpoints."""

from __future__ import annotations

import logging

from quart import Quart, Response
from werkzeug.exceptions import HTTPException as WerkzeugHTTPException

from litserve.exceptions import INTERNAL_ERROR, PAYLOAD_TOO_LARGE, ErrorResponse
from litserve.web.context import WebContext
from litserve.web.routes import PredictRoute, error, health, info, root

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(context: WebContext) -> Quart:
    """Build the app: each endpoint's POST route plus `/`, `/health` and `/info`."""
    app = Quart("litserve.web")
    # Streams and long predicts are bounded by our own timeout, not Quart's response timeout.
    app.config["RESPONSE_TIMEOUT"] = None
    for endpoint in context.endpoints:
        route = PredictRoute(endpoint, context)
        app.add_url_rule(endpoint.path, route.name, view_func=route.handle, methods=["POST"])
    app.add_url_rule("/", view_func=root, methods=["GET"])
    app.add_url_rule("/health", view_func=health(context), methods=["GET"])
    app.add_url_rule("/info", view_func=info(context), methods=["GET"])

    @app.errorhandler(WerkzeugHTTPException)
    async def http_error(exc: WerkzeugHTTPException) -> Response:
        status = exc.code or INTERNAL_ERROR.status
        if status == PAYLOAD_TOO_LARGE.status:
            return error(PAYLOAD_TOO_LARGE)
        return error(ErrorResponse(status, exc.name))

    @app.errorhandler(Exception)
    async def unexpected_error(exc: Exception) -> Response:
        # Handled here so Quart never logs through its own logger (which would add a handler).
        logger.error("unexpected error while answering a request", exc_info=exc)
        return error(INTERNAL_ERROR)

    return app
