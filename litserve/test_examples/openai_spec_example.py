"""Chat APIs for `OpenAISpec` that LitServe's tests (and ours) serve; their answers are fixed on purpose."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from litserve.api import LitAPI
from litserve.specs.openai_models import ChatMessage

__all__ = [
    "OpenAIBatchContext",
    "OpenAIBatchingWithUsage",
    "OpenAIWithUsage",
    "OpenAIWithUsageEncodeResponse",
    "TestAPI",
    "TestAPIWithCustomEncode",
    "TestAPIWithStructuredOutput",
    "TestAPIWithToolCalls",
]

_GREETING = "Hi! It's nice to meet you. Is there something I can help you with or would you like to chat?"


class TestAPI(LitAPI):
    """Answers every conversation with "This is a generated output"."""

    __test__ = False  # not a pytest test class, despite its (LitServe's) name

    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, x: Any) -> Iterator[str]:
        yield "This is a generated output"


class TestAPIWithCustomEncode(TestAPI):
    """Its own encode_response replaces the answer with "This is a custom encoded output"."""

    def encode_response(self, output: Any) -> Iterator[ChatMessage]:
        yield ChatMessage(role="assistant", content="This is a custom encoded output")


class TestAPIWithToolCalls(TestAPI):
    """Answers with an empty message that calls the tool `function_1`."""

    def encode_response(self, output: Any) -> Iterator[ChatMessage]:
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "function_1", "arguments": '{"arg_1": "arg_1_value"}'},
        }
        yield ChatMessage(role="assistant", content="", tool_calls=[call])  # type: ignore[list-item]


class TestAPIWithStructuredOutput(TestAPI):
    """Answers with a JSON document, as for a `response_format` json_schema request."""

    def encode_response(self, output: Any) -> Iterator[ChatMessage]:
        yield ChatMessage(
            role="assistant",
            content='{"name": "Science Fair", "date": "Friday", "participants": ["Alice", "Bob"]}',
        )


class OpenAIBatchContext(LitAPI):
    """Batched streaming with per-request context: predict marks every context, encode_response checks it."""

    def setup(self, device: str) -> None:
        self.model = None

    def batch(self, inputs: list[Any]) -> list[Any]:
        return inputs

    def predict(self, inputs: list[Any], context: list[dict[str, Any]]) -> Iterator[list[str]]:  # type: ignore[override]  # LitServe hooks may take `context`
        assert isinstance(context, list)
        for request_context in context:
            request_context["temperature"] = 1.0
        for word in _GREETING.split(" "):
            time.sleep(0.01)  # a model's pace
            yield [word + " "] * len(inputs)

    def unbatch(self, output: Any) -> Any:
        return output

    def encode_response(self, output_stream: Any, context: list[dict[str, Any]]) -> Iterator[list[dict[str, str]]]:  # type: ignore[override]
        for outputs in output_stream:
            yield [{"role": "assistant", "content": output} for output in outputs]
        for request_context in context:
            assert request_context["temperature"] == 1.0, f"context {request_context} lost the temperature"


class OpenAIWithUsage(LitAPI):
    """One message that carries its token counts."""

    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, x: Any) -> Iterator[dict[str, Any]]:
        yield {
            "role": "assistant",
            "content": "10 + 6 is equal to 16.",
            "prompt_tokens": 25,
            "completion_tokens": 10,
            "total_tokens": 35,
        }


class OpenAIWithUsageEncodeResponse(LitAPI):
    """Streams tokens, then an empty message with the token counts."""

    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, x: Any) -> Iterator[str]:
        yield from ["10", " +", " ", "6", " is", " equal", " to", " ", "16", "."]

    def encode_response(self, output: Any) -> Iterator[dict[str, Any]]:
        for token in output:
            yield {"role": "assistant", "content": token}
        yield {"role": "assistant", "content": "", "prompt_tokens": 25, "completion_tokens": 10, "total_tokens": 35}


class OpenAIBatchingWithUsage(OpenAIWithUsage):
    """Batched: the same answer for every request of a batch, then each one's token counts."""

    def batch(self, inputs: list[Any]) -> list[Any]:
        return inputs

    def predict(self, x: Any) -> Iterator[list[str]]:  # type: ignore[override]
        yield ["10 + 6 is equal to 16."] * len(x)

    def encode_response(self, output_stream_batch: Any, context: list[Any]) -> Iterator[list[dict[str, Any]]]:  # type: ignore[override]
        for outputs in output_stream_batch:
            yield [{"role": "assistant", "content": output} for output in outputs]
        usage = {"role": "assistant", "content": "", "prompt_tokens": 25, "completion_tokens": 10, "total_tokens": 35}
        yield [usage] * len(context)

    def unbatch(self, output: Any) -> Any:
        return output
