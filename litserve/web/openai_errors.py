"""OpenAI's error envelope: how OpenAI-compatible routes answer a failure, whole or in the middle of a stream."""

from __future__ import annotations

from typing import Any

from litserve.codec import encode_json
from litserve.engine.messages import Outcome

__all__ = ["openai_error", "sse_error_event"]

_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "forbidden",
    404: "not_found",
    413: "payload_too_large",
    422: "invalid_request",
    429: "rate_limit_exceeded",
    500: "internal_error",
    503: "server_overloaded",
    504: "timeout",
}


def _message(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # pydantic's errors: "messages.0.role: Field required; ..."
        parts = []
        for error in detail:
            if isinstance(error, dict):
                where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
                parts.append(f"{where}: {error.get('msg', '')}" if where else str(error.get("msg", "")))
        if parts:
            return "; ".join(parts)
    return str(detail)


def _envelope(outcome: Outcome) -> dict[str, Any]:
    status = outcome.status
    kind = "invalid_request_error" if status < 500 else "server_error"
    error: dict[str, Any] = {
        "message": _message(outcome.detail),
        "type": kind,
        "param": None,
        "code": _CODES.get(status, "internal_error" if status >= 500 else "invalid_request"),
    }
    # `detail` as every other route gives it (pydantic's full list for a 422): callers written for LitServe's
    # `{"detail": ...}` bodies keep working, and OpenAI's clients read `error`.
    return {"error": error, "detail": outcome.detail}


def openai_error(outcome: Outcome) -> Outcome:
    """A failure Outcome with OpenAI's `{"error": {"message", "type", "param", "code"}}` body, same status."""
    return Outcome(outcome.status, encode_json(_envelope(outcome)), headers=outcome.headers, detail=outcome.detail)


def sse_error_event(outcome: Outcome) -> bytes:
    """The event that ends a started SSE stream on a failure; the official client raises it as an APIError."""
    return b"data: " + encode_json(_envelope(outcome)) + b"\n\n"
