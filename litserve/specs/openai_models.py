"""The OpenAI chat-completions wire format as pydantic models (request side, and what hooks may yield).

Field names are OpenAI's. Unknown request fields are kept (`extra="allow"`): clients send new fields
before servers know them, and a server that rejects them breaks those clients. Hooks receive the
request as a `ChatCompletionRequest`; `encode_response` may yield `ChatMessage` objects (or dicts,
or plain strings).
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AudioContent",
    "ChatCompletionRequest",
    "ChatMessage",
    "FunctionCall",
    "ImageContent",
    "ImageContentURL",
    "InputAudio",
    "JSONSchema",
    "ResponseFormat",
    "ResponseFormatJSONObject",
    "ResponseFormatJSONSchema",
    "ResponseFormatText",
    "StreamOptions",
    "TextContent",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "UsageInfo",
]


class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ImageDetail(str, enum.Enum):
    AUTO = "auto"
    LOW = "low"
    HIGH = "high"


class ImageContentURL(BaseModel):
    url: str
    detail: ImageDetail = ImageDetail.AUTO


class ImageContent(BaseModel):
    type: Literal["image_url"] = "image_url"
    image_url: str | ImageContentURL


class InputAudio(BaseModel):
    data: str  # base64
    format: Literal["wav", "mp3"]


class AudioContent(BaseModel):
    type: Literal["input_audio"] = "input_audio"
    input_audio: InputAudio


ContentPart = Annotated[TextContent | ImageContent | AudioContent, Field(discriminator="type")]


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    index: int = 0
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    """One message of a conversation; what `encode_response` may yield for the assistant's reply."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class Function(BaseModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: Function


class ToolChoice(str, enum.Enum):
    AUTO = "auto"
    NONE = "none"
    ANY = "any"
    REQUIRED = "required"


class ResponseFormatText(BaseModel):
    type: Literal["text"]


class ResponseFormatJSONObject(BaseModel):
    type: Literal["json_object"]


class JSONSchema(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = False


class ResponseFormatJSONSchema(BaseModel):
    type: Literal["json_schema"]
    json_schema: JSONSchema


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema, Field(discriminator="type")
]


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """A `POST /v1/chat/completions` body. Every field but `messages` also reaches hooks in `context`."""

    model_config = ConfigDict(extra="allow")

    model: str | None = ""
    messages: list[ChatMessage]
    temperature: float | None = 0.7
    top_p: float | None = 1.0
    n: int = Field(1, ge=1, le=128)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0
    seed: int | None = None
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | dict[str, Any] | None = ToolChoice.AUTO
    response_format: ResponseFormat | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    metadata: dict[str, str] | None = None


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
