"""Turning a request body into the payload `decode_request` receives, or the error that says why not."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from quart import Request

from litserve.codec import decode_json
from litserve.engine.request_queue import RequestQueue
from litserve.exceptions import INVALID_JSON, ErrorResponse, invalid_body
from litserve.request_context import UploadedFile

__all__ = ["FORM_MIMETYPES", "parse_payload", "read_payload", "refused_body", "while_coming"]

FORM_MIMETYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

T = TypeVar("T")


def refused_body(exc: ValidationError) -> ErrorResponse:
    """Why a model refused a raw body: 400 when it is not JSON at all (WIRE.md), else 422 with pydantic's errors."""
    if any(error["type"] == "json_invalid" for error in exc.errors()):
        return INVALID_JSON
    return invalid_body(exc)


async def read_payload(request: Request, body_model: type[BaseModel] | None) -> Any:
    """The parsed body (a dict, a list, a BaseModel, or a mapping of form fields and files).

    Returns an `ErrorResponse` instead when the body is not valid: 400 for JSON that does not parse
    (an empty body included), 422 when `body_model` rejects it.
    """
    # A prefix test on the raw header: parsing it fully (request.mimetype) costs more than the JSON route needs.
    if request.headers.get("Content-Type", "").lower().startswith(FORM_MIMETYPES):
        form = await request.form
        files = await request.files
        # The parser leaves a body it cannot read (multipart without a boundary) in the socket; answering
        # before it is consumed would break the keep-alive connection for the client's next request.
        await request.get_data(cache=True)  # the rest of it, bounded by the read timeout
        fields: dict[str, Any] = form.to_dict()
        for name, upload in files.items():
            fields[name] = UploadedFile(upload.filename, upload.content_type, upload.read())
        if body_model is None:
            return fields
        try:
            return body_model.model_validate(fields)
        except ValidationError as exc:
            return invalid_body(exc)
    return parse_payload(await request.get_data(cache=False, as_text=False), body_model)


def parse_payload(body: str | bytes, body_model: type[BaseModel] | None) -> Any:
    """A JSON body parsed (and validated by `body_model`), or the `ErrorResponse` that refuses it."""
    if body_model is not None:
        try:
            return body_model.model_validate_json(body)
        except ValidationError as exc:
            return refused_body(exc)
    try:
        return decode_json(body)
    except ValueError:
        return INVALID_JSON


async def while_coming(queue: RequestQueue[Any], reading: Awaitable[T]) -> T:
    """Read an admitted request's body while its endpoint's workers know it is on its way, so a batch
    being gathered waits for it (the adaptive batch window, `engine.batcher`). The request is put
    right after, before the route awaits anything else."""
    queue.coming += 1
    try:
        return await reading
    finally:
        queue.coming -= 1
