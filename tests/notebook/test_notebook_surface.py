"""Client, LitServer.predict, the status snapshot, the live panel, and interpreter exit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from litserve import Client, HTTPException, LitAPI, LitServer, RequestFailedError, ServerState
from litserve.notebook import status_html, status_text
from litserve.status import WorkerState
from tests.apis import GatedPredictAPI, SquareAPI

Start = Callable[..., LitServer]


class TeapotAPI(SquareAPI):
    def decode_request(self, request: Any) -> Any:
        if request.get("input") == "tea":
            raise HTTPException(418, "I'm a teapot")
        return super().decode_request(request)


class TokenStreamAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(stream=True)

    def predict(self, x: Any) -> Iterator[Any]:
        for i in range(x["n"]):
            yield {"token": i}
        if x.get("fail"):
            raise RuntimeError("generation failed")


class TextStreamAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(stream=True)

    def predict(self, x: Any) -> Iterator[str]:
        yield from ("hel", "lo")


# --- Client -----------------------------------------------------------------------------------------


def test_client_predict_health_info_and_errors(start_server: Start) -> None:
    server = start_server(TeapotAPI())
    client = server.client()
    assert client.health()
    assert client.predict({"input": 4.0}) == {"output": 16.0}
    assert client.info()["server"]["devices"] == ["cpu"]
    with pytest.raises(RequestFailedError) as caught:
        client.predict({"input": "tea"})
    assert (caught.value.status_code, caught.value.detail) == (418, "I'm a teapot")
    with pytest.raises(RequestFailedError) as missing:
        client.predict({"input": 1}, path="/nope")
    assert missing.value.status_code == 404
    client.close()


def test_client_async_inside_a_running_loop(start_server: Start) -> None:
    server = start_server(SquareAPI(), workers_per_device=2)
    client = Client(server.url)

    async def cell() -> list[Any]:
        # The caller's own loop keeps running while requests are in flight.
        return list(await asyncio.gather(*(client.apredict({"input": i}) for i in range(20))))

    assert asyncio.run(cell()) == [{"output": i * i} for i in range(20)]


def test_client_streams_ndjson_and_text(start_server: Start) -> None:
    server = start_server([TokenStreamAPI(), _on_path(TextStreamAPI(), "/text")])
    client = server.client()
    assert list(client.stream({"n": 3})) == [{"token": 0}, {"token": 1}, {"token": 2}]
    assert "".join(client.stream({}, path="/text")) == "hello"
    chunks: list[Any] = []
    with pytest.raises(RequestFailedError) as caught:
        for chunk in client.stream({"n": 2, "fail": True}):
            chunks.append(chunk)
    assert chunks == [{"token": 0}, {"token": 1}]
    assert (caught.value.status_code, caught.value.detail) == (500, "Internal server error")


def _on_path(api: LitAPI, path: str) -> LitAPI:
    api.api_path = path
    return api


def test_client_passes_the_api_key(start_server: Start) -> None:
    server = start_server(SquareAPI(), api_key="s3cret")
    assert server.client().predict({"input": 3}) == {"output": 9}
    with pytest.raises(RequestFailedError) as caught:
        Client(server.url).predict({"input": 3})
    assert caught.value.status_code == 401
    assert Client(server.url).health()  # /health needs no key


def test_client_rejects_a_url_it_cannot_use() -> None:
    with pytest.raises(ValueError, match="http://"):
        Client("localhost:8000")


# --- LitServer.predict --------------------------------------------------------------------------------


def test_server_predict_uses_the_same_workers(start_server: Start) -> None:
    server = start_server(TeapotAPI())
    assert server.predict({"input": 5}) == {"output": 25}
    with pytest.raises(RequestFailedError) as caught:
        server.predict({"input": "tea"})
    assert caught.value.status_code == 418
    assert server.status.workers[0].served == 1


def test_server_predict_times_out_like_http(worker_mode: str) -> None:
    api = GatedPredictAPI()
    with LitServer(api, accelerator="cpu", worker_mode=worker_mode, timeout=0.2).start(port=0) as server:
        with pytest.raises(RequestFailedError) as caught:
            server.predict({"input": 2})
        assert caught.value.status_code == 504
        api.gate.set()


def test_predict_before_start_says_what_to_do() -> None:
    server = LitServer(SquareAPI(), accelerator="cpu")
    with pytest.raises(Exception, match="call start"):
        server.predict({"input": 1})


# --- status, panel and views --------------------------------------------------------------------------


def test_status_counts_latency_and_batches(lit_server: Start) -> None:
    server = lit_server(TeapotAPI())
    client = server.client()
    for i in range(5):
        client.predict({"input": i})
    with pytest.raises(RequestFailedError):
        client.predict({"input": "tea"})
    status = server.status
    endpoint = status.endpoints[0]
    assert (endpoint.ok, endpoint.client_errors, endpoint.requests, status.requests) == (5, 1, 6, 6)
    assert endpoint.latency.samples == 6
    assert endpoint.latency.p50_s is not None and endpoint.latency.p50_s <= (endpoint.latency.p99_s or 0)
    assert endpoint.batch_sizes == ((1, 6),)
    assert status.workers[0].state is WorkerState.IDLE and not status.workers[0].is_busy
    assert status.uptime_s > 0
    text = status_text(status)
    assert "running" in text and "5 ok" in text
    assert "<table>" in status_html(status)


def _panel_text(panel: Any) -> str:
    return str(panel.children[0].value)


def test_panel_shows_requests_then_stopped_and_its_timer_ends() -> None:
    server = LitServer(SquareAPI(), accelerator="cpu").start(port=0)
    try:
        panel = server.widget()
        timers = list(server._panels.timers)
        assert len(timers) == 1 and timers[0].is_alive
        client = server.client()
        for i in range(7):
            client.predict({"input": i})
        # The timer refreshes about once a second; read what the panel would show at its next tick.
        timers[0]._refresh()
        assert "7 requests" in _panel_text(panel)
        assert "<td>7</td>" in _panel_text(panel)
    finally:
        server.stop()
    assert not timers[0].is_alive  # stop() joined it
    assert "stopped" in _panel_text(panel)
    assert panel.children[1].disabled
    assert not [t for t in threading.enumerate() if t.name == "litserve-panel"]


def test_panel_stop_button_stops_the_server() -> None:
    server = LitServer(SquareAPI(), accelerator="cpu").start(port=0)
    try:
        panel = server.widget()
        panel.children[1].click()
        assert server.state is ServerState.STOPPED
    finally:
        server.stop()


def test_displaying_the_server_gives_widget_html_and_text() -> None:
    with LitServer(SquareAPI(), accelerator="cpu").start(port=0) as server:
        bundle = server._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
        assert "litserve running" in bundle["text/plain"]
        assert "<table>" in bundle["text/html"]
    stopped = server._repr_mimebundle_()
    assert "litserve stopped" in stopped["text/plain"]


# --- interpreter exit ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_interpreter_exit_stops_every_server_and_frees_the_port() -> None:
    """The script never calls stop(). A handler it registers before starting the server runs after
    litserve's own exit handler (atexit runs last-registered first), still inside the interpreter, so
    it sees what litserve did at exit: without that stop the port is still held and the threads live."""
    script = textwrap.dedent(
        """
        import atexit
        import socket
        import threading
        from litserve import LitAPI, LitServer

        def port_is_free(port):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    return False
                return True

        def ours():
            return sorted(t.name for t in threading.enumerate() if t.name.startswith("litserve-"))

        def after_litserve_exit():
            print("exit", server.status.state.value, port_is_free(server.port), ours(), flush=True)

        atexit.register(after_litserve_exit)

        class Echo(LitAPI):
            def predict(self, x):
                return x

        server = LitServer(Echo(), accelerator="cpu", workers_per_device=2).start(port=0)
        assert server.client().predict([1]) == [1]
        print("running", server.status.state.value, port_is_free(server.port), ours(), flush=True)
        # No stop(): the script ends like a notebook kernel shutting down.
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    running, at_exit = result.stdout.splitlines()
    assert running.startswith("running running False [")  # held while it runs: the check can fail
    assert "'litserve-http'" in running and "'litserve-worker-cpu-1'" in running
    assert at_exit == "exit stopped True []", result.stderr


def test_showing_the_server_again_reuses_its_panel() -> None:
    with LitServer(SquareAPI(), accelerator="cpu").start(port=0) as server:
        first = server.widget()
        server._repr_mimebundle_()
        assert server.widget() is first
        assert len([t for t in threading.enumerate() if t.name == "litserve-panel"]) == 1
