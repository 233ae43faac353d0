"""Per-request timing: the Server-Timing header (only when on), `current_timing()` in encode_response,
the `litserve.access` DEBUG line; and the status' histograms and Prometheus families they feed."""

from __future__ import annotations

import concurrent.futures
import logging
import pickle
import re
from collections.abc import Callable
from typing import Any

import pytest
import requests
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from litserve import Callback, LitServer
from litserve.metrics import StatusCollector, families
from litserve.status import SECONDS_BUCKETS, EndpointStatus, Histogram, ServerState, ServerStatus
from litserve.timing import Timing, current_timing
from tests.apis import SquareAPI
from tests.helpers import gathering
from tests.sync import CrossLog

Start = Callable[..., LitServer]
BATCH = 4
_ENTRY = re.compile(r'(\w+)(?:;dur=([\d.]+))?(?:;desc="(\d+)")?')


class TimedBatchAPI(SquareAPI):
    """Batches of 4 (the window is long: only the fourth request closes it); answers carry their timing."""

    def __init__(self) -> None:
        super().__init__(max_batch_size=BATCH, batch_timeout=10.0)

    def predict(self, xs: Any) -> Any:
        return [x * x for x in xs]

    def encode_response(self, output: Any) -> Any:
        timing = current_timing()
        assert timing is not None
        return {"output": output, "batch_size": timing.batch_size, "queue_wait_s": timing.queue_wait_s}


def server_timing(header: str) -> dict[str, tuple[float | None, str | None]]:
    entries = {}
    for part in header.split(", "):
        match = _ENTRY.fullmatch(part)
        assert match, header
        name, dur, desc = match.groups()
        entries[name] = (None if dur is None else float(dur), desc)
    return entries


def _post_batch(server: LitServer) -> list[requests.Response]:
    with gathering(server), concurrent.futures.ThreadPoolExecutor(BATCH) as pool:
        futures = [
            pool.submit(requests.post, server.url + "/predict", json={"input": x}, timeout=30) for x in range(BATCH)
        ]
        return [future.result(30) for future in futures]


def test_server_timing_is_there_when_on_and_its_numbers_are_plausible(start_server: Start) -> None:
    server = start_server(TimedBatchAPI(), server_timing=True)
    for response in _post_batch(server):
        assert response.status_code == 200
        entries = server_timing(response.headers["Server-Timing"])
        assert set(entries) == {"queue", "predict", "batch", "total"}
        queue_ms, predict_ms, total_ms = entries["queue"][0], entries["predict"][0], entries["total"][0]
        assert queue_ms is not None and predict_ms is not None and total_ms is not None
        assert 0 <= queue_ms <= total_ms and 0 <= predict_ms <= total_ms
        assert entries["batch"][1] == str(BATCH)
        body = response.json()  # encode_response saw the same timing
        assert body["batch_size"] == BATCH
        assert body["queue_wait_s"] * 1000 == pytest.approx(queue_ms, abs=0.001)
    failed = requests.post(server.url + "/predict", data=b"{", timeout=10)
    assert failed.status_code == 400
    assert set(server_timing(failed.headers["Server-Timing"])) == {"total"}  # it never ran
    endpoint = server.status.endpoints[0]
    assert endpoint.batch_sizes == ((BATCH, 1),)
    assert endpoint.queue_wait.count == BATCH and endpoint.duration.count == BATCH + 1


def test_no_server_timing_header_by_default(start_server: Start) -> None:
    server = start_server(SquareAPI())
    response = requests.post(server.url + "/predict", json={"input": 2}, timeout=10)
    assert response.json() == {"output": 4}
    assert "Server-Timing" not in response.headers


def test_the_access_log_has_one_debug_line_per_answer_with_its_timing(
    start_server: Start, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server(TimedBatchAPI())
    with caplog.at_level(logging.DEBUG, logger="litserve.access"):
        _post_batch(server)
    lines = [r.getMessage() for r in caplog.records if r.name == "litserve.access"]
    assert len(lines) == BATCH
    assert all(
        re.fullmatch(r"POST /predict 200 answered in [\d.]+ ms \(queue [\d.]+ ms, batch 4, predict [\d.]+ ms\)", line)
        for line in lines
    ), lines


class CountdownAPI(SquareAPI):
    def predict(self, x: Any) -> Any:
        yield from range(x)

    def encode_response(self, outputs: Any) -> Any:
        for output in outputs:
            yield {"output": output}


def test_a_streams_access_line_gives_its_time_to_the_first_chunk(
    start_server: Start, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server(CountdownAPI(stream=True), server_timing=True)
    with caplog.at_level(logging.DEBUG, logger="litserve.access"):
        response = requests.post(server.url + "/predict", json={"input": 2}, timeout=10)
    assert response.status_code == 200 and "Server-Timing" not in response.headers  # streams carry none
    lines = [r.getMessage() for r in caplog.records if r.name == "litserve.access"]
    assert len(lines) == 1 and re.fullmatch(r"POST /predict 200 first chunk in [\d.]+ ms", lines[0]), lines
    assert server.status.endpoints[0].first_chunk.count == 1


class SeesTiming(Callback):
    """Records what `current_timing()` says around encode_response (in the worker, thread or process)."""

    def __init__(self) -> None:
        self.seen = CrossLog()

    def on_before_predict(self, lit_api: Any) -> None:
        self.seen.append(["before_predict", current_timing() is not None])

    def on_after_encode_response(self, lit_api: Any) -> None:
        timing = current_timing()
        self.seen.append(["after_encode", None if timing is None else timing.batch_size])


def test_callbacks_around_encode_response_see_the_timing_and_predict_does_not(start_server: Start) -> None:
    callback = SeesTiming()
    server = start_server(TimedBatchAPI(), callbacks=[callback])
    assert all(response.status_code == 200 for response in _post_batch(server))
    seen = callback.seen.values()
    assert ["before_predict", False] in seen
    assert [entry for entry in seen if entry[0] == "after_encode"] == [["after_encode", BATCH]] * BATCH


def test_no_timing_is_current_outside_encode_response() -> None:
    assert current_timing() is None


# --- the counters behind the families ---------------------------------------------------------------


def test_a_histogram_bound_is_inclusive_and_the_last_bucket_holds_the_rest() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.1, 0.05, 0.5, 1.0, 7.0):
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.counts == (2, 2, 1) and snapshot.count == 5
    assert snapshot.sum == pytest.approx(8.65)


def test_the_families_of_a_snapshot_parse_back_with_prometheus_own_parser() -> None:
    duration = Histogram()
    for value in (0.0004, 0.003, 2.0):
        duration.observe(value)
    endpoint = EndpointStatus(
        path="/predict",
        queue_depth=3,
        in_flight=5,
        ok=2,
        client_errors=1,
        server_errors=0,
        timed_out=0,
        cancelled=0,
        dropped_timed_out=0,
        dropped_cancelled=0,
        workers=(),
        batch_sizes=((1, 2), (3, 1)),
        status_codes=((200, 2), (422, 1)),
        duration=duration.snapshot(),
    )
    status = ServerStatus(ServerState.RUNNING, None, 1.0, (endpoint,))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(lambda: status))
    parsed = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(generate_latest(registry).decode())
        for s in f.samples
    }
    assert parsed[("litserve_requests_total", (("code", "422"), ("endpoint", "/predict")))] == 1
    assert parsed[("litserve_request_duration_seconds_bucket", (("endpoint", "/predict"), ("le", "0.0005")))] == 1
    assert parsed[("litserve_request_duration_seconds_bucket", (("endpoint", "/predict"), ("le", "+Inf")))] == 3
    assert parsed[("litserve_batch_size_bucket", (("endpoint", "/predict"), ("le", "2.0")))] == 2
    assert parsed[("litserve_batch_size_sum", (("endpoint", "/predict"),))] == 5
    assert parsed[("litserve_requests_queued", (("endpoint", "/predict"),))] == 3
    assert len(SECONDS_BUCKETS) + 1 == len(endpoint.duration.counts)
    assert [f.name for f in families(status)][:2] == ["litserve_server_state", "litserve_uptime_seconds"]


def test_timing_pickles_as_itself() -> None:
    timing = Timing(0.25, 3, 0.125)
    assert pickle.loads(pickle.dumps(timing)) == timing
