"""OpenAI chat completions, called by the official `openai` client against a real server, in both worker modes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

import litserve as ls
from litserve import HTTPException, LitServer
from litserve.specs.openai import ChatMessage
from litserve.test_examples.openai_spec_example import (
    OpenAIBatchContext,
    OpenAIWithUsage,
    OpenAIWithUsageEncodeResponse,
    TestAPI,
    TestAPIWithStructuredOutput,
    TestAPIWithToolCalls,
)
from tests.helpers import post, wait_until
from tests.sync import CrossEvent

openai = pytest.importorskip("openai", reason="the official openai client is a test dependency")

MESSAGES = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "How are you?"}]


def client_for(server: LitServer, api_key: str = "unused") -> Any:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0, timeout=30)


class EchoContext(ls.LitAPI):
    """Streams its input back word by word, then names the request fields it found in `context`."""

    def predict(self, request: Any, context: dict[str, Any]) -> Iterator[str]:
        yield from request.messages[-1].content.split(" ")
        yield f" temperature={context['temperature']} max_tokens={context['max_tokens']}"


class FailsMidStream(ls.LitAPI):
    def predict(self, request: Any) -> Iterator[str]:
        yield "a first piece"
        raise HTTPException(409, "the model refused halfway")


class FailsBeforeAnything(ls.LitAPI):
    def predict(self, request: Any) -> Iterator[str]:
        raise HTTPException(418, "no tea")
        yield "never"


class MalformedOutput(ls.LitAPI):
    def predict(self, request: Any) -> Iterator[Any]:
        yield 42


class ListensToTools(ls.LitAPI):
    """Calls the first tool the request offers (as a streaming model does: the call in its own chunk)."""

    def predict(self, request: Any) -> Iterator[dict[str, Any]]:
        tool = request.tools[0].function.name
        call = {"id": "call_7", "type": "function", "function": {"name": tool, "arguments": '{"city": "Oslo"}'}}
        yield {"role": "assistant", "content": None, "tool_calls": [call]}


class HeldChat(ls.LitAPI):
    """Waits for the test before its first piece."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = CrossEvent()

    def predict(self, request: Any) -> Iterator[str]:
        assert self.gate.wait(10), "the test never let the model answer"
        yield "late"


class AsyncChat(ls.LitAPI):
    async def predict(self, request: Any) -> Any:
        for word in ("async", " words"):
            yield word


class ReadsContent(ls.LitAPI):
    """Says which content parts it received (text, image_url, input_audio)."""

    def predict(self, request: Any) -> Iterator[str]:
        parts = request.messages[-1].content
        yield ",".join(part.type for part in parts)


def test_the_official_client_gets_whole_and_streamed_answers(start_server: Callable[..., LitServer]) -> None:
    server = start_server(TestAPI(spec=ls.OpenAISpec()))
    with client_for(server) as client:
        whole = client.chat.completions.create(model="lit", messages=MESSAGES)
        assert whole.choices[0].message.content == "This is a generated output"
        assert whole.choices[0].message.role == "assistant"
        assert whole.choices[0].finish_reason == "stop"
        assert whole.object == "chat.completion" and whole.model == "lit" and whole.id.startswith("chatcmpl-")
        chunks = list(client.chat.completions.create(model="lit", messages=MESSAGES, stream=True))
    assert [chunk.choices[0].delta.content for chunk in chunks] == ["This is a generated output", None]
    assert [chunk.choices[0].finish_reason for chunk in chunks] == [None, "stop"]
    assert len({chunk.id for chunk in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"


def test_a_stream_is_server_sent_events_ending_with_done(start_server: Callable[..., LitServer]) -> None:
    server = start_server(TestAPI(spec=ls.OpenAISpec()))
    body = {"model": "lit", "messages": MESSAGES, "stream": True}
    response = post(server, body, path="/v1/chat/completions")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [event for event in response.text.split("\n\n") if event]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    last = json.loads(events[-2][len("data: ") :])
    assert last["choices"][0]["finish_reason"] == "stop" and last["usage"]["total_tokens"] == 0


def test_request_fields_other_than_messages_reach_hooks_in_context(start_server: Callable[..., LitServer]) -> None:
    server = start_server(EchoContext(spec=ls.OpenAISpec()))
    messages = [{"role": "user", "content": "hello there"}]
    with client_for(server) as client:
        whole = client.chat.completions.create(model="m", messages=messages, temperature=0.25, max_tokens=9)
        pieces = [
            chunk.choices[0].delta.content
            for chunk in client.chat.completions.create(model="m", messages=messages, stream=True, max_tokens=3)
        ]
    assert whole.choices[0].message.content == "hellothere temperature=0.25 max_tokens=9"
    assert pieces == ["hello", "there", " temperature=0.7 max_tokens=3", None]


def test_n_choices_whole_and_streamed(start_server: Callable[..., LitServer]) -> None:
    server = start_server(TestAPI(spec=ls.OpenAISpec()))
    with client_for(server) as client:
        whole = client.chat.completions.create(model="lit", messages=MESSAGES, n=3)
        chunks = list(client.chat.completions.create(model="lit", messages=MESSAGES, n=2, stream=True))
    assert [choice.index for choice in whole.choices] == [0, 1, 2]
    assert {choice.message.content for choice in whole.choices} == {"This is a generated output"}
    by_index: dict[int, list[Any]] = {0: [], 1: []}
    for chunk in chunks:
        by_index[chunk.choices[0].index].append(chunk.choices[0].delta.content)
    assert by_index == {0: ["This is a generated output", None], 1: ["This is a generated output", None]}
    assert wait_until(lambda: server.status.endpoints[0].requests >= 2)
    endpoint = server.status.endpoints[0]
    assert (endpoint.ok, endpoint.requests) == (2, 2)  # one count per request, not per choice


def test_tool_calls_whole_and_streamed(start_server: Callable[..., LitServer]) -> None:
    server = start_server(ListensToTools(spec=ls.OpenAISpec()))
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    with client_for(server) as client:
        whole = client.chat.completions.create(model="m", messages=messages, tools=tools)
        chunks = list(client.chat.completions.create(model="m", messages=messages, tools=tools, stream=True))
    call = whole.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == ("call_7", "weather", {"city": "Oslo"})
    assert whole.choices[0].finish_reason == "tool_calls" and whole.choices[0].message.content == ""
    streamed = chunks[0].choices[0].delta.tool_calls[0]
    assert (streamed.index, streamed.function.name) == (0, "weather")
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_call_example_and_structured_output(start_server: Callable[..., LitServer]) -> None:
    tools_server = start_server(TestAPIWithToolCalls(spec=ls.OpenAISpec()))
    schema = {"type": "json_schema", "json_schema": {"name": "event", "schema": {"type": "object"}, "strict": True}}
    with client_for(tools_server) as client:
        called = client.chat.completions.create(model="lit", messages=MESSAGES)
    assert called.choices[0].message.tool_calls[0].function.name == "function_1"
    structured_server = start_server(TestAPIWithStructuredOutput(spec=ls.OpenAISpec()))
    with client_for(structured_server) as client:
        answer = client.chat.completions.create(model="lit", messages=MESSAGES, response_format=schema)
    assert json.loads(answer.choices[0].message.content)["participants"] == ["Alice", "Bob"]


def test_image_and_audio_content_parts_reach_the_hooks(start_server: Callable[..., LitServer]) -> None:
    server = start_server(ReadsContent(spec=ls.OpenAISpec()))
    content = [
        {"type": "text", "text": "What is in this image and this sound?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]
    with client_for(server) as client:
        answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": content}])
    assert answer.choices[0].message.content == "text,image_url,input_audio"


@pytest.mark.parametrize("api_class", [OpenAIWithUsage, OpenAIWithUsageEncodeResponse])
def test_usage_counts_reach_the_client(start_server: Callable[..., LitServer], api_class: type[ls.LitAPI]) -> None:
    server = start_server(api_class(spec=ls.OpenAISpec()))
    with client_for(server) as client:
        whole = client.chat.completions.create(model="m", messages=MESSAGES)
        chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert whole.choices[0].message.content == "10 + 6 is equal to 16."
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens, whole.usage.total_tokens) == (25, 10, 35)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 35
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "10 + 6 is equal to 16."


def test_batched_requests_keep_their_own_context(start_server: Callable[..., LitServer]) -> None:
    server = start_server(OpenAIBatchContext(max_batch_size=4, batch_timeout=0.2, spec=ls.OpenAISpec()))
    expected = "Hi! It's nice to meet you. Is there something I can help you with or would you like to chat? "
    with client_for(server) as client, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.chat.completions.create(model="m", messages=MESSAGES), range(4)))
    assert [answer.choices[0].message.content for answer in answers] == [expected] * 4
    assert max(size for size, _ in server.status.endpoints[0].batch_sizes) > 1, "never batched together"


def test_async_hooks_stream_through_the_spec(start_server: Callable[..., LitServer]) -> None:
    server = start_server(AsyncChat(enable_async=True, spec=ls.OpenAISpec()))
    with client_for(server) as client:
        whole = client.chat.completions.create(model="m", messages=MESSAGES)
    assert whole.choices[0].message.content == "async words"


def test_the_older_server_form_and_the_models_list(lit_server: Callable[..., LitServer]) -> None:
    with pytest.warns(DeprecationWarning, match="MyAPI\\(spec=OpenAISpec\\(\\)\\)"):
        server = lit_server(TestAPI(), spec=ls.OpenAISpec(model_name="toy-chat"))
    with client_for(server) as client:
        assert [model.id for model in client.models.list()] == ["toy-chat"]
        assert client.chat.completions.create(model="x", messages=MESSAGES).choices[0].message.content
    with pytest.raises(ValueError, match="speaks OpenAISpec; call it over HTTP"):
        server.predict({"messages": MESSAGES})


def test_errors_use_the_openai_envelope(start_server: Callable[..., LitServer]) -> None:
    server = start_server(FailsBeforeAnything(spec=ls.OpenAISpec()))
    with client_for(server) as client:
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="m", messages=MESSAGES)
        with pytest.raises(openai.UnprocessableEntityError) as invalid:
            client.chat.completions.create(model="m", messages=[{"content": "no role"}])
    assert refused.value.status_code == 418
    assert refused.value.body == {
        "message": "no tea",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_request",
    }
    assert "messages.0.role" in invalid.value.message
    not_json = post(server, data=b"{nope", path="/v1/chat/completions")
    assert not_json.status_code == 400 and not_json.json()["error"]["message"] == "Request body is not valid JSON"
    assert post(server, {"messages": MESSAGES, "stream": True}, path="/v1/chat/completions").status_code == 418


def test_an_error_mid_stream_is_raised_by_the_official_client(start_server: Callable[..., LitServer]) -> None:
    server = start_server(FailsMidStream(spec=ls.OpenAISpec()))
    received: list[Any] = []
    with client_for(server) as client:
        with pytest.raises(openai.APIError, match="the model refused halfway"):
            for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
                received.append(chunk.choices[0].delta.content)
        with pytest.raises(openai.APIStatusError) as whole:
            client.chat.completions.create(model="m", messages=MESSAGES)
    assert received == ["a first piece"]
    assert whole.value.status_code == 409


def test_a_malformed_output_is_a_500_not_a_crash(start_server: Callable[..., LitServer]) -> None:
    server = start_server(MalformedOutput(spec=ls.OpenAISpec()))
    with client_for(server) as client, pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert "malformed output" in str(server.status.last_error)
    assert post(server, {"input": 1}, path="/v1/chat/completions").status_code == 422  # and it still serves


def test_bearer_and_x_api_key_both_authorize(start_server: Callable[..., LitServer]) -> None:
    server = start_server(TestAPI(spec=ls.OpenAISpec()), api_key="s3cret")
    with client_for(server, api_key="s3cret") as client:
        assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
        assert [model.id for model in client.models.list()] == ["TestAPI"]
    with client_for(server, api_key="wrong") as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    body = {"messages": MESSAGES}
    assert post(server, body, path="/v1/chat/completions", headers={"X-API-Key": "s3cret"}).status_code == 200
    unauthorized = post(server, body, path="/v1/chat/completions", headers={"Authorization": "Basic s3cret"})
    assert unauthorized.status_code == 401 and unauthorized.json()["error"]["code"] == "invalid_api_key"
    assert requests.get(server.url + "/v1/models", timeout=10).status_code == 401


def test_a_predict_that_is_not_a_generator_is_refused_with_a_fix() -> None:
    class Returns(ls.LitAPI):
        def predict(self, request: Any) -> str:
            return "text"

    class ReturnsFromEncode(ls.LitAPI):
        def predict(self, request: Any) -> Iterator[str]:
            yield "text"

        def encode_response(self, output: Any) -> Any:
            return {"role": "assistant", "content": "x"}

    with pytest.raises(ValueError, match="encode_response is not a generator"):
        ReturnsFromEncode(spec=ls.OpenAISpec())
    with pytest.raises(ValueError, match="predict is not a generator"):
        Returns(spec=ls.OpenAISpec())
    with pytest.raises(ValueError, match="async generator"):
        Returns(enable_async=True, spec=ls.OpenAISpec())
    with pytest.raises(TypeError, match="LitSpec"):
        Returns(spec="openai")  # type: ignore[arg-type]


def test_a_custom_path_is_kept(lit_server: Callable[..., LitServer]) -> None:
    server = lit_server(TestAPI(api_path="/chat", spec=ls.OpenAISpec()))
    answer = post(server, {"messages": MESSAGES}, path="/chat").json()
    assert answer["choices"][0]["message"] == {
        "role": "assistant",
        "content": "This is a generated output",
        "tool_calls": None,
    }


def test_custom_encode_yielding_chat_messages() -> None:
    from litserve.test_examples.openai_spec_example import TestAPIWithCustomEncode

    api = TestAPIWithCustomEncode(spec=ls.OpenAISpec())
    with LitServer(api).start(port=0) as server, client_for(server) as client:
        answer = client.chat.completions.create(model="m", messages=MESSAGES)
    assert answer.choices[0].message.content == "This is a custom encoded output"
    assert isinstance(ChatMessage(role="assistant", content="x"), ChatMessage)


def test_a_chat_past_its_timeout_gets_504_whole_or_streamed(start_server: Callable[..., LitServer]) -> None:
    api = HeldChat(spec=ls.OpenAISpec())
    server = start_server(api, timeout=0.5)
    try:
        with client_for(server) as client:
            with pytest.raises(openai.APIStatusError) as whole:
                client.chat.completions.create(model="m", messages=MESSAGES)
            with pytest.raises(openai.APIStatusError) as streamed:
                client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    finally:
        api.gate.set()
    assert (whole.value.status_code, whole.value.body["code"]) == (504, "timeout")
    assert streamed.value.status_code == 504
    assert server.status.endpoints[0].timed_out == 2


class ManyTokens(ls.LitAPI):
    def predict(self, request: Any) -> Iterator[str]:
        for i in range(200):  # more than a stream's window of unsent chunks
            yield f"{i} "


def test_long_streamed_choices_finish_with_a_single_worker(start_server: Callable[..., LitServer]) -> None:
    # The choices run one after the other on the one worker: the first must be read while the second waits.
    server = start_server(ManyTokens(spec=ls.OpenAISpec()), timeout=10)
    with client_for(server) as client:
        chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, n=2, stream=True))
    texts = {0: "", 1: ""}
    for chunk in chunks:
        texts[chunk.choices[0].index] += chunk.choices[0].delta.content or ""
    expected = "".join(f"{i} " for i in range(200))
    assert texts == {0: expected, 1: expected}
    assert server.status.endpoints[0].timed_out == 0
