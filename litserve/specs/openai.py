"""OpenAI chat completions (`POST /v1/chat/completions`), as LitServe's `OpenAISpec` serves them.

The hook mapping is LitServe's: `decode_request` receives the validated `ChatCompletionRequest` (by
default it is passed on as it is), `predict` is a generator that yields the reply's pieces (strings,
`{"role", "content", "tool_calls"}` dicts or `ChatMessage`s, with optional usage counts
`prompt_tokens`/`completion_tokens`/`total_tokens`), and `encode_response` maps those pieces (by
default into assistant messages). Request fields other than `messages` reach hooks in `context`.

Every request runs as a stream in the worker. Its encoder (built here, run in the worker) turns each
piece into one Server-Sent Event `chat.completion.chunk`, or, when the client did not ask for a
stream, gathers the pieces into one `chat.completion` document sent at the end. The route (in
`litserve.web.openai_routes`) adds `data: [DONE]` and merges `n > 1` choices.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from pydantic import BaseModel

from litserve.codec import encode_json
from litserve.specs.base import LitSpec
from litserve.specs.openai_models import (
    AudioContent,
    ChatCompletionRequest,
    ChatMessage,
    FunctionCall,
    ImageContent,
    ImageContentURL,
    InputAudio,
    JSONSchema,
    ResponseFormat,
    TextContent,
    Tool,
    ToolCall,
    ToolChoice,
    UsageInfo,
)

if TYPE_CHECKING:
    from litserve.api import LitAPI
    from litserve.engine.answer_codec import ChunkEncoder

# The request and message models are importable from here too, where LitServe users import them from.
__all__ = [
    "AudioContent",
    "ChatCompletionRequest",
    "ChatMessage",
    "ChatShape",
    "FunctionCall",
    "ImageContent",
    "ImageContentURL",
    "InputAudio",
    "JSONSchema",
    "OpenAISpec",
    "ResponseFormat",
    "TextContent",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "UsageInfo",
    "as_message",
    "new_completion_id",
]

_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
# A message with none of these keys is sent as it is (the common case: role and content only).
_SPECIAL_KEYS = frozenset(("tool_calls", "finish_reason", *_USAGE_KEYS))
SSE = "text/event-stream"


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


@final
@dataclass(frozen=True, slots=True)
class ChatShape:
    """What the route decided about one choice's answer; it travels with the request to the worker."""

    completion_id: str
    created: int
    model: str
    index: int
    stream: bool

    @classmethod
    def for_choice(cls, request: ChatCompletionRequest, index: int, completion_id: str, created: int) -> ChatShape:
        return cls(completion_id, created, request.model or "", index, bool(request.stream))


def as_message(output: Any) -> dict[str, Any]:
    """One piece of predict's output as an assistant message dict (usage counts kept as extra keys)."""
    if output is None:
        return {"role": "assistant", "content": None}
    if isinstance(output, str):
        return {"role": "assistant", "content": output}
    if isinstance(output, BaseModel):
        return output.model_dump(mode="json", exclude_none=True)
    if isinstance(output, dict) and "content" in output:
        return output if "role" in output else {**output, "role": "assistant"}
    if isinstance(output, list) and output and isinstance(output[-1], dict) and "content" in output[-1]:
        return as_message(output[-1])  # a whole conversation: its last message is the reply
    raise ValueError(
        f"malformed output for OpenAISpec: expected a string, a ChatMessage or {{'role': ..., 'content': ...}}, "
        f"got {type(output).__name__}: {output!r:.200}"
    )


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    """Tool calls as OpenAI sends them, each with its `index` (the streaming client needs it)."""
    if not isinstance(calls, list):
        raise ValueError(f"tool_calls must be a list of tool calls, got {type(calls).__name__}")
    result = []
    for position, call in enumerate(calls):
        data = call.model_dump() if isinstance(call, BaseModel) else dict(call)
        data.setdefault("index", position)
        result.append(ToolCall.model_validate(data).model_dump(mode="json"))
    return result


def _split(chunk: Any, usage: list[int]) -> tuple[dict[str, Any], str | None]:
    """The delta to send for one chunk, and a finish reason it names; its usage counts are added to `usage`."""
    message = chunk if type(chunk) is dict else as_message(chunk)
    if _SPECIAL_KEYS.isdisjoint(message):
        if "content" not in message:
            raise ValueError(f"malformed output for OpenAISpec: a message needs 'content', got {message!r:.200}")
        return message, None  # the common case: {"role": "assistant", "content": "..."}
    delta = dict(message)
    for position, key in enumerate(_USAGE_KEYS):
        usage[position] += int(delta.pop(key, 0) or 0)
    finish_reason = delta.pop("finish_reason", None)
    if delta.get("tool_calls") is not None:
        delta["tool_calls"] = _tool_calls(delta["tool_calls"])
    else:
        delta.pop("tool_calls", None)
    return delta, finish_reason


def _usage_json(usage: list[int]) -> bytes:
    prompt, completion, total = usage
    return encode_json(
        {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total or prompt + completion}
    )


@final
class _EventStream:
    """Server-Sent Events for one streamed choice: one `chat.completion.chunk` per piece, then the finish."""

    media_type = SSE

    def __init__(self, shape: ChatShape) -> None:
        self._head = (
            b'data: {"id":' + encode_json(shape.completion_id) + b',"object":"chat.completion.chunk","created":'
            + str(shape.created).encode() + b',"model":' + encode_json(shape.model)
            + b',"choices":[{"index":' + str(shape.index).encode() + b',"delta":'
        )  # fmt: skip
        self._usage = [0, 0, 0]
        self._finish_reason: str | None = None
        self._called_tools = False

    def encode(self, chunk: Any) -> bytes:
        delta, finish_reason = _split(chunk, self._usage)
        if finish_reason is not None:
            self._finish_reason = finish_reason
        if "tool_calls" in delta:
            self._called_tools = True
        return self._head + encode_json(delta) + b',"finish_reason":null}]}\n\n'

    def close(self) -> bytes:
        reason = self._finish_reason or ("tool_calls" if self._called_tools else "stop")
        return (
            self._head + b'{},"finish_reason":' + encode_json(reason) + b"}],"
            + b'"usage":' + _usage_json(self._usage) + b"}\n\n"
        )  # fmt: skip


@final
class _Collector:
    """A choice the client wants whole: gathers the pieces, sends one `chat.completion` at the end."""

    media_type = "application/json"

    def __init__(self, shape: ChatShape) -> None:
        self._shape = shape
        self._parts: list[str] = []
        self._tool_calls: list[dict[str, Any]] | None = None
        self._usage = [0, 0, 0]
        self._finish_reason: str | None = None

    def encode(self, chunk: Any) -> bytes:
        delta, finish_reason = _split(chunk, self._usage)
        content = delta.get("content")
        if isinstance(content, str):
            self._parts.append(content)
        elif content is not None:
            raise ValueError(f"an assistant reply's content must be a string, got {type(content).__name__}")
        if "tool_calls" in delta:
            self._tool_calls = delta["tool_calls"]
        if finish_reason is not None:
            self._finish_reason = finish_reason
        return b""

    def close(self) -> bytes:
        shape = self._shape
        reason = self._finish_reason or ("tool_calls" if self._tool_calls else "stop")
        message = {"role": "assistant", "content": "".join(self._parts), "tool_calls": self._tool_calls}
        choice = {"index": shape.index, "message": message, "finish_reason": reason, "logprobs": None}
        document = {
            "id": shape.completion_id,
            "object": "chat.completion",
            "created": shape.created,
            "model": shape.model,
            "choices": [choice],
        }
        return encode_json(document)[:-1] + b',"usage":' + _usage_json(self._usage) + b"}"


class OpenAISpec(LitSpec):
    """Serve a LitAPI as OpenAI's chat completions API (`/v1/chat/completions`, `/v1/models`).

    The official `openai` client, Open WebUI and other OpenAI-compatible tools can call it, streamed
    (Server-Sent Events) or not. `predict` must be a generator (an async generator with
    `enable_async=True`); each piece it yields becomes part of the reply.

    Example:
        >>> class Chat(LitAPI):
        ...     def predict(self, request):
        ...         yield from ["Hello", ", world"]
        >>> server = LitServer(Chat(spec=OpenAISpec()))

    Stability: beta (LitServe's names and hook mapping).
    """

    request_model = ChatCompletionRequest

    def __init__(self, model_name: str | None = None) -> None:
        """`model_name`: the id `GET /v1/models` lists (default: the LitAPI's class name)."""
        self.api_path = "/v1/chat/completions"
        self.model_name = model_name

    @property
    def stream(self) -> bool:
        return True

    def pre_setup(self, lit_api: LitAPI) -> None:
        name = type(lit_api).__name__
        if lit_api.enable_async:
            if not inspect.isasyncgenfunction(lit_api.predict):
                raise ValueError(
                    f"{name} uses OpenAISpec with enable_async=True, so predict must be an async generator: "
                    "`async def predict(self, request): yield ...`"
                )
        elif not inspect.isgeneratorfunction(lit_api.predict):
            raise ValueError(
                f"{name} uses OpenAISpec, which streams the reply, but its predict is not a generator: "
                "replace `return text` with `yield text` (or `yield from pieces`)."
            )
        encode = lit_api.encode_response
        from litserve.api import LitAPI  # here: litserve.api imports the specs lazily too

        overrides_encode = type(lit_api).encode_response is not LitAPI.encode_response
        if overrides_encode and not (inspect.isgeneratorfunction(encode) or inspect.isasyncgenfunction(encode)):
            raise ValueError(
                f"{name} uses OpenAISpec, but its encode_response is not a generator: map the pieces with "
                "`for output in outputs: yield ChatMessage(role='assistant', content=output)`."
            )

    def encode_response(
        self, output: Any, context_kwargs: dict[str, Any] | None = None
    ) -> Iterator[dict[str, Any]] | AsyncIterator[dict[str, Any]]:
        """Each piece predict yields, as an assistant message dict."""
        if hasattr(output, "__aiter__"):
            return _messages_async(output)
        return map(as_message, output)

    def encode_answer(self, encoded: Any, payload: Any, shape: Any) -> bytes:
        raise AssertionError("OpenAISpec answers every request through its stream encoder")

    def open_stream(self, payload: Any, shape: Any) -> ChunkEncoder:
        return _EventStream(shape) if shape.stream else _Collector(shape)


async def _messages_async(outputs: AsyncIterator[Any]) -> AsyncIterator[dict[str, Any]]:
    async for output in outputs:
        yield as_message(output)
