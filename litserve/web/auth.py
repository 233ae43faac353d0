"""Who may call: the API key check (constant time) or the LitAPI's own `authorize` hook."""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Callable
from typing import Any, final

from litserve.exceptions import INVALID_API_KEY, UNAUTHORIZED, ErrorResponse, error_response, is_client_error
from litserve.request_context import RequestContext

__all__ = ["API_KEY_HEADER", "ApiKeyCheck", "bearer_token", "run_authorize"]

API_KEY_HEADER = "X-API-Key"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (how OpenAI's clients send the key), else None."""
    if authorization is None or authorization[:7].lower() != "bearer ":
        return None
    return authorization[7:].strip()


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

    def check_either(self, given: str | None, authorization: str | None) -> ErrorResponse | None:
        """For OpenAI routes: the X-API-Key header, or else the `Authorization: Bearer` token, must match."""
        if given is not None and self.check(given) is None:
            return None
        return self.check(bearer_token(authorization))

    def token(self, purpose: str) -> str:
        """A value derived from the key for one `purpose` (HMAC-SHA256): what a cookie may hold instead of
        the key itself. It grants only what checks that `purpose`, and changes when the key does."""
        return hmac.new(self._key, purpose.encode(), "sha256").hexdigest()

    def is_token(self, given: str | None, purpose: str) -> bool:
        """Whether `given` is `token(purpose)`, compared in constant time."""
        return given is not None and hmac.compare_digest(given.encode(), self.token(purpose).encode())


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
