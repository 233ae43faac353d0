"""GET /status: the live status page (in a real headless Chromium) and its JSON feed, with and without a key."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import requests

from litserve import LitServer
from litserve.codec import encode_json
from litserve.status_view import status_view
from tests.apis import SquareAPI
from tests.app_client import AppClient
from tests.browser import BrowserPage
from tests.helpers import post, wait_until

Start = Callable[..., LitServer]
StartApp = Callable[..., AppClient]
KEY = "s3cret-key"
# The script writes a marker when it runs; the page must show it as text instead.
HOSTILE = "<script>window.litserveXss = 1</script><img src=x onerror='window.litserveXss = 2'>"


class HostileErrorAPI(SquareAPI):
    """Fails on {"input": "fail"} with an error message that holds markup."""

    def predict(self, x: Any) -> Any:
        if x == "fail":
            raise RuntimeError(HOSTILE)
        return super().predict(x)


def _feed(client: AppClient, **kwargs: Any) -> Any:
    answer = client.get("/status", query_string={"format": "json"}, **kwargs)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _cell(view: dict[str, Any], table: str, row: str, key: str) -> str:
    found = next(t for t in view["tables"] if t["name"] == table)
    column = [c["key"] for c in found["columns"]].index(key)
    return next(r[column] for r in found["rows"] if r[0] == row)


# --- the feed, both worker modes ----------------------------------------------------------------------


def test_feed_is_the_view_model_of_the_servers_status(start_app: StartApp) -> None:
    client = start_app(SquareAPI())
    for i in range(3):
        assert client.post({"input": i}).status_code == 200
    view = _feed(client)
    expected = json.loads(encode_json(status_view(client.status)))
    assert view["tables"][0] == expected["tables"][0]  # the endpoints, as the notebook panel shows them
    assert _cell(view, "endpoints", "/predict", "ok") == "3"
    assert [row[0] for row in view["tables"][1]["rows"]] == [row[0] for row in expected["tables"][1]["rows"]]
    assert (view["state"], view["requests"], view["last_error"]) == ("running", 3, None)


def test_feed_shows_the_last_error_with_its_traceback(start_app: StartApp) -> None:
    client = start_app(HostileErrorAPI())
    assert client.post({"input": "fail"}).status_code == 500
    assert wait_until(lambda: _feed(client)["last_error"] is not None, 10), "the error never reached the status"
    error = _feed(client)["last_error"]
    assert error["summary"] == f"RuntimeError: {HOSTILE}"
    assert "Traceback" in error["traceback"] and "raise RuntimeError(HOSTILE)" in error["traceback"]
    assert _cell(_feed(client), "endpoints", "/predict", "server_errors") == "1"


def test_page_is_one_document_under_a_strict_policy(start_app: StartApp) -> None:
    page = start_app(SquareAPI()).get("/status")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce and f"script-src 'nonce-{nonce[1]}'" in policy and "default-src 'none'" in policy
    assert "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.text.count(f'nonce="{nonce[1]}"') == 2  # the one style and the one script
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)  # nothing from elsewhere
    assert (page.headers["Cache-Control"], page.headers["X-Content-Type-Options"]) == ("no-store", "nosniff")
    assert page.headers["Referrer-Policy"] == "no-referrer"


def test_each_page_gets_a_fresh_nonce(start_app: StartApp) -> None:
    client = start_app(SquareAPI())
    first, second = (client.get("/status").headers["Content-Security-Policy"] for _ in range(2))
    assert first != second


def test_page_and_feed_need_the_key_when_one_is_set(start_server: Start) -> None:
    server = start_server(SquareAPI(), api_key=KEY)
    url = server.url + "/status"
    refused = requests.get(url, timeout=10)
    assert refused.status_code == 401 and "?api_key=" in refused.text and KEY not in refused.text
    assert requests.get(url, params={"format": "json"}, timeout=10).status_code == 401
    assert requests.get(url, params={"api_key": "wrong"}, timeout=10, allow_redirects=False).status_code == 401
    assert requests.get(url, cookies={"litserve_status": KEY}, timeout=10).status_code == 401  # not the key itself
    assert requests.get(url, headers={"X-API-Key": KEY}, params={"format": "json"}, timeout=10).status_code == 200
    assert requests.get(url, params={"format": "json", "api_key": KEY}, timeout=10).status_code == 200
    with_header = requests.get(url, headers={"X-API-Key": KEY}, timeout=10)  # e.g. a proxy that adds it
    assert with_header.status_code == 200 and "litserve_status" in with_header.cookies  # so the page's feed works


def test_the_key_once_in_the_address_becomes_a_cookie_for_this_page_only(start_server: Start) -> None:
    server = start_server(SquareAPI(), api_key=KEY)
    url = server.url + "/status"
    first = requests.get(url, params={"api_key": KEY}, timeout=10, allow_redirects=False)
    assert first.status_code == 303 and first.headers["Location"] == "/status"
    cookie = first.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "Path=/status" in cookie and "SameSite=Strict" in cookie and KEY not in cookie
    token = first.cookies["litserve_status"]
    assert requests.get(url, cookies={"litserve_status": token}, timeout=10).status_code == 200
    feed = requests.get(url, params={"format": "json"}, cookies={"litserve_status": token}, timeout=10)
    assert feed.status_code == 200 and feed.json()["state"] == "running"
    info = requests.get(server.url + "/info", cookies={"litserve_status": token}, timeout=10)
    assert info.status_code == 401  # the cookie opens the status page, nothing else


def test_status_path_moves_or_turns_off_the_page(lit_server: Start) -> None:
    moved = lit_server(SquareAPI(), status_path="/live")
    assert requests.get(moved.url + "/live", timeout=10).status_code == 200
    assert requests.get(moved.url + "/status", timeout=10).status_code == 404
    off = lit_server(SquareAPI(), status_path=None)
    assert requests.get(off.url + "/status", timeout=10).status_code == 404


# --- the page in a real browser ----------------------------------------------------------------------


def _open(browser: BrowserPage, url: str) -> None:
    """Load the page and wait (bounded) until it has shown at least one update from the feed."""
    answer = browser.page.goto(url)
    assert answer is not None and answer.status == 200
    browser.page.wait_for_function("() => Number(document.body.dataset.updates) >= 1")


def _shown(browser: BrowserPage, key: str, row: str = "/predict", table: str = "endpoints") -> str:
    return str(browser.page.text_content(f'#{table} tr[data-row="{row}"] td[data-key="{key}"]'))


def _wait_shown(browser: BrowserPage, key: str, value: str, row: str = "/predict") -> None:
    selector = f'#endpoints tr[data-row="{row}"] td[data-key="{key}"]'
    browser.page.wait_for_function(
        "([selector, value]) => document.querySelector(selector)?.textContent === value", arg=[selector, value]
    )


def test_page_loads_clean_and_shows_the_servers_numbers(lit_server: Start, browser_page: BrowserPage) -> None:
    server = lit_server(SquareAPI())
    for i in range(3):
        assert post(server, {"input": i}).status_code == 200
    _open(browser_page, server.url + "/status")
    status = server.status
    assert _shown(browser_page, "ok") == str(status.endpoints[0].ok) == "3"
    assert _shown(browser_page, "served", row=status.workers[0].name, table="workers") == "3"
    assert browser_page.page.text_content("#state") == "running"
    browser_page.screenshot("status")
    assert browser_page.console_errors == []
    assert browser_page.foreign_requests(server.url) == []


def test_page_updates_when_requests_arrive(lit_server: Start, browser_page: BrowserPage) -> None:
    server = lit_server(SquareAPI())
    _open(browser_page, server.url + "/status")
    assert _shown(browser_page, "ok") == "0"
    for i in range(5):
        assert post(server, {"input": i}).status_code == 200
    _wait_shown(browser_page, "ok", "5")
    assert browser_page.console_errors == []


def test_last_error_is_shown_as_text_with_its_traceback(lit_server: Start, browser_page: BrowserPage) -> None:
    server = lit_server(HostileErrorAPI())
    assert post(server, {"input": "fail"}).status_code == 500
    _open(browser_page, server.url + "/status")
    page = browser_page.page
    page.wait_for_selector("#error-traceback", state="attached")
    page.click("#error-summary")  # open the traceback
    page.wait_for_selector("#error-traceback", state="visible")
    assert HOSTILE in str(page.text_content("#error-summary"))
    assert "raise RuntimeError(HOSTILE)" in str(page.text_content("#error-traceback"))
    assert page.evaluate("window.litserveXss") is None  # neither the script nor the onerror ran
    assert page.evaluate("document.querySelectorAll('script, img').length") == 1  # the page's own script
    browser_page.screenshot("status-error")
    assert browser_page.console_errors == []


def test_the_key_scheme_works_in_the_browser(lit_server: Start, browser_page: BrowserPage) -> None:
    server = lit_server(SquareAPI(), api_key=KEY)
    page = browser_page.page
    refused = page.goto(server.url + "/status")
    assert refused is not None and refused.status == 401
    browser_page.forget()
    _open(browser_page, f"{server.url}/status?api_key={KEY}")
    assert page.url == server.url + "/status"  # the key left the address bar
    assert page.evaluate("document.cookie") == ""  # HttpOnly: the page's script cannot read it
    assert post(server, {"input": 2}, headers={"X-API-Key": KEY}).status_code == 200
    _wait_shown(browser_page, "ok", "1")  # the feed takes the cookie
    assert browser_page.console_errors == []


def test_page_says_so_and_backs_off_when_the_server_stops(browser_page: BrowserPage) -> None:
    server = LitServer(SquareAPI(), accelerator="cpu").start(port=0)
    try:
        _open(browser_page, server.url + "/status")
    finally:
        server.stop()
    page = browser_page.page
    page.wait_for_function("() => document.body.dataset.live === 'false'")
    assert "trying again in 2 s" in str(page.text_content("#connection"))
    assert page.text_content("#state") == "unreachable"
    assert page.text_content('#workers td[data-key="state"]') in ("idle", "stopping", "stopped")  # the last seen
    browser_page.screenshot("status-stopped")


def test_only_get_is_allowed(start_app: StartApp) -> None:
    assert start_app(SquareAPI()).post(path="/status").status_code == 405


def test_page_shows_each_worker_in_both_modes(start_server: Start, browser_page: BrowserPage) -> None:
    server = start_server(SquareAPI())
    _open(browser_page, server.url + "/status")
    worker = server.status.workers[0]
    shown = {key: _shown(browser_page, key, row=worker.name, table="workers") for key in ("device", "pid", "state")}
    assert shown == {"device": "cpu", "pid": "-" if worker.pid is None else str(worker.pid), "state": "idle"}
    assert browser_page.console_errors == []
