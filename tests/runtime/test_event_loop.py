"""The HTTP thread's event loop: uvloop where installed, asyncio's when asked (LITSERVE_EVENT_LOOP), on a real socket.

A plain ASGI middleware runs on the HTTP loop, so it reports the loop the server really serves on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from typing import Any

import pytest
import requests

from litserve import LitServer
from litserve.runtime.thread import EVENT_LOOP_ENV, loop_factory
from litserve.status import ServerState
from tests.apis import GatedPredictAPI, SquareAPI
from tests.helpers import free_port, port_is_free, post

uvloop = pytest.importorskip("uvloop", reason="uvloop is a dependency on this platform; without it, see the last test")


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
    [(None, uvloop.Loop), ("auto", uvloop.Loop), ("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)],
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
    if choice == "asyncio":
        assert not any(issubclass(kind, uvloop.Loop) for kind in probe.seen)


def test_a_stop_on_uvloop_refuses_new_connections_and_lets_the_open_request_finish(
    monkeypatch: pytest.MonkeyPatch, worker_mode: str
) -> None:
    monkeypatch.setenv(EVENT_LOOP_ENV, "uvloop")
    api = GatedPredictAPI()
    server = LitServer(api, accelerator="cpu", worker_mode=worker_mode, shutdown_timeout=10).start(port=0)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        in_flight = pool.submit(post, server, {"input": 5})
        assert api.entered.acquire(timeout=10)
        stopping = pool.submit(server.stop)
        with pytest.raises(requests.ConnectionError):
            for _ in range(100):
                requests.get(f"{server.url}/health", timeout=10)
        assert not stopping.done()
        api.gate.set()
        assert in_flight.result(timeout=10).json() == {"output": 25}
        stopping.result(timeout=10)
    assert server.state is ServerState.STOPPED


def test_an_unknown_loop_choice_fails_start_with_a_clear_error_and_frees_the_port(
    monkeypatch: pytest.MonkeyPatch, worker_mode: str
) -> None:
    port = free_port()
    monkeypatch.setenv(EVENT_LOOP_ENV, "tokio")
    server = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode)
    with pytest.raises(ValueError, match=r"LITSERVE_EVENT_LOOP='tokio': choose one of auto, uvloop, asyncio"):
        server.start(port=port)
    assert server.state is ServerState.FAILED
    assert port_is_free(port)
    monkeypatch.setenv(EVENT_LOOP_ENV, "  AsyncIO ")  # case and blanks do not matter
    server.start(port=port)
    try:
        assert post(server, {"input": 3}).json() == {"output": 9}
    finally:
        server.stop()


def test_without_uvloop_auto_falls_back_to_asyncio_and_uvloop_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what `import uvloop` meets where it is not installed
    assert loop_factory("auto") is asyncio.new_event_loop
    assert loop_factory("") is asyncio.new_event_loop
    with pytest.raises(RuntimeError, match=r"LITSERVE_EVENT_LOOP=uvloop, but uvloop is not installed"):
        loop_factory("uvloop")
