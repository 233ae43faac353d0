"""`POST /shutdown` (LitServe's `enable_shutdown_api`): stop the server over HTTP, with a bearer token."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, final

from quart import Response, request

from litserve.codec import error_body
from litserve.exceptions import INVALID_SHUTDOWN_TOKEN

__all__ = ["ShutdownApi", "shutdown_view"]


@final
@dataclass(frozen=True, slots=True)
class ShutdownApi:
    """Where the route lives, the token it wants, and how it stops the server (without waiting for it)."""

    path: str
    token: str
    stop: Callable[[], None]

    def __repr__(self) -> str:  # never show the token
        return f"ShutdownApi(path={self.path!r})"


def is_authorized(header: str | None, token: str) -> bool:
    """Whether an `Authorization` header carries `Bearer <token>` (compared in constant time)."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def shutdown_view(api: ShutdownApi) -> Any:
    async def shutdown() -> Response:
        if not is_authorized(request.headers.get("Authorization"), api.token):
            denied = INVALID_SHUTDOWN_TOKEN
            headers = dict(denied.headers)
            return Response(error_body(denied.detail), denied.status, headers, content_type="application/json")
        api.stop()  # hands the stop to a helper thread, so this answer still goes out
        return Response("Server is initiating graceful shutdown.", status=200, content_type="text/plain")

    return shutdown
