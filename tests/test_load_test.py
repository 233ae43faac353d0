"""`server.benchmark` and its core `run_benchmark`: real HTTP against real servers, counted both ways."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from litserve import LitAPI, LitServer
from litserve.exceptions import ServerStateError
from litserve.load_test import BenchmarkResult, LevelResult, run_benchmark
from litserve.status import ServerStatus
from tests.apis import SquareAPI
from tests.helpers import free_port

Start = Callable[..., LitServer]


class EveryThirdFailsAPI(SquareAPI):
    """Each worker copy fails its 3rd, 6th, ... request with a 500: deterministic, whatever the payload."""

    def setup(self, device: str) -> None:
        super().setup(device)
        self.seen = 0

    def predict(self, x: Any) -> Any:
        self.seen += 1
        if self.seen % 3 == 0:
            raise RuntimeError("every third request fails")
        return super().predict(x)


class ShortStreamAPI(LitAPI):
    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, n: int) -> Iterator[int]:
        yield from range(n)

    def encode_response(self, outputs: Iterator[int]) -> Iterator[dict[str, int]]:
        for value in outputs:
            yield {"step": value}


def _codes(status: ServerStatus) -> dict[int, int]:
    return dict(status.endpoints[0].status_codes)


def _delta(after: dict[int, int], before: dict[int, int]) -> dict[int, int]:
    return {code: n - before.get(code, 0) for code, n in after.items() if n != before.get(code, 0)}


@pytest.mark.parametrize("clients", ["process", "thread"])
def test_the_benchmarks_counts_agree_with_the_servers_and_the_inspectors(start_server: Start, clients: str) -> None:
    server = start_server(EveryThirdFailsAPI(), inspect_requests=100_000)
    before = server.status
    result = server.benchmark({"input": 3}, concurrency=(1, 4), duration=0.5, warmup=0.2, clients=clients)
    after = server.status
    assert [level.concurrency for level in result.levels] == [1, 4]
    assert result.warmup_sent > 0 and all(level.sent > 0 for level in result.levels)
    assert after.requests - before.requests == result.sent
    sent_by_status: dict[int, int] = {}
    for level in result.levels:
        for code, n in level.status_counts:
            sent_by_status[code] = sent_by_status.get(code, 0) + n
    measured = dict(sent_by_status)
    server_codes = _delta(_codes(after), _codes(before))
    warmup_codes = {code: server_codes[code] - measured.get(code, 0) for code in server_codes}
    assert sum(warmup_codes.values()) == result.warmup_sent and set(server_codes) == {200, 500}
    errors = sum(level.errors for level in result.levels)
    assert errors == measured[500] and all(level.errors_by_status.keys() <= {500} for level in result.levels)
    assert after.endpoints[0].server_errors - before.endpoints[0].server_errors == server_codes[500]
    records = server.requests
    assert len(records) == result.sent
    assert sum(1 for r in records if r.status == 500) == server_codes[500]


def test_each_level_reports_throughput_and_ordered_percentiles(start_server: Start) -> None:
    server = start_server(SquareAPI())
    level = server.benchmark({"input": 2}, concurrency=(2,), duration=0.3, warmup=0).level(2)
    assert level.sent > 0 and level.errors == 0 and level.status_counts == ((200, level.sent),)
    assert level.p50_s is not None and level.p90_s is not None and level.p99_s is not None
    assert 0 < level.p50_s <= level.p90_s <= level.p99_s and level.mean_s is not None
    assert level.requests_per_s == pytest.approx(level.sent / level.duration_s)
    assert level.duration_s >= 0.3 and level.first_chunk_p50_s is None


def test_a_stream_counts_when_its_body_ends_and_reports_its_first_chunk(start_server: Start) -> None:
    server = start_server(ShortStreamAPI(stream=True))
    before = server.status.requests
    result = server.benchmark({"input": 3}, concurrency=(2,), duration=0.3, warmup=0)
    level = result.level(2)
    assert level.errors == 0 and server.status.requests - before == level.sent
    assert level.first_chunk_p50_s is not None and level.p50_s is not None
    assert level.first_chunk_p50_s <= level.p99_s  # type: ignore[operator]


def test_the_benchmark_sends_the_servers_api_key(start_server: Start) -> None:
    server = start_server(SquareAPI(), api_key="secret")
    level = server.benchmark({"input": 1}, concurrency=(1,), duration=0.2, warmup=0).level(1)
    assert level.errors == 0 and level.status_counts == ((200, level.sent),)


def test_path_picks_the_endpoint_of_a_server_with_several(start_server: Start) -> None:
    server = start_server([SquareAPI(api_path="/a"), SquareAPI(api_path="/b")])
    with pytest.raises(ValueError, match="several endpoints"):
        server.benchmark({"input": 1}, concurrency=(1,), duration=0.1, warmup=0)
    result = server.benchmark({"input": 1}, concurrency=(1,), duration=0.2, warmup=0, path="/b")
    assert result.url.endswith("/b")
    by_path = {endpoint.path: endpoint.requests for endpoint in server.status.endpoints}
    assert by_path == {"/a": 0, "/b": result.sent}


def test_a_failing_server_is_counted_by_status(start_server: Start) -> None:
    server = start_server(SquareAPI())
    level = server.benchmark({"wrong": 1}, concurrency=(2,), duration=0.2, warmup=0).level(2)
    assert level.sent > 0 and level.errors == level.sent and level.errors_by_status == {500: level.sent}


@pytest.mark.parametrize(
    ("concurrency", "duration", "warmup"),
    [((), 1.0, 0.0), ((0,), 1.0, 0.0), ((1, 2000), 1.0, 0.0), ((1.5,), 1.0, 0.0), ((1,), 0.0, 0.0), ((1,), 1.0, -1)],
)
def test_bad_arguments_are_refused(concurrency: Any, duration: float, warmup: float) -> None:
    with pytest.raises(ValueError):
        run_benchmark("http://127.0.0.1:1/predict", {}, concurrency, duration, warmup_s=warmup)
    with pytest.raises(ValueError, match="timeout"):
        run_benchmark("http://127.0.0.1:1/predict", {}, (1,), 1.0, timeout_s=0)


def test_a_url_without_a_host_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        run_benchmark("localhost:8000/predict", {}, (1,), 0.1, warmup_s=0)
    with pytest.raises(ValueError, match="clients"):
        run_benchmark("http://127.0.0.1:1/predict", {}, (1,), 0.1, warmup_s=0, clients="ray")


def test_a_broken_client_is_raised_not_counted() -> None:
    url, broken = "http://127.0.0.1:1/predict", {"X-Bad": "line\nbreak"}  # http.client refuses to send it
    with pytest.raises(ValueError, match="header"):
        run_benchmark(url, {}, (2,), 0.1, warmup_s=0, headers=broken, clients="thread")
    with pytest.raises(RuntimeError, match="client process failed"):
        run_benchmark(url, {}, (1,), 0.1, warmup_s=0, headers=broken)


def test_a_server_that_is_not_running_cannot_be_benchmarked() -> None:
    with pytest.raises(ServerStateError, match="benchmark"):
        LitServer(SquareAPI(), accelerator="cpu").benchmark({"input": 1})


def test_requests_without_an_answer_count_as_status_zero() -> None:
    url = f"http://127.0.0.1:{free_port()}/predict"  # nothing listens there
    level = run_benchmark(url, {"input": 1}, (2,), 0.1, warmup_s=0, timeout_s=2, clients="thread").level(2)
    assert level.sent > 0 and level.errors == level.sent and level.errors_by_status == {0: level.sent}
    assert level.p50_s is None and level.requests_per_s == 0.0


def test_a_result_renders_as_a_table_and_a_plot_and_as_plain_values() -> None:
    levels = (
        LevelResult(1, 10, 1.0, 10.0, 0.001, 0.002, 0.003, 0.0015, ((200, 9), (500, 1))),
        LevelResult(8, 80, 1.0, 80.0, 0.004, 0.006, 0.010, 0.005, ((200, 80),)),
    )
    result = BenchmarkResult("http://127.0.0.1:8000/predict", levels, warmup_sent=5)
    page = result._repr_html_()
    assert "<table>" in page and "<svg" in page and "<polyline" in page and "c=8" in page
    assert "1 (500: 1)" in page
    text = repr(result)
    assert "req/s" in text and "80.0" in text
    plain = json.loads(json.dumps(result.to_dict()))
    assert plain["levels"][0]["status_counts"] == {"200": 9, "500": 1} and plain["levels"][0]["errors"] == 1
    assert result.sent == 95
    with pytest.raises(KeyError):
        result.level(3)
