"""Who may call: the API key check (constant time) or the LitAPI's own `authorize` hook."""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Callable
from typing import Any, final

from litserve.exceptions import INVALID_API_KEY, UNAUTHORIZED, ErrorResponse, error_response, is_client_error
from litserve.request_context import RequestContext

__all__ = ["API_KEY_HEADER", "ApiKeyCheck", "run_authorize"]

API_KEY_HEADER = "X-API-Key"


@final
class ApiKeyCheck:
    """Compares the `X-API-Key` header with the server's key in constant time."""

    __slots__ = ("_key",)

    def __init__(self, key: str) -> None:
        self._key = key.encode()

    def check(self, given: str | None) -> ErrorResponse | None:
        """None when `given` (the X-API-Key header's value) matches, else the 401 answer."""
        if given is not None and hmac.compare_digest(given.encode(), self._key):
            return None
        return INVALID_API_KEY


async def run_authorize(authorize: Callable[[RequestContext], Any], context: RequestContext) -> ErrorResponse | None:
    """Call a LitAPI's `authorize(request)` hook: truthy allows, falsy is 401, HTTPException its status.

    Runs on the HTTP loop, so it must be quick (it may be `async def` to await something).
    """
    try:
        verdict = authorize(context)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except Exception as exc:
        if is_client_error(exc):
            return error_response(exc)
        raise
    return None if verdict else UNAUTHORIZED
