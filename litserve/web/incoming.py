"""A request as a predict route reads it, whichever layer carries it: Quart's, or the lean ASGI route's.

`PredictRoute` takes every decision (admission, payload, streaming, counting) once, against `Incoming`.
Quart's view hands it `QuartIncoming` (the request Quart parsed); `web.lean` hands it its own, read
straight from the ASGI scope. Both must read a request the same way: the lean one is checked against
Quart's in the tests (same context, same headers, same answers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, final

from pydantic import BaseModel
from quart import request

from litserve.request_context import RequestContext
from litserve.web.validation import read_payload

__all__ = ["QUART_INCOMING", "Incoming", "QuartIncoming"]


class Incoming(Protocol):
    """What a route reads of its request. Loop thread only.

    Stability: internal.
    """

    @property
    def scope(self) -> Mapping[str, Any]:
        """The request's ASGI scope (the connection guard's client watch lives there)."""
        ...

    def header(self, name: str) -> str | None:
        """The first value of the header `name` (any case), or None."""
        ...

    def context(self) -> RequestContext:
        """The request's `RequestContext` (method, path, query, headers with lower-case names, client)."""
        ...

    async def payload(self, body_model: type[BaseModel] | None) -> Any:
        """The parsed body, or the `ErrorResponse` that refuses it (see `validation.read_payload`).

        Raises Werkzeug's `RequestEntityTooLarge` (413) and `RequestTimeout` (408) as Quart does.
        """
        ...


@final
class QuartIncoming:
    """The request of the Quart view being served (Quart's `request` context variable)."""

    __slots__ = ()

    @property
    def scope(self) -> Mapping[str, Any]:
        return request.scope

    def header(self, name: str) -> str | None:
        return request.headers.get(name)

    def context(self) -> RequestContext:
        headers = {name.lower(): value for name, value in request.headers.items()}
        return RequestContext(request.method, request.path, request.args, headers, request.remote_addr or None)

    async def payload(self, body_model: type[BaseModel] | None) -> Any:
        return await read_payload(request, body_model)


QUART_INCOMING = QuartIncoming()
