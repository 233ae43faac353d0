"""OpenAI embeddings, called by the official `openai` client against a real server, in both worker modes."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import litserve as ls
from litserve import LitServer
from litserve.test_examples.openai_embedding_spec_example import TestEmbedAPI, TestEmbedAPIWithUsage
from tests.helpers import post

openai = pytest.importorskip("openai", reason="the official openai client is a test dependency")


class LengthEmbedder(ls.LitAPI):
    """A deterministic embedding: [len(text), 0.5, -2.25] per text (float32-exact values)."""

    def predict(self, texts: Any) -> list[list[float]]:
        texts = texts if isinstance(texts, list) else [texts]
        return [[float(len(text)), 0.5, -2.25] for text in texts]


class BatchedLengthEmbedder(ls.LitAPI):
    """Batched: predict gets one input list per request and answers with a numpy array, one row each."""

    def predict(self, batch: Any) -> Any:
        import numpy as np

        return np.array([[float(len(inputs[0])), float(len(batch))] for inputs in batch])


class WrongCount(ls.LitAPI):
    def predict(self, texts: Any) -> list[list[float]]:
        return [[1.0], [2.0], [3.0]]


class NotADict(ls.LitAPI):
    def predict(self, texts: Any) -> list[list[float]]:
        return [[1.0]]

    def encode_response(self, output: Any) -> Any:
        return output


def client_for(server: LitServer) -> Any:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_float_and_base64_embeddings_carry_the_same_values(start_server: Callable[..., LitServer]) -> None:
    server = start_server(LengthEmbedder(spec=ls.OpenAIEmbeddingSpec()))
    with client_for(server) as client:
        floats = client.embeddings.create(model="m", input=["abc", "hello"], encoding_format="float")
        default = client.embeddings.create(model="m", input="abcd")  # the client asks for base64 and decodes it
        raw = client.embeddings.create(model="m", input="abcd", encoding_format="base64")
    assert [item.embedding for item in floats.data] == [[3.0, 0.5, -2.25], [5.0, 0.5, -2.25]]
    assert [item.index for item in floats.data] == [0, 1] and floats.model == "m" and floats.object == "list"
    assert default.data[0].embedding == [4.0, 0.5, -2.25]
    packed = base64.b64decode(raw.data[0].embedding)
    assert struct.unpack("<3f", packed) == (4.0, 0.5, -2.25)


def test_the_litserve_example_gives_768_dimensions_and_usage(start_server: Callable[..., LitServer]) -> None:
    server = start_server(TestEmbedAPIWithUsage(spec=ls.OpenAIEmbeddingSpec()))
    with client_for(server) as client:
        answer = client.embeddings.create(model="lit", input=["a", "b"], encoding_format="float")
    assert [len(item.embedding) for item in answer.data] == [768, 768]
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (10, 10)


def test_batched_requests_each_get_their_own_row(start_server: Callable[..., LitServer]) -> None:
    server = start_server(BatchedLengthEmbedder(max_batch_size=4, batch_timeout=0.2, spec=ls.OpenAIEmbeddingSpec()))
    texts = ["a", "bb", "ccc", "dddd"]
    with client_for(server) as client, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda text: client.embeddings.create(model="m", input=[text]), texts))
    assert [answer.data[0].embedding[0] for answer in answers] == [1.0, 2.0, 3.0, 4.0]
    many = post(server, {"model": "m", "input": ["a", "b"]}, path="/v1/embeddings")
    assert many.status_code == 400 and "one input" in many.json()["error"]["message"]


def test_failures_are_answered_in_the_openai_envelope(start_server: Callable[..., LitServer]) -> None:
    wrong_count = start_server(WrongCount(spec=ls.OpenAIEmbeddingSpec()))
    with client_for(wrong_count) as client, pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="m", input="x", encoding_format="float")
    assert "3 embeddings" in str(wrong_count.status.last_error)
    not_a_dict = start_server(NotADict(spec=ls.OpenAIEmbeddingSpec()))
    answer = post(not_a_dict, {"model": "m", "input": "x"}, path="/v1/embeddings")
    assert answer.status_code == 500 and answer.json()["error"]["type"] == "server_error"
    invalid = post(not_a_dict, {"input": "x"}, path="/v1/embeddings")
    assert invalid.status_code == 422 and "model" in invalid.json()["error"]["message"]


def test_a_streaming_embedder_is_refused_with_a_fix() -> None:
    class Yields(ls.LitAPI):
        def predict(self, texts: Any) -> Any:
            yield [1.0]

    with pytest.raises(ValueError, match="embeddings are not streamed"):
        Yields(spec=ls.OpenAIEmbeddingSpec())


def test_the_older_server_form(lit_server: Callable[..., LitServer]) -> None:
    with pytest.warns(DeprecationWarning, match="pass it to the LitAPI"):
        server = lit_server(TestEmbedAPI(), spec=ls.OpenAIEmbeddingSpec())
    with client_for(server) as client:
        assert len(client.embeddings.create(model="m", input="x").data[0].embedding) == 768
