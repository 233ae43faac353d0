"""The OpenAPI 3.1 document of a running server, from what its endpoints declare (built once per start).

Each LitAPI endpoint is a POST whose request schema is its body model (`decode_request`'s pydantic
annotation, or its spec's request model) and whose answer schema is `encode_response`'s pydantic return
annotation; without them both are free-form JSON. The error answers come from the one status-code table
(`litserve.exceptions`): each listed answer's status, detail and headers, and its body as the routes
encode it. The server's own GET routes are read from the WebContext, so moved or disabled routes show as
they are served. Schemas are pydantic's JSON Schema (draft 2020-12, which OpenAPI 3.1 uses as it is),
with every model under `components/schemas`.

Why not quart-schema: it documents view functions through decorators and attributes on them (our views
are bound methods built per start), wraps `app.make_response` for every answer (our hot path), rebuilds
the document per request, and cannot say NDJSON or Server-Sent Events; its pydantic part is the same
`model_json_schema` call used here.
"""

from __future__ import annotations

import inspect
import json
import logging
import typing
from collections import abc
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from importlib import metadata
from typing import Any, Literal

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from pydantic.json_schema import models_json_schema

from litserve.api import LitAPI
from litserve.codec import error_body
from litserve.engine.messages import Outcome
from litserve.engine.pool import Endpoint
from litserve.exceptions import (
    BATCH_SIZE_MISMATCH,
    INTERNAL_ERROR,
    INVALID_API_KEY,
    INVALID_JSON,
    INVALID_SHUTDOWN_TOKEN,
    NOT_READY,
    PAYLOAD_TOO_LARGE,
    REQUEST_TIMED_OUT,
    SERVER_OVERLOADED,
    SHUTTING_DOWN,
    UNAUTHORIZED,
    ErrorResponse,
    invalid_body,
)
from litserve.specs.openai import OpenAISpec
from litserve.specs.openai_embedding import OpenAIEmbeddingSpec
from litserve.web.auth import API_KEY_HEADER
from litserve.web.context import WebContext
from litserve.web.openai_errors import openai_error
from litserve.web.openapi_models import ChatCompletion, EmbeddingList, HTTPError, HTTPValidationError, OpenAIErrorBody

__all__ = ["API_KEY_SCHEME", "BEARER_SCHEME", "OPENAPI_VERSION", "openapi_document"]

logger = logging.getLogger(__name__)

OPENAPI_VERSION = "3.1.0"
API_KEY_SCHEME = "APIKeyHeader"  # the name Swagger UI's "Authorize" dialog shows
BEARER_SCHEME = "HTTPBearer"  # OpenAI routes also take the key as `Authorization: Bearer <key>`
_SHUTDOWN_SCHEME = "ShutdownBearer"
_JSON, _NDJSON, _SSE = "application/json", "application/x-ndjson", "text/event-stream"
_TEXT, _HTML, _BYTES = "text/plain", "text/html", "application/octet-stream"
_FREE_FORM_OBJECT = {"type": "object", "additionalProperties": True, "description": "Any JSON object"}
_ANY_JSON: dict[str, Any] = {"description": "Any JSON value: what encode_response returned"}
_Mode = Literal["validation", "serialization"]
_ERROR_MODELS: tuple[tuple[type[BaseModel], _Mode], ...] = (
    (HTTPError, "serialization"),
    (HTTPValidationError, "serialization"),
    (OpenAIErrorBody, "serialization"),
)


class _Schemas:
    """Every model's JSON Schema under components/schemas, made in one pydantic call (shared `$defs`).

    A model pydantic cannot describe (e.g. a field of an arbitrary class) is documented as free-form JSON
    and logged: the docs never keep a server from starting.
    """

    def __init__(self, models: Iterable[tuple[type[BaseModel], _Mode]]) -> None:
        unique = [entry for entry in dict.fromkeys(models) if _is_describable(*entry)]
        refs, document = models_json_schema(unique, ref_template="#/components/schemas/{model}")
        self._refs = refs
        self.components: dict[str, Any] = document.get("$defs", {})

    def ref(self, model: type[BaseModel], mode: _Mode = "serialization") -> dict[str, Any]:
        ref = self._refs.get((model, mode))
        return _ANY_JSON if ref is None else dict(ref)


def _is_describable(model: type[BaseModel], mode: _Mode) -> bool:
    try:
        model.model_json_schema(mode=mode)
    except Exception as exc:  # pydantic's PydanticInvalidForJsonSchema, or a user's schema hook failing
        logger.warning("the OpenAPI document shows %s as free-form JSON: %s", model.__name__, exc)
        return False
    return True


def openapi_document(context: WebContext) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the server `context` describes (tens of ms with the OpenAI models: keep it)."""
    schemas = _Schemas(_models(context.endpoints))
    paths: dict[str, Any] = {}
    for endpoint in context.endpoints:
        paths[endpoint.path] = {"post": _endpoint_operation(endpoint, context, schemas)}
    paths.update(_own_routes(context, schemas))
    components: dict[str, Any] = {"schemas": schemas.components}
    security = _security_schemes(context)
    if security:
        components["securitySchemes"] = security
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "litserve", "version": _version(), "description": _DESCRIPTION},
        "paths": paths,
        "components": components,
    }


_DESCRIPTION = (
    'Inference endpoints served by litserve. Errors are JSON `{"detail": ...}` (OpenAI\'s error envelope on '
    "OpenAI-compatible routes). A stream that fails after its first chunk ends with an error line instead."
)


def _version() -> str:
    try:
        return metadata.version("litserve")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout that was never installed
        return "0+unknown"


def _models(endpoints: Iterable[Endpoint]) -> Iterator[tuple[type[BaseModel], _Mode]]:
    yield from _ERROR_MODELS
    for endpoint in endpoints:
        if endpoint.plan.body_model is not None:
            yield endpoint.plan.body_model, "validation"
        answer = _answer_model(endpoint.api)
        if answer is not None:
            yield answer, "serialization"


def _answer_model(api: LitAPI) -> type[BaseModel] | None:
    """The model of a 200 body (of each line when streaming): the spec's, or encode_response's annotation."""
    if isinstance(api.spec, OpenAISpec):
        return ChatCompletion
    if isinstance(api.spec, OpenAIEmbeddingSpec):
        return EmbeddingList
    try:
        hint = typing.get_type_hints(api.encode_response).get("return")
    except Exception:  # an annotation that does not resolve: document the answer as free-form JSON
        return None
    if api.stream and typing.get_origin(hint) in _GENERATOR_ORIGINS:
        hint = typing.get_args(hint)[0]  # Iterator[Model], Generator[Model, None, None], AsyncIterator[Model]
    return hint if inspect.isclass(hint) and issubclass(hint, BaseModel) else None


_GENERATOR_ORIGINS = frozenset(
    {abc.Iterator, abc.Iterable, abc.Generator, abc.AsyncIterator, abc.AsyncIterable, abc.AsyncGenerator}
)


def _endpoint_operation(endpoint: Endpoint, context: WebContext, schemas: _Schemas) -> dict[str, Any]:
    api, body_model = endpoint.api, endpoint.plan.body_model
    body_schema = _FREE_FORM_OBJECT if body_model is None else schemas.ref(body_model, "validation")
    operation: dict[str, Any] = {
        "tags": ["OpenAI" if api.spec is not None else "inference"],
        "summary": type(api).__name__,
        "operationId": _operation_id("post", endpoint.path),
        "description": _endpoint_description(api, has_authorize=endpoint.plan.authorize is not None),
        "requestBody": {"required": True, "content": {_JSON: {"schema": body_schema}}},
        "responses": {"200": _success(api, schemas), **_errors(endpoint, context, schemas)},
    }
    uses_key = context.api_key is not None and endpoint.plan.authorize is None
    if uses_key:
        operation["security"] = _requirement(bearer=api.spec is not None)
    return operation


def _endpoint_description(api: LitAPI, has_authorize: bool) -> str:
    lines = [inspect.cleandoc(type(api).__doc__ or "").split("\n\n")[0]]
    if api.max_batch_size > 1:
        lines.append(f"Requests are batched: up to {api.max_batch_size} reach one `predict` call.")
    if isinstance(api.spec, OpenAISpec):
        lines.append('With `"stream": true` the answer is Server-Sent Events, ending with `data: [DONE]`.')
    elif api.stream:
        lines.append("The answer is streamed: one JSON object per line (NDJSON), sent as each is produced.")
    if has_authorize:
        lines.append("The endpoint's own `authorize` hook decides who may call it.")
    return "\n\n".join(line for line in lines if line)


def _operation_id(method: str, path: str) -> str:
    words = "".join(c if c.isalnum() else "_" for c in path).strip("_")
    return f"{method}_{words or 'root'}"


def _success(api: LitAPI, schemas: _Schemas) -> dict[str, Any]:
    model = _answer_model(api)
    schema = _ANY_JSON if model is None else schemas.ref(model)
    if isinstance(api.spec, OpenAISpec):
        events = {"type": "string", "description": "`data: {chat.completion.chunk}` events, then `data: [DONE]`"}
        return {"description": "The completion", "content": {_JSON: {"schema": schema}, _SSE: {"schema": events}}}
    if api.stream:
        note = 'Each line is one chunk; a failure after the first ends it with `{"error": ..., "status": N}`'
        content = {_NDJSON: {"schema": schema}}
        if model is None:  # chunks that are strings or bytes go out as they are
            content[_TEXT] = {"schema": {"type": "string"}}
            content[_BYTES] = {"schema": {"type": "string", "contentMediaType": _BYTES}}
        return {"description": note, "content": content}
    return {"description": "What encode_response returned", "content": {_JSON: {"schema": schema}}}


def _errors(endpoint: Endpoint, context: WebContext, schemas: _Schemas) -> dict[str, Any]:
    """Error answers of an endpoint's POST, by status, from the status-code table."""
    api = endpoint.api
    answers = [INVALID_JSON, PAYLOAD_TOO_LARGE, INTERNAL_ERROR, SERVER_OVERLOADED, SHUTTING_DOWN]
    if endpoint.plan.authorize is not None:
        answers.append(UNAUTHORIZED)
    elif context.api_key is not None:
        answers.append(INVALID_API_KEY)
    if endpoint.plan.body_model is not None:
        answers.append(_invalid_body_example(endpoint.plan.body_model))
    if api.max_batch_size > 1:
        answers.append(BATCH_SIZE_MISMATCH)
    if context.timeout_s is not None:
        answers.append(REQUEST_TIMED_OUT)
    return _by_status(answers, schemas, openai=api.spec is not None)


def _invalid_body_example(model: type[BaseModel]) -> ErrorResponse:
    """The 422 the routes would send for an empty object (or a non-object when that validates)."""
    bodies: tuple[Any, ...] = ({}, [])
    for body in bodies:
        try:
            model.model_validate(body)
        except PydanticValidationError as exc:
            return invalid_body(exc)
    return invalid_body(PydanticValidationError.from_exception_data(model.__name__, []))  # pragma: no cover


def _by_status(answers: Iterable[ErrorResponse], schemas: _Schemas, openai: bool = False) -> dict[str, Any]:
    grouped: dict[int, list[ErrorResponse]] = {}
    for answer in answers:
        grouped.setdefault(answer.status, []).append(answer)
    return {str(status): _error_response(grouped[status], schemas, openai) for status in sorted(grouped)}


def _error_response(answers: list[ErrorResponse], schemas: _Schemas, openai: bool) -> dict[str, Any]:
    status = answers[0].status
    model: type[BaseModel] = OpenAIErrorBody if openai else HTTPValidationError if status == 422 else HTTPError
    examples = {}
    for index, answer in enumerate(answers):
        body = openai_error(Outcome.failure(answer)).body if openai else error_body(answer.detail)
        summary = answer.detail if isinstance(answer.detail, str) else "pydantic's errors"
        examples[f"example{index}"] = {"summary": summary, "value": json.loads(body)}
    response: dict[str, Any] = {
        "description": HTTPStatus(status).phrase,
        "content": {_JSON: {"schema": schemas.ref(model), "examples": examples}},
    }
    headers = {name: value for answer in answers for name, value in answer.headers}
    if headers:
        response["headers"] = {name: {"schema": {"type": "string"}, "example": v} for name, v in headers.items()}
    return response


def _own_routes(context: WebContext, schemas: _Schemas) -> dict[str, Any]:
    """The server's own routes, where this start serves them (a moved route shows at its path)."""
    guarded = _by_status([INVALID_API_KEY], schemas) if context.api_key is not None else {}
    routes: list[tuple[str, str, str, str]] = [("/", "root", _TEXT, "`litserve running`")]
    routes.append((context.info_path, "info", _JSON, "The model's metadata and the server's settings"))
    options = context.options
    if options.metrics_path is not None:
        routes.append((options.metrics_path, "metrics", _TEXT, "Prometheus metrics (text exposition format)"))
    if options.status_path is not None:
        routes.append((options.status_path, "status", _HTML, "A live status page"))
    if any(isinstance(endpoint.api.spec, OpenAISpec) for endpoint in context.endpoints):
        routes.append(("/v1/models", "OpenAI", _JSON, "The chat models served (OpenAI's model list)"))
    paths = {path: {"get": _get(path, tag, media, summary, guarded, context)} for path, tag, media, summary in routes}
    ready = {"description": "Every worker finished setup() and is healthy", "content": {_TEXT: {"example": "ok"}}}
    not_ready = {"description": NOT_READY.detail, "content": {_TEXT: {"example": NOT_READY.detail}}}
    health = _get(context.health_path, "server", _TEXT, "Readiness (no API key needed)", {}, context)
    health["responses"] = {"200": ready, str(NOT_READY.status): not_ready}
    paths[context.health_path] = {"get": health}
    if context.shutdown is not None:
        paths[context.shutdown.path] = {"post": _shutdown(context.shutdown.path, schemas)}
    return paths


def _get(path: str, tag: str, media: str, summary: str, errors: dict[str, Any], context: WebContext) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": ["server" if tag != "OpenAI" else tag],
        "summary": summary,
        "operationId": _operation_id("get", path),
        "responses": {"200": {"description": "OK", "content": {media: {"schema": {}}}}, **errors},
    }
    if errors:
        operation["security"] = _requirement(bearer=tag == "OpenAI")
    return operation


def _shutdown(path: str, schemas: _Schemas) -> dict[str, Any]:
    started = {"description": "The server stops after answering", "content": {_TEXT: {"schema": {"type": "string"}}}}
    return {
        "tags": ["server"],
        "summary": "Stop the server (needs LIT_SHUTDOWN_API_KEY as a Bearer token)",
        "operationId": _operation_id("post", path),
        "responses": {"200": started, **_by_status([INVALID_SHUTDOWN_TOKEN], schemas)},
        "security": [{_SHUTDOWN_SCHEME: []}],
    }


def _requirement(bearer: bool) -> list[dict[str, list[str]]]:
    """Either scheme is enough: a list of alternatives."""
    return [{API_KEY_SCHEME: []}, {BEARER_SCHEME: []}] if bearer else [{API_KEY_SCHEME: []}]


def _security_schemes(context: WebContext) -> dict[str, Any]:
    schemes: dict[str, Any] = {}
    if context.api_key is not None:
        schemes[API_KEY_SCHEME] = {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
        if any(endpoint.api.spec is not None for endpoint in context.endpoints):
            schemes[BEARER_SCHEME] = {"type": "http", "scheme": "bearer", "description": "The same API key"}
    if context.shutdown is not None:
        schemes[_SHUTDOWN_SCHEME] = {"type": "http", "scheme": "bearer", "description": "LIT_SHUTDOWN_API_KEY"}
    return schemes
