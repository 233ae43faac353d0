"""`server.tune_batching`: each setting tried on the live server by hot swap, measured over HTTP, the best kept."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from litserve import LitAPI, LitServer
from litserve.batch_tuning import BatchingTrial, TuningResult, batching_settings
from litserve.exceptions import WorkerSetupError
from litserve.load_test import LevelResult
from tests.helpers import post

Start = Callable[..., LitServer]


class FixedCostAPI(LitAPI):
    """Each predict call costs the same whatever its batch (a GPU kernel's launch): batching pays.

    Answers say which setting served them and how big their batch was.
    """

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Any:
        time.sleep(0.005)
        inputs = x if self.max_batch_size > 1 else [x]
        answers = [{"limit": self.max_batch_size, "size": len(inputs), "output": value * 2} for value in inputs]
        return answers if self.max_batch_size > 1 else answers[0]

    def encode_response(self, output: Any) -> Any:
        return output


def _limit(server: LitServer) -> int:
    answer = post(server, {"input": 1})
    assert answer.status_code == 200
    return int(answer.json()["limit"])


def test_the_settings_to_try() -> None:
    assert batching_settings((1, 4, 8), (0.001, 0.01)) == [(1, 0.0), (4, 0.001), (4, 0.01), (8, 0.001), (8, 0.01)]
    assert batching_settings((4, 4), (0.01,)) == [(4, 0.01)]
    with pytest.raises(ValueError, match="at least one"):
        batching_settings((), (0.01,))


def test_each_setting_is_measured_on_the_live_server_and_the_best_is_applied(start_server: Start) -> None:
    api = FixedCostAPI()
    server = start_server(api)
    result = server.tune_batching(
        {"input": 3}, max_batch_sizes=(1, 4), batch_timeouts=(0.005,), concurrency=4, duration=0.6, clients="thread"
    )
    assert [(t.max_batch_size, t.batch_timeout) for t in result.trials] == [(1, 0.0), (4, 0.005)]
    assert all(t.level.sent > 0 and t.level.errors == 0 for t in result.trials)
    # The recommendation is the trial with the most req/s (no bound, no errors), and the server now serves it.
    assert result.best is max(result.trials, key=lambda t: t.level.requests_per_s)
    assert result.applied
    assert _limit(server) == result.best.max_batch_size
    assert server.status.endpoints[0].workers  # still serving, on the same server object
    # Every request the sweep sent was answered and counted by the one server.
    assert server.status.endpoints[0].server_errors == 0


def test_with_batches_the_sweep_forms_them(start_server: Start) -> None:
    server = start_server(FixedCostAPI())
    server.tune_batching({"input": 3}, max_batch_sizes=(4,), batch_timeouts=(0.01,), concurrency=4, duration=0.6)
    sizes = dict(server.status.endpoints[0].batch_sizes)
    assert any(size > 1 for size in sizes), sizes


def test_a_bound_no_setting_meets_leaves_the_original_api(start_server: Start) -> None:
    api = FixedCostAPI(max_batch_size=2, batch_timeout=0.001)
    server = start_server(api)
    result = server.tune_batching(
        {"input": 3}, max_batch_sizes=(1, 4), batch_timeouts=(0.005,), p99_bound=1e-9, duration=0.3, concurrency=2
    )
    assert result.best is None and not result.applied
    assert "no setting" in repr(result)
    assert server._apis[0] is api
    assert _limit(server) == 2


def test_apply_false_serves_the_original_api_again(start_server: Start) -> None:
    api = FixedCostAPI()
    server = start_server(api)
    result = server.tune_batching(
        {"input": 3}, max_batch_sizes=(4,), batch_timeouts=(0.005,), duration=0.3, concurrency=2, apply=False
    )
    assert result.best is not None and not result.applied
    assert server._apis[0] is api and _limit(server) == 1


def test_a_setting_that_cannot_be_served_raises_before_any_swap(start_server: Start) -> None:
    api = FixedCostAPI()
    server = start_server(api)
    with pytest.raises(ValueError, match="max_batch_size"):
        server.tune_batching({"input": 3}, max_batch_sizes=(1, 0), batch_timeouts=(0.005,), duration=0.3)
    with pytest.raises(ValueError, match="batch_timeout"):
        server.tune_batching({"input": 3}, max_batch_sizes=(4,), batch_timeouts=(-1.0,), duration=0.3)
    assert server._apis[0] is api and _limit(server) == 1
    assert server.status.requests == 1  # no load ran


class SetupFailsWhenBatchedAPI(FixedCostAPI):
    def setup(self, device: str) -> None:
        if self.max_batch_size > 1:
            raise RuntimeError("this model cannot batch")


def test_a_setting_whose_setup_fails_raises_and_the_original_serves(start_server: Start) -> None:
    api = SetupFailsWhenBatchedAPI()
    server = start_server(api)
    with pytest.raises(WorkerSetupError, match="cannot batch"):
        server.tune_batching({"input": 3}, max_batch_sizes=(1, 4), batch_timeouts=(0.005,), duration=0.3)
    assert server._apis[0] is api and _limit(server) == 1


def test_tuning_needs_a_running_server() -> None:
    server = LitServer(FixedCostAPI(), accelerator="cpu")
    with pytest.raises(Exception, match="tune_batching"):
        server.tune_batching({"input": 3})


def _trial(size: int, rps: float, p99_s: float, errors: int = 0) -> BatchingTrial:
    counts = ((200, 10),) + (((500, errors),) if errors else ())
    level = LevelResult(4, 10 + errors, 1.0, rps, p99_s / 2, p99_s, p99_s, p99_s / 2, counts)
    return BatchingTrial(size, 0.005, level)


def test_the_result_renders_and_marks_the_best() -> None:
    trials = (_trial(1, 100.0, 0.010), _trial(4, 300.0, 0.020), _trial(8, 500.0, 0.040, errors=1))
    result = TuningResult(trials, trials[1], 0.030, True)
    text = repr(result)
    assert "max_batch_size=4" in text and "300.0 req/s" in text and "p99 <= 30 ms" in text
    page = result._repr_html_()
    assert page.count("<tr") == 4 and "font-weight:bold" in page
    assert result.to_dict()["best"] == {"max_batch_size": 4, "batch_timeout": 0.005}
    assert [t["max_batch_size"] for t in result.to_dict()["trials"]] == [1, 4, 8]
