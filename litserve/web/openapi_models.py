"""Pydantic models that exist only to describe answers in the OpenAPI document (never used to serve).

The error bodies are the shapes `WIRE.md` promises: `{"detail": ...}` on every route, pydantic's error
list for a 422, and OpenAI's envelope on the OpenAI-compatible routes. The OpenAI answers are what the
specs' encoders (`litserve.specs`) write, field for field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from litserve.specs.openai_models import ChatMessage, UsageInfo

__all__ = [
    "ChatCompletion",
    "ChatCompletionChoice",
    "Embedding",
    "EmbeddingList",
    "EmbeddingUsage",
    "HTTPError",
    "HTTPValidationError",
    "OpenAIError",
    "OpenAIErrorBody",
    "ValidationError",
]


class HTTPError(BaseModel):
    """An error answer: what went wrong, for people (the status code says what kind)."""

    detail: Any = Field(description="A message, or whatever an HTTPException raised by a hook carried")


class ValidationError(BaseModel):
    """One reason the request body did not match its model (pydantic's error, without URLs)."""

    type: str = Field(description="pydantic's error type, e.g. 'missing' or 'float_parsing'")
    loc: list[str | int] = Field(description="Where in the body: field names and list indexes")
    msg: str
    input: Any = Field(None, description="The value that failed")


class HTTPValidationError(BaseModel):
    """422: the body is JSON but does not match the endpoint's model."""

    detail: list[ValidationError]


class OpenAIError(BaseModel):
    message: str
    type: Literal["invalid_request_error", "server_error"]
    param: str | None = None
    code: str


class OpenAIErrorBody(BaseModel):
    """OpenAI's error envelope; `detail` is what the other routes send (pydantic's list for a 422)."""

    error: OpenAIError
    detail: Any = None


class ChatCompletionChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: str | None = None


class ChatCompletion(BaseModel):
    """A whole chat completion (`"stream": false`)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(description="Unix time, seconds")
    model: str
    choices: list[ChatCompletionChoice]
    usage: UsageInfo | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="The vector, or little-endian float32 as base64")


class EmbeddingUsage(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingList(BaseModel):
    """The answer of `POST /v1/embeddings`: one embedding per input, in order."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
