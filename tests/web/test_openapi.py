"""GET /openapi.json: OpenAPI 3.1 from the endpoints' pydantic models and the status-code table.

Runs on Quart's in-process test client (`AppClient`). The docs page, and where both routes live, are in
test_docs_page.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel, ConfigDict

from litserve import LitAPI, LitServer, OpenAIEmbeddingSpec, OpenAISpec
from litserve.test_examples import SimpleBatchedAPI, SimpleStreamAPI
from litserve.test_examples.openai_embedding_spec_example import TestEmbedAPI
from litserve.test_examples.openai_spec_example import TestAPI as ChatAPI
from tests.apis import SquareAPI
from tests.app_client import AppClient

StartApp = Callable[..., AppClient]
Start = Callable[..., LitServer]


class Question(BaseModel):
    text: str
    top_k: int = 3


class Answer(BaseModel):
    label: str
    score: float


class TypedAPI(LitAPI):
    """Classifies a question."""

    def decode_request(self, request: Question) -> str:
        return request.text

    def predict(self, x: str) -> str:
        return x.upper()

    def encode_response(self, output: str) -> Answer:
        return Answer(label=output, score=1.0)


class TypedStreamAPI(LitAPI):
    def decode_request(self, request: Question) -> str:
        return request.text

    def predict(self, x: str) -> Iterator[str]:
        yield from x.split()

    def encode_response(self, outputs: Iterator[str]) -> Iterator[Answer]:
        for word in outputs:
            yield Answer(label=word, score=0.5)


@pytest.fixture
def app() -> Iterator[StartApp]:
    """`AppClient`s in thread mode (what a document says does not depend on the worker mode)."""
    clients: list[AppClient] = []

    def start(lit_api: Any, **kwargs: Any) -> AppClient:
        clients.append(AppClient(lit_api, **kwargs))
        return clients[-1]

    yield start
    for client in clients:
        client.close()


def document_of(client: AppClient, **headers: str) -> dict[str, Any]:
    response = client.get("/openapi.json", headers=headers)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    document = response.json()
    validate(document)  # OpenAPI 3.1, JSON Schema 2020-12 for the schemas; raises on any mistake
    return document


def deref(document: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    prefix = "#/components/schemas/"
    assert ref["$ref"].startswith(prefix), ref
    schema: dict[str, Any] = document["components"]["schemas"][ref["$ref"][len(prefix) :]]
    return schema


# --- the document --------------------------------------------------------------------------------------


def _several() -> list[LitAPI]:
    return [SquareAPI(api_path="/square"), TypedAPI(api_path="/classify"), SimpleStreamAPI(stream=True)]


@pytest.mark.parametrize(
    ("make_apis", "paths"),
    [
        (lambda: SquareAPI(), ["/predict"]),
        (lambda: TypedAPI(), ["/predict"]),
        (lambda: SimpleStreamAPI(stream=True), ["/predict"]),
        (lambda: SimpleBatchedAPI(max_batch_size=4, batch_timeout=0.01), ["/predict"]),
        (lambda: ChatAPI(spec=OpenAISpec()), ["/v1/chat/completions", "/v1/models"]),
        (lambda: TestEmbedAPI(spec=OpenAIEmbeddingSpec()), ["/v1/embeddings"]),
        (_several, ["/square", "/classify", "/predict"]),
    ],
    ids=["plain", "pydantic", "stream", "batched", "openai-chat", "openai-embeddings", "several"],
)
@pytest.mark.parametrize("api_key", [None, "secret"], ids=["open", "key"])
def test_the_document_is_valid_openapi_3_1(app: StartApp, make_apis: Any, paths: list[str], api_key: Any) -> None:
    client = app(make_apis(), api_key=api_key)
    document = document_of(client, **({"X-API-Key": api_key} if api_key else {}))
    assert document["openapi"] == "3.1.0" and document["info"]["title"] == "litserve"
    assert set(paths) | {"/", "/health", "/info", "/metrics", "/status"} <= set(document["paths"])
    assert "/openapi.json" not in document["paths"] and "/docs" not in document["paths"]


def test_pydantic_models_are_the_request_and_answer_schemas(app: StartApp) -> None:
    document = document_of(app(TypedAPI()))
    operation = document["paths"]["/predict"]["post"]
    assert {"Question", "Answer", "HTTPError", "HTTPValidationError", "ValidationError"} <= set(
        document["components"]["schemas"]
    )
    request_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert deref(document, request_schema)["required"] == ["text"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(deref(document, answer)["properties"]) == {"label", "score"}
    assert operation["summary"] == "TypedAPI" and operation["description"] == "Classifies a question."


def test_without_annotations_bodies_are_free_form(app: StartApp) -> None:
    operation = document_of(app(SquareAPI()))["paths"]["/predict"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["type"] == "object"
    assert "$ref" not in operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert "422" not in operation["responses"]  # nothing validates the body


class Opaque:
    """A class pydantic can hold (arbitrary_types_allowed) but not describe as JSON Schema."""


class OpaqueAnswer(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    value: Opaque


class OpaqueAPI(TypedAPI):
    def encode_response(self, output: str) -> OpaqueAnswer:  # type: ignore[override]
        return OpaqueAnswer(value=Opaque())


def test_a_model_pydantic_cannot_describe_is_free_form_and_the_server_starts(
    app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="litserve"):
        document = document_of(app(OpaqueAPI()))
    answer = document["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert "$ref" not in answer and "OpaqueAnswer" not in document["components"]["schemas"]
    assert "Question" in document["components"]["schemas"]  # the other models are still described
    assert any("OpaqueAnswer as free-form JSON" in r.getMessage() for r in caplog.records)


def test_422_is_pydantics_error_list_as_the_server_sends_it(app: StartApp) -> None:
    client = app(TypedAPI())
    response = document_of(client)["paths"]["/predict"]["post"]["responses"]["422"]
    content = response["content"]["application/json"]
    assert content["schema"] == {"$ref": "#/components/schemas/HTTPValidationError"}
    [example] = content["examples"].values()
    assert example["value"] == client.post({}).json()  # the example is the real answer to `{}`


def test_error_examples_are_the_answers_of_the_status_code_table(app: StartApp) -> None:
    client = app(SquareAPI(), api_key="secret")
    responses = document_of(client, **{"X-API-Key": "secret"})["paths"]["/predict"]["post"]["responses"]
    assert {"400", "401", "413", "500", "503", "504"} <= set(responses)

    def examples(status: str) -> list[Any]:
        return [e["value"] for e in responses[status]["content"]["application/json"]["examples"].values()]

    assert client.post(data=b"{not json", headers={"X-API-Key": "secret"}).json() in examples("400")
    assert client.post({"input": 1}).json() in examples("401")
    assert {"detail": "Server is overloaded"} in examples("503")
    assert responses["503"]["headers"]["Retry-After"]["schema"] == {"type": "string"}


def test_a_stream_is_ndjson_of_its_chunk_model(app: StartApp) -> None:
    document = document_of(app(TypedStreamAPI(stream=True)))
    answer = document["paths"]["/predict"]["post"]["responses"]["200"]
    assert list(answer["content"]) == ["application/x-ndjson"]
    assert deref(document, answer["content"]["application/x-ndjson"]["schema"])["title"] == "Answer"


def test_a_stream_without_a_model_may_also_be_text_or_bytes(app: StartApp) -> None:
    answer = document_of(app(SimpleStreamAPI(stream=True)))["paths"]["/predict"]["post"]["responses"]["200"]
    assert list(answer["content"]) == ["application/x-ndjson", "text/plain", "application/octet-stream"]


def test_a_batched_endpoint_says_so(app: StartApp) -> None:
    operation = document_of(app(SimpleBatchedAPI(max_batch_size=4)))["paths"]["/predict"]["post"]
    assert "up to 4" in operation["description"]
    assert {"detail": "Batch size mismatch"} in [
        e["value"] for e in operation["responses"]["500"]["content"]["application/json"]["examples"].values()
    ]


def test_openai_routes_use_the_specs_models_sse_and_openais_errors(app: StartApp) -> None:
    client = app([ChatAPI(spec=OpenAISpec()), TestEmbedAPI(spec=OpenAIEmbeddingSpec())])
    document = document_of(client)
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletionRequest")
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    error_schema = chat["responses"]["422"]["content"]["application/json"]["schema"]
    assert error_schema == {"$ref": "#/components/schemas/OpenAIErrorBody"}
    [example] = chat["responses"]["422"]["content"]["application/json"]["examples"].values()
    assert example["value"] == client.post({}, path="/v1/chat/completions").json()
    embeddings = document["paths"]["/v1/embeddings"]["post"]
    answer = embeddings["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["$ref"].endswith("/EmbeddingList")
    assert embeddings["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/EmbeddingRequest")


def test_the_api_key_is_a_security_scheme_only_when_one_is_set(app: StartApp) -> None:
    open_document = document_of(app(SquareAPI()))
    assert "securitySchemes" not in open_document["components"]
    assert all("security" not in op for path in open_document["paths"].values() for op in path.values())
    assert all("401" not in op["responses"] for path in open_document["paths"].values() for op in path.values())

    document = document_of(app([SquareAPI(), ChatAPI(spec=OpenAISpec())], api_key="k"), **{"X-API-Key": "k"})
    schemes = document["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    paths = document["paths"]
    assert paths["/predict"]["post"]["security"] == [{"APIKeyHeader": []}]
    assert paths["/v1/chat/completions"]["post"]["security"] == [{"APIKeyHeader": []}, {"HTTPBearer": []}]
    assert paths["/v1/models"]["get"]["security"] == [{"APIKeyHeader": []}, {"HTTPBearer": []}]
    assert paths["/info"]["get"]["security"] == [{"APIKeyHeader": []}]
    assert "security" not in paths["/health"]["get"]  # probes need no key


def test_an_endpoint_with_its_own_authorize_needs_no_key(app: StartApp) -> None:
    class Authorized(SquareAPI):
        def authorize(self, request: Any) -> None:
            return None

    operation = document_of(app(Authorized(), api_key="k"), **{"X-API-Key": "k"})["paths"]["/predict"]["post"]
    assert "security" not in operation and "authorize" in operation["description"]
    assert operation["responses"]["401"]["content"]["application/json"]["examples"]["example0"]["value"] == {
        "detail": "Unauthorized"
    }
