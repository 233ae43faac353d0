"""GET /metrics, scraped with prometheus_client's own parser: every figure equals what the clients saw
and what `server.status` says, in both worker modes; per-server registries; auth; the route's path."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import Callable, Iterator
from typing import Any

import prometheus_client
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from litserve import HTTPException, LitAPI, LitServer
from litserve.status import EndpointStatus, ErrorLog, ServerState, ServerStatus
from litserve.testing import serving
from litserve.web.app import create_app
from litserve.web.context import Gate, WebContext
from litserve.web.metrics import REGISTRY_KEY
from tests.apis import SquareAPI
from tests.helpers import raw_request, wait_until
from tests.sync import CrossEvent, CrossSemaphore

Start = Callable[..., LitServer]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

SERVER_TIMEOUT_S = 5.0  # the gated predicts answer 504 after this; the test's middle part runs before


class MixedAPI(LitAPI):
    """{"kind": k, "input": x} -> {"output": x*x}; the kind decides how the request fails, if it does."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = CrossSemaphore()
        self.gate = CrossEvent()

    def decode_request(self, request: Any) -> Any:
        if request["kind"] == "teapot":
            raise HTTPException(418, "teapot")
        if request["kind"] == "boom":
            raise RuntimeError("boom")
        return request["kind"], request["input"]

    def predict(self, item: Any) -> Any:
        kind, x = item
        if kind == "gated":
            self.entered.release()
            assert self.gate.wait(30), "the test never opened the gate"
        return x * x

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


class BatchAPI(SquareAPI):
    def predict(self, xs: Any) -> Any:
        return [x * x for x in xs]


class StreamAPI(SquareAPI):
    def predict(self, x: Any) -> Iterator[Any]:
        yield from range(x)

    def encode_response(self, outputs: Iterator[Any]) -> Iterator[Any]:
        for output in outputs:
            yield {"output": output}


def scrape(server: LitServer, path: str = "/metrics", **kwargs: Any) -> Samples:
    response = requests.get(server.url + path, timeout=10, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def by_label(samples: Samples, name: str, label: str, **fixed: str) -> dict[str, float]:
    """{label value: sample value} for the samples of `name` whose other labels are `fixed`."""
    found = {}
    for (sample_name, labels), sample_value in samples.items():
        named = dict(labels)
        if sample_name == name and all(named.get(k) == v for k, v in fixed.items()):
            found[named[label]] = sample_value
    return found


def _post(server: LitServer, path: str, kind: str, x: int) -> int:
    if kind == "invalid-json":
        return requests.post(server.url + path, data=b"{", timeout=30).status_code
    return requests.post(server.url + path, json={"kind": kind, "input": x}, timeout=30).status_code


def _stream(server: LitServer) -> int:
    with requests.post(server.url + "/stream", json={"input": 3}, stream=True, timeout=30) as response:
        assert [line for line in response.iter_lines() if line] == [b'{"output":%d}' % i for i in range(3)]
        return response.status_code


def _quiet(server: LitServer) -> bool:
    status = server.status
    return all(e.in_flight == 0 and e.queue_depth == 0 for e in status.endpoints) and all(
        not w.is_busy for w in status.workers
    )


@pytest.mark.timeout(90)
def test_metrics_agree_with_the_clients_and_the_status_under_mixed_load(start_server: Start) -> None:
    mixed = MixedAPI()
    apis = [
        mixed,
        BatchAPI(max_batch_size=4, batch_timeout=0.05, api_path="/batch"),
        StreamAPI(api_path="/stream", stream=True),
    ]
    server = start_server(apis, timeout=SERVER_TIMEOUT_S, workers_per_device=2)
    try:
        seen = _mixed_load(server, mixed)
    finally:
        mixed.gate.set()  # the gated predicts end, so stop() can join their workers
    assert wait_until(lambda: server.status.endpoints[0].dropped_cancelled == 2 and _quiet(server))

    after, status = scrape(server), server.status
    assert seen["/predict"] == {200: 12, 418: 4, 400: 4, 500: 4, 504: 2}
    assert seen["/batch"] == {200: 8} and seen["/stream"] == {200: 3}
    again = scrape(server)  # a scrape changes nothing (the status was read while nothing moved)
    uptime = ("litserve_uptime_seconds", ())
    assert again.pop(uptime) >= after.pop(uptime) > 0
    assert again == after
    _agree(after, status, seen)


def _mixed_load(server: LitServer, mixed: MixedAPI) -> dict[str, collections.Counter[int]]:
    """ok, 4xx, 5xx, batches and streams; then timeouts and hang-ups, scraped while they are in flight."""
    seen: dict[str, collections.Counter[int]] = {p: collections.Counter() for p in ("/predict", "/batch", "/stream")}
    kinds = ["valid"] * 12 + ["teapot"] * 4 + ["invalid-json"] * 4 + ["boom"] * 4
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        mixed_codes = [pool.submit(_post, server, "/predict", kind, x) for x, kind in enumerate(kinds)]
        batch_codes = [pool.submit(_post, server, "/batch", "valid", x) for x in range(8)]
        stream_codes = [pool.submit(_stream, server) for _ in range(3)]
        for path, futures in (("/predict", mixed_codes), ("/batch", batch_codes), ("/stream", stream_codes)):
            seen[path].update(future.result(30) for future in futures)

        # Both /predict workers held in predict (they will answer 504), two more clients queued behind them.
        gated = [pool.submit(_post, server, "/predict", "gated", x) for x in (100, 101)]
        assert mixed.entered.acquire(10) and mixed.entered.acquire(10)
        port = server.port
        assert port is not None
        hang_ups = [raw_request(port, "/predict", b'{"kind": "valid", "input": %d}' % i) for i in (1, 2)]
        assert wait_until(lambda: server.status.endpoints[0].queue_depth == 2)
        during = scrape(server)
        assert value(during, "litserve_requests_in_flight", endpoint="/predict") == 4
        assert value(during, "litserve_requests_queued", endpoint="/predict") == 2
        busy = by_label(during, "litserve_worker_state", "worker", endpoint="/predict", state="busy")
        workers = server.status.endpoints[0].workers  # two threads, or one process running both
        assert busy == {w.name: 1.0 for w in workers} and all(w.is_busy for w in workers)
        for path, codes in seen.items():  # what has been answered so far is counted, nothing more
            assert by_label(during, "litserve_requests_total", "code", endpoint=path) == {
                str(code): float(n) for code, n in codes.items()
            }

        for sock in hang_ups:
            sock.close()
        assert wait_until(lambda: server.status.endpoints[0].cancelled == 2)
        seen["/predict"].update(future.result(30) for future in gated)
    return seen


def _agree(samples: Samples, status: ServerStatus, seen: dict[str, collections.Counter[int]]) -> None:
    """Every family equals the status snapshot, and the answers by code equal what the clients saw."""
    assert value(samples, "litserve_server_state", state="running") == 1
    for endpoint in status.endpoints:
        path = endpoint.path
        codes = {str(code): float(n) for code, n in seen[path].items()}
        assert by_label(samples, "litserve_requests_total", "code", endpoint=path) == codes
        assert {str(code): float(n) for code, n in endpoint.status_codes} == codes
        outcomes = by_label(samples, "litserve_request_outcomes_total", "outcome", endpoint=path)
        assert outcomes == {
            "ok": endpoint.ok,
            "client_error": endpoint.client_errors,
            "server_error": endpoint.server_errors,
            "timed_out": endpoint.timed_out,
            "cancelled": endpoint.cancelled,
        }
        dropped = by_label(samples, "litserve_requests_dropped_total", "reason", endpoint=path)
        assert dropped == {"timed_out": endpoint.dropped_timed_out, "disconnected": endpoint.dropped_cancelled}
        assert value(samples, "litserve_requests_in_flight", endpoint=path) == endpoint.in_flight == 0
        assert value(samples, "litserve_requests_queued", endpoint=path) == endpoint.queue_depth == 0
        _histograms_agree(samples, endpoint)
        for worker in endpoint.workers:
            states = by_label(samples, "litserve_worker_state", "state", endpoint=path, worker=worker.name)
            assert states[worker.state.value] == 1 and sum(states.values()) == 1
            served = by_label(samples, "litserve_worker_requests_total", "result", endpoint=path, worker=worker.name)
            assert served == {"ok": worker.served, "error": worker.errors}
            restarts = value(samples, "litserve_worker_restarts_total", endpoint=path, worker=worker.name)
            assert restarts == worker.restarts == 0
    predict, batch, stream = status.endpoints
    assert (predict.ok, predict.client_errors, predict.server_errors) == (12, 8, 4)
    assert (predict.timed_out, predict.cancelled, predict.dropped_cancelled) == (2, 2, 2)
    assert (batch.ok, stream.ok) == (8, 3)


def _histograms_agree(samples: Samples, endpoint: EndpointStatus) -> None:
    path = endpoint.path
    answered = sum(n for _, n in endpoint.status_codes)
    for name, snapshot in (
        ("litserve_request_duration_seconds", endpoint.duration),
        ("litserve_queue_wait_seconds", endpoint.queue_wait),
        ("litserve_stream_first_chunk_seconds", endpoint.first_chunk),
    ):
        assert value(samples, f"{name}_count", endpoint=path) == snapshot.count
        assert value(samples, f"{name}_sum", endpoint=path) == pytest.approx(snapshot.sum, rel=1e-9)
        assert value(samples, f"{name}_bucket", endpoint=path, le="+Inf") == snapshot.count
    assert endpoint.duration.count == answered  # every answer sent, streams by their first chunk
    is_stream = path == "/stream"
    assert endpoint.first_chunk.count == (answered if is_stream else 0)
    assert endpoint.queue_wait.count == (0 if is_stream else endpoint.ok)  # the answers that ran (no 504s)
    batches = sum(n for _, n in endpoint.batch_sizes)
    assert value(samples, "litserve_batch_size_count", endpoint=path) == batches
    assert value(samples, "litserve_batch_size_sum", endpoint=path) == sum(s * n for s, n in endpoint.batch_sizes)
    if path == "/batch":
        assert sum(s * n for s, n in endpoint.batch_sizes) == 8


def test_a_body_over_the_limit_is_counted_by_its_code_too() -> None:
    with serving(SquareAPI(), max_payload_size=100) as server:
        response = requests.post(server.url + "/predict", json={"input": "x" * 200}, timeout=10)
        assert response.status_code == 413
        samples = scrape(server)
        endpoint = server.status.endpoints[0]
    assert by_label(samples, "litserve_requests_total", "code", endpoint="/predict") == {"413": 1}
    assert endpoint.status_codes == ((413, 1),) and endpoint.client_errors == 1


def test_two_servers_in_one_process_never_mix_their_counts() -> None:
    with serving(SquareAPI()) as first, serving(SquareAPI()) as second:
        for x in range(3):
            assert requests.post(first.url + "/predict", json={"input": x}, timeout=10).status_code == 200
        assert requests.post(second.url + "/predict", json={"input": 1}, timeout=10).status_code == 200
        assert value(scrape(first), "litserve_requests_total", endpoint="/predict", code="200") == 3
        assert value(scrape(second), "litserve_requests_total", endpoint="/predict", code="200") == 1
    # Neither ever touched prometheus_client's global registry.
    assert not any(m.name.startswith("litserve") for m in prometheus_client.REGISTRY.collect())


def test_a_stopped_apps_registry_is_empty() -> None:
    status = ServerStatus(state=ServerState.RUNNING, url=None, uptime_s=1.0)
    context = WebContext(endpoints=[], timeout_s=None, gate=Gate(), status=lambda: status, info=dict, errors=ErrorLog())
    app = create_app(context)
    registry = app.extensions[REGISTRY_KEY]

    async def serve_then_stop() -> list[str]:
        async with app.test_app():  # runs the app's startup, then its shutdown
            return [family.name for family in registry.collect()]

    assert "litserve_server_state" in asyncio.run(serve_then_stop())
    assert list(registry.collect()) == []  # its collector was unregistered when the app stopped serving


def test_metrics_needs_the_api_key_and_health_does_not(start_server: Start) -> None:
    server = start_server(SquareAPI(), api_key="secret")
    assert requests.get(server.url + "/metrics", timeout=10).status_code == 401
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    samples = scrape(server, headers={"X-API-Key": "secret"})
    assert value(samples, "litserve_server_state", state="running") == 1


def test_metrics_path_none_turns_the_route_off_and_another_path_moves_it() -> None:
    with serving(SquareAPI(), metrics_path=None) as server:
        assert requests.get(server.url + "/metrics", timeout=10).status_code == 404
    with serving(SquareAPI(), metrics_path="/internal/prom") as server:
        assert requests.get(server.url + "/metrics", timeout=10).status_code == 404
        assert value(scrape(server, "/internal/prom"), "litserve_server_state", state="running") == 1
