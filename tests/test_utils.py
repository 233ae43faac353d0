"""`litserve.utils`: LitServe's `wrap_litserve_start` drives the server through in-process ASGI clients.

LitServe's tests use it as `with wrap_litserve_start(server) as server, TestClient(server.app) as client`,
or with httpx's ASGITransport inside their own event loop: both call our app on a loop that is not the
server's, in thread and in process mode.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from litserve import LitAPI, LitServer, OpenAIEmbeddingSpec, OpenAISpec, ServerState, ServerStateError
from litserve.test_examples import TestAPI
from litserve.test_examples.openai_embedding_spec_example import TestEmbedAPI
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


def test_the_app_is_served_inside_the_servers_middlewares() -> None:
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    middlewares = [(TrustedHostMiddleware, {"allowed_hosts": ["localhost"]})]
    server = _server(SquareAPI(), "thread", middlewares=middlewares, track_requests=True)
    with wrap_litserve_start(server) as server, TestClient(server.app) as client:
        assert client.post("/predict", json={"input": 2}).status_code == 400  # the test client's host is refused
        allowed = client.post("/predict", json={"input": 2}, headers={"Host": "localhost"})
        assert (allowed.status_code, allowed.json(), server.active_requests) == (200, {"output": 4}, 0)


CHAT = {"model": "lit", "messages": [{"role": "user", "content": "Hello"}]}


def _sse_contents(text: str) -> list[str]:
    """The delta contents of an OpenAI chat SSE body, which must end with `data: [DONE]`."""
    events = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(event)["choices"][0]["delta"].get("content") or "" for event in events[:-1]]


def test_the_openai_chat_spec_through_test_client(worker_mode: str) -> None:
    server = _server(TestAPI(spec=OpenAISpec()), worker_mode)
    with wrap_litserve_start(server) as server, TestClient(server.app) as client:
        whole = client.post("/v1/chat/completions", json=CHAT)
        assert whole.status_code == 200
        assert whole.json()["choices"][0]["message"]["content"] == "This is a generated output"
        streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert "".join(_sse_contents(streamed.text)) == "This is a generated output"
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["TestAPI"]
        refused = client.post("/v1/chat/completions", json={"model": "lit"})
        assert (refused.status_code, "error" in refused.json()) == (422, True)


def test_the_openai_chat_stream_over_asgi_transport(worker_mode: str) -> None:
    """As LitServe's own unit tests drive the spec: an httpx AsyncClient on the app, lines read as they come."""
    with wrap_litserve_start(_server(TestAPI(spec=OpenAISpec()), worker_mode)) as server:

        async def chat() -> str:
            transport = httpx.ASGITransport(app=server.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True}, timeout=10)
                assert response.status_code == 200
                return "\n".join([line async for line in response.aiter_lines()])

        assert "".join(_sse_contents(asyncio.run(chat()))) == "This is a generated output"


def test_the_openai_embedding_spec_through_test_client(worker_mode: str) -> None:
    server = _server(TestEmbedAPI(spec=OpenAIEmbeddingSpec()), worker_mode)
    with wrap_litserve_start(server) as server, TestClient(server.app) as client:
        response = client.post("/v1/embeddings", json={"model": "lit", "input": ["a", "b"]})
        assert response.status_code == 200
        document = response.json()
        assert document["object"] == "list" and [row["index"] for row in document["data"]] == [0, 1]
        assert all(len(row["embedding"]) == 768 for row in document["data"])


def test_is_package_installed_finds_without_importing() -> None:
    assert is_package_installed("json")
    assert not is_package_installed("no_such_package_for_litserve_tests")
