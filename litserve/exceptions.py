"""Named errors and the one table that turns an error into an HTTP answer.

Hierarchy::

    Exception
    ├── HTTPException                 raised by user hooks: "answer this request with status + detail"
    └── LitServeError                 base of every error litserve raises itself
        ├── ServerStateError          a lifecycle call made in the wrong state (e.g. start() after a failure)
        ├── ServerStartError          start() could not bring the server up
        │   ├── PortInUseError        the address is taken by another program (also an OSError)
        │   └── WorkerSetupError      a worker's LitAPI.setup() raised; the user's error is the __cause__
        ├── QueueFullError            an endpoint's request queue is at max_queue_size
        ├── QueueClosedError          the queue no longer takes requests (server stopping)
        ├── RequestFailedError        a request made through Client or LitServer.predict got an error answer
        └── ReplayError               LitServer.replay cannot run that request (not kept, payload summarised)

Request-time failures reach HTTP only through `error_response`, which never leaks internals.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from pydantic import ValidationError

__all__ = [
    "HTTPException",
    "LitServeError",
    "PortInUseError",
    "QueueClosedError",
    "QueueFullError",
    "ReplayError",
    "RequestFailedError",
    "ServerStartError",
    "ServerStateError",
    "WorkerSetupError",
]


class HTTPException(Exception):
    """Raise from any LitAPI hook to answer the request with `status_code` and `{"detail": detail}`.

    Example:
        >>> def decode_request(self, request):
        ...     if "input" not in request:
        ...         raise HTTPException(400, "missing 'input'")
    """

    def __init__(self, status_code: int, detail: Any = None) -> None:
        if detail is None:
            detail = _reason(status_code)
        super().__init__(status_code, detail)
        self.status_code = status_code
        self.detail = detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code!r}, detail={self.detail!r})"

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}"


class LitServeError(Exception):
    """Base of every error litserve raises itself."""


class ServerStateError(LitServeError):
    """A lifecycle method was called in a state that does not allow it."""


class ServerStartError(LitServeError):
    """start() could not bring the server up; nothing it started is left running."""


class PortInUseError(ServerStartError, OSError):
    """The host and port are held by another program (a LitServer of this process is replaced instead)."""


class WorkerSetupError(ServerStartError):
    """A worker's `LitAPI.setup(device)` raised; the original exception is chained as `__cause__`."""


class QueueFullError(LitServeError):
    """The endpoint's request queue holds `max_queue_size` requests already."""


class QueueClosedError(LitServeError):
    """The request queue was closed: the server is stopping, or (`answer`) the endpoint can serve no more."""

    def __init__(self, message: str, answer: ErrorResponse | None = None) -> None:
        super().__init__(message)
        self.answer = answer


class RequestFailedError(LitServeError):
    """The server answered a request with an error: `status_code` and `detail` are what it said.

    Raised by `litserve.Client` and `LitServer.predict`. A stream that fails after its first chunk
    raises it while iterating, with the status its error line carries.
    """

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail

    def __reduce__(self) -> tuple[type[RequestFailedError], tuple[int, Any]]:
        # Pickled as its arguments (not its message), so it crosses processes: Ray returns it from a replica.
        return type(self), (self.status_code, self.detail)


class ReplayError(LitServeError, LookupError):
    """`LitServer.replay` cannot run that request: the inspector is off, the request is no longer kept, its
    payload was only summarised (larger than `inspect_payload_bytes`), or its endpoint speaks a spec.

    Stability: beta.
    """


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """What the client sees for a failed request: a status and a JSON-able detail."""

    status: int
    detail: Any
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise ValueError(f"an error response needs a 4xx or 5xx status, got {self.status}")


# The one status-code table. Every answer the server itself decides is named here or built below
# (`invalid_body`, `refusal`); a route, the web app and the engine never spell a status of their own.
INVALID_JSON = ErrorResponse(400, "Request body is not valid JSON")
_CLOSE = (("Connection", "close"),)  # answered before the body was read: the connection cannot be reused
MALFORMED_HOST = ErrorResponse(400, "Bad Request: malformed Host header", _CLOSE)
INVALID_API_KEY = ErrorResponse(
    401, "Invalid API Key. Check that you are passing a correct 'X-API-Key' in your header."
)
UNAUTHORIZED = ErrorResponse(401, "Unauthorized")  # a LitAPI's own authorize() said no
INVALID_SHUTDOWN_TOKEN = ErrorResponse(  # POST /shutdown without LIT_SHUTDOWN_API_KEY as a bearer token
    401,
    "Invalid Bearer token for Shutdown API. "
    "Check that you are passing a correct 'Authorization: Bearer <SHUTDOWN_API_KEY>' in your header.",
    (("WWW-Authenticate", "Bearer"),),
)
HOST_NOT_ALLOWED = ErrorResponse(403, "Forbidden: Host not allowed", _CLOSE)  # the DNS-rebinding guard
NOT_FOUND = ErrorResponse(404, "Not Found")
METHOD_NOT_ALLOWED = ErrorResponse(405, "Method Not Allowed")
BODY_TIMED_OUT = ErrorResponse(408, "Request body not received in time", _CLOSE)  # read_timeout passed
PAYLOAD_TOO_LARGE = ErrorResponse(413, "Payload too large")
INTERNAL_ERROR = ErrorResponse(500, "Internal server error")
BATCH_SIZE_MISMATCH = ErrorResponse(500, "Batch size mismatch")
WORKER_PROCESS_DIED = ErrorResponse(500, "Internal server error")  # its worker process exited while holding it
SERVER_OVERLOADED = ErrorResponse(503, "Server is overloaded", (("Retry-After", "1"),))
SHUTTING_DOWN = ErrorResponse(503, "Server is shutting down")
# A body still arriving when stop() began, or a request Hypercorn cancels as the graceful period ends.
STOPPED_READING = ErrorResponse(503, SHUTTING_DOWN.detail, (("Connection", "close"),))
# Thread mode: every worker of the endpoint was taken out by a sticky device error (engine.device_errors).
NO_WORKER_LEFT = ErrorResponse(503, "No worker can serve this endpoint: its device failed; restart the server")
NOT_READY = ErrorResponse(503, "not ready")
REQUEST_TIMED_OUT = ErrorResponse(504, "Request timed out")
DOCS_UNAVAILABLE = ErrorResponse(  # GET /docs when the package with Swagger UI's files is not installed
    501, "The API docs page needs Swagger UI's files: pip install flask-swagger-ui (the document is at /openapi.json)"
)

_REFUSALS = {answer.status: answer for answer in (NOT_FOUND, METHOD_NOT_ALLOWED, BODY_TIMED_OUT, PAYLOAD_TOO_LARGE)}


def invalid_body(exc: ValidationError) -> ErrorResponse:
    """422 with pydantic's own errors, without documentation URLs or context objects that may not be JSON-able."""
    return ErrorResponse(422, exc.errors(include_url=False, include_context=False))


def refusal(status: int) -> ErrorResponse:
    """The answer for a request the web framework refused before our routes ran (404, 405, 413, ...)."""
    if not 400 <= status <= 599:
        return INTERNAL_ERROR
    return _REFUSALS.get(status) or ErrorResponse(status, _reason(status))


def error_response(exc: BaseException) -> ErrorResponse:
    """Map an exception raised while serving a request to what the client sees.

    Our `HTTPException` and any exception that carries `status_code` and `detail` (FastAPI and
    Starlette's, with their `headers`) or Werkzeug's `code` and `description` keep their status and
    detail. Every other exception is a 500 whose body says nothing about the cause; the caller logs
    the traceback.
    """
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and hasattr(exc, "detail"):
        detail = exc.detail
    else:
        status = getattr(exc, "code", None)
        detail = getattr(exc, "description", None)
        if not (isinstance(status, int) and hasattr(exc, "description")):
            return INTERNAL_ERROR
    if not 400 <= status <= 599:
        return INTERNAL_ERROR
    return ErrorResponse(status, detail if detail is not None else _reason(status), _headers_of(exc))


def _headers_of(exc: BaseException) -> tuple[tuple[str, str], ...]:
    """Headers an HTTP exception asks for (Starlette's and FastAPI's `headers`, e.g. WWW-Authenticate)."""
    headers = getattr(exc, "headers", None)
    if not isinstance(headers, Mapping):
        return ()
    pairs = ((str(name), str(value)) for name, value in headers.items())
    return tuple((name, value) for name, value in pairs if not _BREAKS_A_LINE.search(name + value))


_BREAKS_A_LINE = re.compile(r"[\r\n\x00]")  # a header that would end the header block is dropped


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def is_client_error(exc: BaseException) -> bool:
    """True when `exc` was raised on purpose to answer the request (so it is not logged as a crash)."""
    return error_response(exc) is not INTERNAL_ERROR
