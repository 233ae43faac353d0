"""GET /docs in a real headless Chromium: Swagger UI renders the server's own document from installed
files only, and its "Try it out" really calls the endpoint (with the API key when one is set)."""

from __future__ import annotations

from collections.abc import Callable

from litserve import LitServer
from tests.apis import SquareAPI
from tests.browser import BrowserPage

Start = Callable[..., LitServer]
KEY = "docs-key"


def _try_predict(browser: BrowserPage, body: str) -> str:
    """Open POST /predict in Swagger UI, send `body` with "Try it out", return the status code it shows."""
    page = browser.page
    operation = page.locator(".opblock-post", has=page.locator("[data-path='/predict']"))
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("textarea.body-param__text").fill(body)
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status")
    status.first.wait_for()
    return status.first.inner_text().strip()


def test_docs_render_offline_and_try_it_out_calls_the_server(lit_server: Start, browser_page: BrowserPage) -> None:
    server = lit_server(SquareAPI())
    page = browser_page.page
    page.goto(server.url + "/docs")
    page.wait_for_selector("[data-path='/predict']")
    assert page.locator("[data-path='/health']").count() == 1  # the server's own routes are listed too
    assert _try_predict(browser_page, '{"input": 4}') == "200"
    assert server.status.endpoints[0].ok == 1  # the page's request reached the endpoint
    browser_page.screenshot("docs")
    assert browser_page.foreign_requests(server.url) == []
    assert browser_page.console_errors == []


def test_docs_ask_for_the_key_and_send_it(lit_server: Start, browser_page: BrowserPage) -> None:
    server = lit_server(SquareAPI(), api_key=KEY)
    page = browser_page.page
    page.goto(server.url + "/docs")
    page.wait_for_selector("#litserve-key-input")
    browser_page.forget()  # the document's 401 that made the page ask is expected
    page.fill("#litserve-key-input", "wrong")
    page.click("#litserve-key button[type=submit]")
    page.wait_for_function("() => document.getElementById('litserve-message').textContent.includes('refused')")
    browser_page.forget()
    page.fill("#litserve-key-input", KEY)
    page.click("#litserve-key button[type=submit]")
    page.wait_for_selector("[data-path='/predict']")
    assert _try_predict(browser_page, '{"input": 5}') == "200"  # Swagger UI sent the key
    assert server.status.endpoints[0].ok == 1
    assert browser_page.foreign_requests(server.url) == []
    assert browser_page.console_errors == []
