"""`litserve.utils`: LitServe's `wrap_litserve_start` drives the server through in-process ASGI clients.

LitServe's tests use it as `with wrap_litserve_start(server) as server, TestClient(server.app) as client`,
or with httpx's ASGITransport inside their own event loop: both call our app on a loop that is not the
server's, in thread and in process mode.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from litserve import LitAPI, LitServer, ServerState, ServerStateError
from litserve.utils import is_package_installed, wrap_litserve_start
from tests.apis import GatedPredictAPI, SquareAPI
from tests.helpers import post


class CountStream(LitAPI):
    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Any:
        for i in range(3):
            yield x + i

    def encode_response(self, outputs: Any) -> Any:
        for output in outputs:
            yield {"output": output}


def _server(api: LitAPI, worker_mode: str, **kwargs: Any) -> LitServer:
    return LitServer(api, accelerator="cpu", worker_mode=worker_mode, **kwargs)


def test_test_client_drives_the_app_without_a_socket(worker_mode: str) -> None:
    server = _server(SquareAPI(), worker_mode)
    with wrap_litserve_start(server) as started, TestClient(started.app) as client:
        assert started is server
        assert client.post("/predict", json={"input": 4.0}).json() == {"output": 16.0}
        assert (client.get("/health").status_code, client.get("/health").text) == (200, "ok")
        assert client.get("/").text == "litserve running"
        assert server.status.is_ready and server.status.url is None and server.port is None
        assert server.status.endpoints[0].ok == 1
    assert server.state is ServerState.STOPPED


def test_a_test_client_outside_with_calls_the_app_on_a_new_loop_each_time(worker_mode: str) -> None:
    with wrap_litserve_start(_server(SquareAPI(), worker_mode)) as server:
        client = TestClient(server.app)  # no lifespan; every request runs on a fresh event loop
        assert [client.post("/predict", json={"input": i}).json() for i in (2, 3)] == [{"output": 4}, {"output": 9}]


def test_streams_and_concurrent_requests_over_httpx_asgi_transport(worker_mode: str) -> None:
    with wrap_litserve_start(_server(CountStream(stream=True), worker_mode)) as server:

        async def three_streams() -> list[str]:
            transport = httpx.ASGITransport(app=server.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                responses = await asyncio.gather(*(client.post("/predict", json={"input": i}) for i in (0, 10, 20)))
            return [response.text for response in responses]

        texts = asyncio.run(three_streams())
    assert texts == ["".join(f'{{"output":{start + i}}}\n' for i in range(3)) for start in (0, 10, 20)]


def test_the_deadline_runs_on_the_clients_loop(worker_mode: str) -> None:
    api = GatedPredictAPI()
    with wrap_litserve_start(_server(api, worker_mode, timeout=0.2)) as server, TestClient(server.app) as client:
        try:
            response = client.post("/predict", json={"input": 2})
        finally:
            api.gate.set()
        assert (response.status_code, response.json()) == (504, {"detail": "Request timed out"})
        assert client.post("/predict", json={"input": 3}).json() == {"output": 9}


def test_exit_stops_everything_even_when_the_block_raises(worker_mode: str) -> None:
    server = _server(SquareAPI(), worker_mode)
    with pytest.raises(KeyError), wrap_litserve_start(server):
        raise KeyError("the test failed")
    assert server.state is ServerState.STOPPED
    assert not [t.name for t in threading.enumerate() if t.name.startswith("litserve-")]


def test_a_server_served_in_process_has_no_url_and_starts_on_a_socket_afterwards() -> None:
    server = _server(SquareAPI(), "thread")
    with pytest.raises(ServerStateError, match="created"):
        server.app  # noqa: B018 - the property is the test
    with wrap_litserve_start(server, worker_monitor=True) as started:
        first_app = started.app
        with pytest.raises(ServerStateError, match="in-process"):
            started.url  # noqa: B018
        with pytest.raises(ServerStateError, match="in-process"):
            started.start(port=0)
        assert "in-process" in repr(started)
        assert started.predict({"input": 5}) == {"output": 25}
    server.start(port=0)
    try:
        assert server.app is not first_app
        assert post(server, {"input": 6}).json() == {"output": 36}
    finally:
        server.stop()


def test_wrapping_a_running_server_serves_its_app_and_stops_it() -> None:
    server = _server(SquareAPI(), "thread").start(port=0)
    with wrap_litserve_start(server) as started, TestClient(started.app) as client:
        assert client.post("/predict", json={"input": 7}).json() == {"output": 49}
        assert post(server, {"input": 8}).json() == {"output": 64}
    assert server.state is ServerState.STOPPED


def test_a_failed_setup_raises_and_leaves_nothing_running(worker_mode: str) -> None:
    from litserve import WorkerSetupError
    from tests.apis import FailingSetupAPI

    server = _server(FailingSetupAPI(), worker_mode)
    with pytest.raises(WorkerSetupError), wrap_litserve_start(server):
        pytest.fail("the block must not run")  # pragma: no cover - it does not
    assert server.state is ServerState.FAILED


def test_is_package_installed_finds_without_importing() -> None:
    assert is_package_installed("json")
    assert not is_package_installed("no_such_package_for_litserve_tests")
