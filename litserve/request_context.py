"""RequestContext: what a hook can learn about its HTTP request, and a place to pass data between hooks."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, final

__all__ = ["RequestContext", "UploadedFile"]


@final
class RequestContext(dict[str, Any]):
    """Per-request context a hook receives when it declares a `context` parameter.

    It is a dict, as LitServe's `context` is, so hooks can hand values to later hooks of the same
    request (`context["start"] = ...` in decode_request, read it in encode_response). It also carries
    the request's method, path, query parameters, headers (names lower-cased) and client address.
    Only built for endpoints whose hooks ask for it, so other endpoints pay nothing.

    Example:
        >>> class Echo(LitAPI):
        ...     def decode_request(self, request, context):
        ...         context["user"] = context.headers.get("x-user", "anonymous")
        ...         return request
        ...     def predict(self, x, context):
        ...         return {"user": context["user"], "q": context.query_params.get("q")}

    In a batch, `predict` and `unbatch` receive the list of the batch's contexts.

    Stability: beta.
    """

    __slots__ = ("client", "headers", "method", "path", "query_params")

    def __init__(
        self,
        method: str,
        path: str,
        query_params: Mapping[str, str],
        headers: Mapping[str, str],
        client: str | None,
    ) -> None:
        super().__init__()
        self.method = method
        self.path = path
        self.query_params = dict(query_params)
        self.headers = dict(headers)
        self.client = client

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled when a request crosses to a worker process: keep the attributes and the dict items.
        return (
            RequestContext,
            (self.method, self.path, self.query_params, self.headers, self.client),
            None,
            None,
            iter(self.items()),
        )

    def __repr__(self) -> str:
        return f"RequestContext({self.method} {self.path}, state={dict.__repr__(self)})"


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file from a multipart request, as `decode_request` receives it: `request["image"].read()`.

    Held in memory (bodies are bounded by `max_payload_size`), so it can cross to a worker process.

    Stability: beta.
    """

    filename: str | None
    content_type: str | None
    data: bytes

    def read(self) -> bytes:
        return self.data

    @property
    def file(self) -> io.BytesIO:
        """A fresh file object over the data (as Starlette's `UploadFile.file` is used)."""
        return io.BytesIO(self.data)

    @property
    def size(self) -> int:
        return len(self.data)
