"""The HTTP thread's event loop: asyncio's own, or uvloop when asked (LITSERVE_EVENT_LOOP), on a real socket.

A plain ASGI middleware runs on the HTTP loop, so it reports the loop the server really serves on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import sys
import threading
from typing import Any

import pytest
import requests
from quart import Quart

from litserve import LitServer
from litserve.engine.bridge import call_in_loop
from litserve.runtime.sockets import bind_listening_socket
from litserve.runtime.thread import EVENT_LOOP_ENV, HttpThread, loop_factory
from litserve.status import ServerState
from tests.apis import SquareAPI
from tests.helpers import free_port, port_is_free, post

# In the test extra wherever it builds (not on Windows).
uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed on this platform")


class LoopProbe:
    """Records the class of the loop each request is served on."""

    seen: list[type] = []

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        LoopProbe.seen.append(type(asyncio.get_running_loop()))
        await self.app(scope, receive, send)


@pytest.fixture
def probe() -> type[LoopProbe]:
    LoopProbe.seen = []
    return LoopProbe


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, asyncio.BaseEventLoop),
        ("", asyncio.BaseEventLoop),
        ("asyncio", asyncio.BaseEventLoop),
        ("uvloop", uvloop.Loop),
    ],
)
def test_the_server_serves_on_the_chosen_loop(
    monkeypatch: pytest.MonkeyPatch, worker_mode: str, probe: type[LoopProbe], choice: str | None, expected: type
) -> None:
    if choice is None:
        monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    else:
        monkeypatch.setenv(EVENT_LOOP_ENV, choice)
    server = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode, middlewares=[probe]).start(port=0)
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: post(server, {"input": i}).json(), range(32)))
        assert answers == [{"output": i * i} for i in range(32)]
    finally:
        server.stop()
    assert len(probe.seen) == 32
    assert all(issubclass(kind, expected) for kind in probe.seen), probe.seen
    if expected is not uvloop.Loop:
        assert not any(issubclass(kind, uvloop.Loop) for kind in probe.seen)


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_once_stop_begins_a_new_connection_is_refused_before_the_loop_turns_again(
    monkeypatch: pytest.MonkeyPatch, choice: str
) -> None:
    # Hypercorn closes its listening servers some loop turns after the stop begins; a connection accepted
    # meanwhile was neither served nor closed until the graceful period ended. The loop is held right
    # after the stop began, so nothing of Hypercorn's runs: only the stop itself can have refused this.
    monkeypatch.setenv(EVENT_LOOP_ENV, choice)
    app = Quart(__name__)
    app.get("/health")(lambda: "ok")
    sock = bind_listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    http = HttpThread(app, sock, graceful_timeout_s=5.0, on_loop_exit=lambda: None)
    handle = http.start(10.0)
    held, release = threading.Event(), threading.Event()

    def hold_the_loop() -> None:
        held.set()
        release.wait(10)

    try:
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=10).text == "ok"  # Hypercorn listens
        http.close_listener()
        assert call_in_loop(handle.loop, hold_the_loop)  # runs right after the stop's first step
        assert held.wait(10)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        release.set()
        assert http.stop(10.0)


def test_an_unknown_loop_choice_fails_start_with_a_clear_error_and_frees_the_port(
    monkeypatch: pytest.MonkeyPatch, worker_mode: str, probe: type[LoopProbe]
) -> None:
    port = free_port()
    monkeypatch.setenv(EVENT_LOOP_ENV, "tokio")
    server = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode, middlewares=[probe])
    with pytest.raises(ValueError, match=r"LITSERVE_EVENT_LOOP='tokio': choose one of asyncio, uvloop"):
        server.start(port=port)
    assert server.state is ServerState.FAILED
    assert port_is_free(port)
    monkeypatch.setenv(EVENT_LOOP_ENV, "  UVLoop ")  # case and blanks do not matter
    server.start(port=port)
    try:
        assert post(server, {"input": 3}).json() == {"output": 9}
    finally:
        server.stop()
    assert probe.seen == [uvloop.Loop]


def test_without_uvloop_asking_for_it_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what `import uvloop` meets where it is not installed
    assert loop_factory("asyncio") is asyncio.new_event_loop
    assert loop_factory("") is asyncio.new_event_loop
    with pytest.raises(RuntimeError, match=r"LITSERVE_EVENT_LOOP=uvloop, but uvloop is not installed"):
        loop_factory("uvloop")
