"""GET /docs: Swagger UI from installed files (offline, same origin only), and where the docs routes live.

The page's content runs on Quart's in-process test client (`AppClient`); moved and disabled routes, which
need LitServer's arguments, and the startup log line keep a real server.
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

from litserve import LitServer
from litserve.exceptions import DOCS_UNAVAILABLE
from litserve.extensions import SHUTDOWN_KEY_ENV
from tests.apis import SquareAPI
from tests.app_client import AppClient

StartApp = Callable[..., AppClient]
Start = Callable[..., LitServer]


@pytest.fixture
def app() -> Iterator[StartApp]:
    """`AppClient`s in thread mode (the page does not depend on the worker mode)."""
    clients: list[AppClient] = []

    def start(lit_api: Any, **kwargs: Any) -> AppClient:
        clients.append(AppClient(lit_api, **kwargs))
        return clients[-1]

    yield start
    for client in clients:
        client.close()


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
