"""GET /openapi.json (OpenAPI 3.1, from the endpoints' pydantic models) and GET /docs (Swagger UI, offline).

What a document says runs on Quart's in-process test client (`AppClient`); moved and disabled routes,
which need LitServer's arguments, and the startup log line keep a real server.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
import requests
from openapi_spec_validator import validate
from pydantic import BaseModel, ConfigDict

from litserve import LitAPI, LitServer, OpenAIEmbeddingSpec, OpenAISpec
from litserve.exceptions import DOCS_UNAVAILABLE
from litserve.extensions import SHUTDOWN_KEY_ENV
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


# --- the docs page -------------------------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.openapi: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.links += [value for name, value in attrs if name in ("src", "href") and value]
        if values.get("data-openapi"):
            self.openapi.append(str(values["data-openapi"]))


def links_of(page: str) -> _Links:
    parser = _Links()
    parser.feed(page)
    return parser


_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png"}


def test_the_docs_page_loads_only_assets_the_server_serves(app: StartApp) -> None:
    client = app(SquareAPI())
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert not re.search(r"(https?:)?//", page.text), "the page must not reference another origin"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy
    parsed = links_of(page.text)
    assert parsed.openapi == ["openapi.json"]  # relative to /docs: /openapi.json
    assert {"docs/swagger-ui-bundle.js", "docs/swagger-ui.css", "docs/litserve-docs.js"} <= set(parsed.links)
    for link in parsed.links:
        asset = client.get("/" + link)
        assert asset.status_code == 200, link
        assert asset.headers["content-type"] == _TYPES[link[link.rindex(".") :]], link
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
        if not link.endswith(".png"):
            assert len(asset.content) > 100
    script = client.get("/docs/litserve-docs.js").text
    assert "validatorUrl: null" in script  # Swagger UI would otherwise call an online validator
    assert not re.search(r"https?://", script + client.get("/docs/litserve-docs.css").text)


def test_docs_assets_are_gzipped_for_clients_that_accept_it(app: StartApp) -> None:
    client = app(SquareAPI())
    plain = client.get("/docs/swagger-ui.css")
    packed = client.get("/docs/swagger-ui.css", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in plain.headers and packed.headers["Content-Encoding"] == "gzip"
    assert len(packed.content) < len(plain.content) and plain.headers["Vary"] == "Accept-Encoding"


def test_with_an_api_key_the_document_needs_it_and_the_page_asks_for_it(start_app: StartApp) -> None:
    client = start_app(SquareAPI(), api_key="secret")
    refused = client.get("/openapi.json")
    assert refused.status_code == 401 and "X-API-Key" in refused.json()["detail"]
    assert client.get("/openapi.json", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/openapi.json", headers={"X-API-Key": "secret"}).status_code == 200
    # The page and Swagger UI's files are open (they say nothing about the server); the key is typed in.
    page = client.get("/docs")
    assert page.status_code == 200 and 'id="litserve-key-input"' in page.text
    for link in links_of(page.text).links:
        assert client.get("/" + link).status_code == 200, link
    script = client.get("/docs/litserve-docs.js").text
    assert '"X-API-Key": key' in script and 'preauthorizeApiKey("APIKeyHeader", key)' in script


def test_without_swagger_uis_files_the_page_says_what_to_install(
    app: StartApp, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "flask_swagger_ui", None)  # as if it were not installed
    with caplog.at_level(logging.WARNING, logger="litserve"):
        client = app(SquareAPI())
    answer = client.get("/docs")
    assert (answer.status_code, answer.json()) == (DOCS_UNAVAILABLE.status, {"detail": DOCS_UNAVAILABLE.detail})
    assert "pip install flask-swagger-ui" in answer.json()["detail"]
    assert client.get("/docs/swagger-ui-bundle.js").status_code == 404
    assert client.get("/openapi.json").status_code == 200  # the document needs nothing else
    assert any("flask-swagger-ui is not installed" in r.getMessage() for r in caplog.records)


# --- where the routes live (LitServer's arguments) -----------------------------------------------------


def get(server: LitServer, path: str) -> requests.Response:
    return requests.get(server.url + path, timeout=30)


def test_moved_routes_are_served_and_listed_where_they_are(lit_server: Start) -> None:
    server = lit_server(
        SquareAPI(),
        openapi_path="/v1/openapi.json",
        docs_path="/api/docs",
        healthcheck_path="/v1/health",
        metrics_path=None,
    )
    assert get(server, "/openapi.json").status_code == 404 and get(server, "/docs").status_code == 404
    document = get(server, "/v1/openapi.json").json()
    validate(document)
    assert "/v1/health" in document["paths"] and "/health" not in document["paths"]
    assert "/metrics" not in document["paths"]
    page = get(server, "/api/docs")
    parsed = links_of(page.text)
    assert parsed.openapi == ["../v1/openapi.json"]  # from /api/docs
    assert all(get(server, "/api/" + link).status_code == 200 for link in parsed.links)


@pytest.mark.parametrize(
    ("kwargs", "document_served", "page_served"),
    [
        ({"openapi_path": None}, False, False),  # the page would have nothing to show
        ({"docs_path": None}, True, False),
        ({"disable_openapi_url": True}, False, False),  # LitServe's switch
        ({"disable_openapi_url": False}, True, True),
    ],
)
def test_turned_off_routes_answer_404(lit_server: Start, kwargs: Any, document_served: bool, page_served: bool) -> None:
    server = lit_server(SquareAPI(), **kwargs)
    assert get(server, "/openapi.json").status_code == (200 if document_served else 404)
    assert get(server, "/docs").status_code == (200 if page_served else 404)
    assert get(server, "/docs/swagger-ui-bundle.js").status_code == (200 if page_served else 404)


def test_the_shutdown_route_is_listed_with_its_own_bearer_token(
    lit_server: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SHUTDOWN_KEY_ENV, "stop-token")
    server = lit_server(SquareAPI(), enable_shutdown_api=True)
    document = get(server, "/openapi.json").json()
    validate(document)
    shutdown = document["paths"]["/shutdown"]["post"]
    assert shutdown["security"] == [{"ShutdownBearer": []}] and "401" in shutdown["responses"]
    assert document["components"]["securitySchemes"] == {
        "ShutdownBearer": {"type": "http", "scheme": "bearer", "description": "LIT_SHUTDOWN_API_KEY"}
    }


def test_disable_openapi_url_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="disable_openapi_url must be True or False"):
        LitServer(SquareAPI(), disable_openapi_url="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("disable", [False, True])
def test_start_logs_where_swagger_ui_is_as_litserve_does(
    lit_server: Start, caplog: pytest.LogCaptureFixture, disable: bool
) -> None:
    with caplog.at_level(logging.INFO, logger="litserve"):
        server = lit_server(SquareAPI(), disable_openapi_url=disable)
    lines = [r.getMessage() for r in caplog.records if "Swagger UI" in r.getMessage()]
    assert lines == ([] if disable else [f"Swagger UI is available at {server.url}/docs"])
