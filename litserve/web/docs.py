"""GET `openapi_path` (the OpenAPI document, built once per start) and GET `docs_path` (Swagger UI).

Swagger UI's files come from an installed package (`flask-swagger-ui`, a dependency: it ships Swagger
UI 5's `dist/`, which renders OpenAPI 3.1, and needs nothing beyond the Flask that Quart already
installs; only its files are used). They are served under the docs path, so the page works offline and
references no other origin; its Content-Security-Policy makes the browser hold it to that.

With an API key, the document is guarded like every route but /health. The page and its assets are
open: they are Swagger UI's own files and say nothing about the server. The page asks for the key when
the document answers 401, sends it as `X-API-Key`, and pre-authorizes Swagger UI with it, so "Try it
out" sends it too. The key never goes into a URL.
"""

from __future__ import annotations

import asyncio
import gzip
import html
import importlib.util
import logging
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

from quart import Quart, Response, request

from litserve.codec import encode_json
from litserve.exceptions import DOCS_UNAVAILABLE
from litserve.web.compression import COMPRESS_LEVEL, accepts_gzip
from litserve.web.context import WebContext
from litserve.web.openapi import API_KEY_SCHEME, openapi_document
from litserve.web.routes import error, guarded

__all__ = ["SWAGGER_UI_PACKAGE", "add_docs_routes"]

logger = logging.getLogger(__name__)

SWAGGER_UI_PACKAGE = "flask-swagger-ui"  # the distribution; its import name is below
_SWAGGER_UI_MODULE = "flask_swagger_ui"
_JS, _CSS = "text/javascript; charset=utf-8", "text/css; charset=utf-8"
# Swagger UI's files the page uses, with their content types.
_VENDORED = {"swagger-ui-bundle.js": _JS, "swagger-ui.css": _CSS, "favicon-32x32.png": "image/png"}
_PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
_NO_SNIFF = ("X-Content-Type-Options", "nosniff")


def add_docs_routes(app: Quart, context: WebContext) -> None:
    """Serve the OpenAPI document and the docs page where `context.options` puts them (None: not served).

    The docs page shows the document, so it is off too when `openapi_path` is None.
    """
    options = context.options
    if options.openapi_path is None:
        return
    document = _Document(context)
    app.add_url_rule(options.openapi_path, "openapi", view_func=guarded(context, document.view), methods=["GET"])
    if options.docs_path is not None:
        _add_page(app, options.docs_path, options.openapi_path)


@final
class _Document:
    """The document's bytes, built on its first request (off the loop: tens of ms for the OpenAI models)
    and kept for this start; a server whose document nobody asks for never builds it."""

    def __init__(self, context: WebContext) -> None:
        self._context = context
        self._body: bytes | None = None

    async def view(self) -> Response:
        body = self._body
        if body is None:  # two first requests at once may both build it: same bytes, no harm
            body = await asyncio.get_running_loop().run_in_executor(None, self._build)
            self._body = body
        return Response(body, status=200, content_type="application/json", headers={"Cache-Control": "no-cache"})

    def _build(self) -> bytes:
        return encode_json(openapi_document(self._context))


def _add_page(app: Quart, docs_path: str, openapi_path: str) -> None:
    folder = _swagger_ui_folder()
    if folder is None:
        package = SWAGGER_UI_PACKAGE
        logger.warning("%s is not installed, so %s answers 501: pip install %s", package, docs_path, package)

        async def missing() -> Response:
            return error(DOCS_UNAVAILABLE)

        app.add_url_rule(docs_path, "docs", view_func=missing, methods=["GET"])
        return
    # Relative links: they keep working when a proxy serves the app under a prefix.
    here = posixpath.dirname(docs_path)
    assets = _Assets(folder, posixpath.basename(docs_path))
    page = _page(assets.prefix, posixpath.relpath(openapi_path, here)).encode()

    async def docs() -> Response:
        headers = {"Content-Security-Policy": _PAGE_POLICY, "Cache-Control": "no-cache", _NO_SNIFF[0]: _NO_SNIFF[1]}
        return Response(page, status=200, content_type="text/html; charset=utf-8", headers=headers)

    app.add_url_rule(docs_path, "docs", view_func=docs, methods=["GET"])
    for name in assets.names:
        app.add_url_rule(f"{docs_path}/{name}", f"docs:{name}", view_func=assets.view(name), methods=["GET"])


def _swagger_ui_folder() -> Path | None:
    """Swagger UI's `dist/` folder in the installed package, found without importing it; None if absent."""
    spec = importlib.util.find_spec(_SWAGGER_UI_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "dist"
    return folder if all((folder / name).is_file() for name in _VENDORED) else None


@final
@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    gzipped: bytes
    content_type: str


@final
class _Assets:
    """The page's files, read and compressed on their first request (off the loop) and kept for this start."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self._folder = folder
        self.prefix = prefix  # the page's links: `<prefix>/<name>`
        self._loaded: dict[str, _Asset] = {}
        self.names = (*_VENDORED, *_OWN)

    def view(self, name: str) -> Any:
        async def asset() -> Response:
            loaded = self._loaded.get(name)
            if loaded is None:
                loaded = await asyncio.get_running_loop().run_in_executor(None, self._load, name)
                self._loaded[name] = loaded
            headers = {"Cache-Control": "public, max-age=3600", "Vary": "Accept-Encoding", _NO_SNIFF[0]: _NO_SNIFF[1]}
            body = loaded.body
            if accepts_gzip(request.headers.get("Accept-Encoding")):
                body, headers["Content-Encoding"] = loaded.gzipped, "gzip"
            return Response(body, status=200, content_type=loaded.content_type, headers=headers)

        asset.__name__ = f"docs_{name.replace('-', '_').replace('.', '_')}"
        return asset

    def _load(self, name: str) -> _Asset:
        if name in _OWN:
            text, content_type = _OWN[name]
            body = text.encode()
        else:
            body, content_type = (self._folder / name).read_bytes(), _VENDORED[name]
        return _Asset(body, gzip.compress(body, compresslevel=COMPRESS_LEVEL, mtime=0), content_type)


def _page(prefix: str, openapi_url: str) -> str:
    prefix, openapi_url = html.escape(prefix), html.escape(openapi_url)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>litserve API docs</title>
<link rel="stylesheet" href="{prefix}/swagger-ui.css">
<link rel="stylesheet" href="{prefix}/litserve-docs.css">
<link rel="icon" type="image/png" href="{prefix}/favicon-32x32.png">
</head>
<body>
<form id="litserve-key" class="litserve-key" hidden>
<label for="litserve-key-input">This server needs an API key (sent as the <code>X-API-Key</code> header)</label>
<input id="litserve-key-input" type="password" autocomplete="off" required>
<button type="submit">Show the API</button>
</form>
<p id="litserve-message" class="litserve-message" role="alert"></p>
<div id="swagger-ui"></div>
<script src="{prefix}/swagger-ui-bundle.js"></script>
<script src="{prefix}/litserve-docs.js" data-openapi="{openapi_url}"></script>
</body>
</html>
"""


# Fetch the document (asking for the key on a 401), then hand it to Swagger UI, pre-authorized with the key.
_SCRIPT = """(function () {
  "use strict";
  var specUrl = document.currentScript.getAttribute("data-openapi");
  var form = document.getElementById("litserve-key");
  var input = document.getElementById("litserve-key-input");
  var message = document.getElementById("litserve-message");

  function show(spec, key) {
    form.hidden = true;
    message.textContent = "";
    var ui = null;
    function authorize() { if (key && ui) { ui.preauthorizeApiKey("__SCHEME__", key); } }
    ui = SwaggerUIBundle({
      spec: spec,
      dom_id: "#swagger-ui",
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      deepLinking: true,
      validatorUrl: null,
      onComplete: function () { window.setTimeout(authorize, 0); }
    });
    authorize();
    window.ui = ui;
  }

  function load(key) {
    var headers = key ? {"X-API-Key": key} : {};
    fetch(specUrl, {headers: headers, credentials: "same-origin", cache: "no-store"}).then(function (response) {
      if (response.status === 401) {
        form.hidden = false;
        message.textContent = key ? "The server refused that key." : "";
        input.focus();
        return null;
      }
      if (!response.ok) { throw new Error(specUrl + " answered " + response.status); }
      return response.json().then(function (spec) { show(spec, key); });
    }).catch(function (problem) {
      message.textContent = "Could not load the API document: " + problem.message;
    });
  }

  form.addEventListener("submit", function (event) { event.preventDefault(); load(input.value); });
  load("");
})();
""".replace("__SCHEME__", API_KEY_SCHEME)

_STYLE = """body { margin: 0; background: #fafafa; }
.litserve-key { max-width: 1460px; margin: 24px auto 0; padding: 0 20px; font-family: sans-serif; }
.litserve-key label { display: block; margin-bottom: 8px; }
.litserve-key input { padding: 6px; width: 320px; }
.litserve-message { max-width: 1460px; margin: 8px auto; padding: 0 20px; font-family: sans-serif; color: #a40000; }
"""

_OWN = {"litserve-docs.js": (_SCRIPT, _JS), "litserve-docs.css": (_STYLE, _CSS)}
