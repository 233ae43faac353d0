"""GET `status_path` (default `/status`): a live status page in the browser, and its JSON feed.

The page is one self-contained HTML document (`status_page.html`: inline CSS and script, nothing
fetched from elsewhere, a strict Content-Security-Policy with a fresh nonce per answer). Its script
polls `GET {status_path}?format=json` about once a second and lays out the view model of
`litserve.status_view`, the same one the notebook panel renders. Short polls rather than a server-sent
event stream: no response stays open to hold up `stop()` (Hypercorn waits for open ones), and a stopped
server is noticed at the next poll.

Protection, when the server has an API key (every route but /health needs it): a browser cannot send
`X-API-Key` when it navigates, so the page takes the key once as `?api_key=<key>`, answers with a
redirect to the bare path (the key leaves the address bar and the history) and sets a cookie scoped to
this path (HttpOnly, SameSite=Strict, Secure over https). The cookie holds an HMAC of the key for this
page, never the key, so it opens nothing but this page and its feed. The feed also takes the
`X-API-Key` header, for scripts. Every comparison is constant time (`ApiKeyCheck`).
"""

from __future__ import annotations

import enum
import functools
import html
import importlib.resources
import secrets
from typing import final

from quart import Quart, Response, request

from litserve.codec import encode_json
from litserve.exceptions import INVALID_API_KEY
from litserve.status_view import status_view
from litserve.web.auth import API_KEY_HEADER, ApiKeyCheck
from litserve.web.context import WebContext
from litserve.web.routes import error

__all__ = ["COOKIE_NAME", "KEY_PARAMETER", "Access", "StatusPage", "add_status_page", "content_security_policy"]

COOKIE_NAME = "litserve_status"
KEY_PARAMETER = "api_key"
_TOKEN_PURPOSE = "litserve status page"
_NONCE = "__NONCE__"  # the template's placeholder
_SAFE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Access(enum.Enum):
    """How a request to the status path proved it may read it."""

    OPEN = "open"  # the server has no API key
    HEADER = "header"  # X-API-Key
    COOKIE = "cookie"  # the cookie a first `?api_key=` visit set
    PARAMETER = "parameter"  # ?api_key=<key>
    DENIED = "denied"


def add_status_page(app: Quart, context: WebContext) -> None:
    """Serve the status page and its feed at `context.options.status_path` (nothing when it is None)."""
    path = context.options.status_path
    if path is None:
        return
    page = StatusPage(context, path)
    app.add_url_rule(path, "status_page", view_func=page.handle, methods=["GET"])


@functools.cache
def _template() -> str:
    # Read on first use, not at import: importing litserve reads no files.
    return importlib.resources.files("litserve.web").joinpath("status_page.html").read_text(encoding="utf-8")


def content_security_policy(nonce: str) -> str:
    """Only this document's own inline style and script run; the script may talk to this origin only."""
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


@final
class StatusPage:
    """The GET handler of the status path: the page, or with `?format=json` the view model."""

    def __init__(self, context: WebContext, path: str) -> None:
        self._status = context.status
        self._api_key = context.api_key
        self._path = path
        self._token = None if context.api_key is None else context.api_key.token(_TOKEN_PURPOSE)

    async def handle(self) -> Response:
        access = _access(self._api_key)
        wants_json = request.args.get("format") == "json"
        if access is Access.DENIED:
            return error(INVALID_API_KEY) if wants_json else self._denied()
        if wants_json:
            return self._feed()
        if access is Access.PARAMETER:
            return self._with_cookie(Response("", status=303, headers={"Location": self._path, **_SAFE_HEADERS}))
        page = self._page()
        return self._with_cookie(page) if access is Access.HEADER else page

    def _feed(self) -> Response:
        body = encode_json(status_view(self._status()))
        return Response(body, status=200, content_type="application/json", headers=_SAFE_HEADERS)

    def _page(self) -> Response:
        nonce = secrets.token_urlsafe(18)
        headers = {**_SAFE_HEADERS, "Content-Security-Policy": content_security_policy(nonce)}
        headers["X-Frame-Options"] = "DENY"
        body = _template().replace(_NONCE, nonce)
        return Response(body, status=200, content_type="text/html; charset=utf-8", headers=headers)

    def _denied(self) -> Response:
        # A small document of its own (with an inline icon, so the browser asks for no /favicon.ico).
        path = html.escape(self._path)
        hint = (
            '<!doctype html><html lang="en"><meta charset="utf-8"><link rel="icon" href="data:,">'
            "<title>litserve: API key needed</title><p>401 Unauthorized: this server has an API key. Open "
            f"<code>{path}?{KEY_PARAMETER}=&lt;your key&gt;</code> once; the browser then keeps a cookie for "
            "this page only. Scripts may send the <code>X-API-Key</code> header instead.</p></html>\n"
        )
        headers = {**_SAFE_HEADERS, "Content-Security-Policy": "default-src 'none'; img-src data:"}
        return Response(hint, status=401, content_type="text/html; charset=utf-8", headers=headers)

    def _with_cookie(self, response: Response) -> Response:
        assert self._token is not None  # only a server with an API key gets here
        response.set_cookie(
            COOKIE_NAME,
            self._token,
            path=self._path,
            secure=request.scheme == "https",
            httponly=True,
            samesite="Strict",
        )
        return response


def _access(api_key: ApiKeyCheck | None) -> Access:
    if api_key is None:
        return Access.OPEN
    if api_key.check(request.headers.get(API_KEY_HEADER)) is None:
        return Access.HEADER
    if api_key.is_token(request.cookies.get(COOKIE_NAME), _TOKEN_PURPOSE):
        return Access.COOKIE
    given = request.args.get(KEY_PARAMETER)
    if given is not None and api_key.check(given) is None:
        return Access.PARAMETER
    return Access.DENIED
