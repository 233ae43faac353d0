"""Answers that must stay JSON and stay per request, whatever a hook raises or returns, in both worker modes:
error details that cannot be encoded, NaN and Infinity in an output, and request models named by string
annotations (`from __future__ import annotations`) in a class shipped by value to a worker process."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import textwrap
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from litserve import HTTPException, LitAPI, LitServer
from tests.helpers import gathering, post

Start = Callable[..., LitServer]

pytestmark = pytest.mark.timeout(120)

LONE_SURROGATE = "\ud800"  # valid in a JSON request ("\ud800") and in a Python str, but not UTF-8


# --- error details that cannot be encoded ----------------------------------------------------------------


class PickyBatchAPI(LitAPI):
    """Refuses inputs that are not numbers with a detail that repeats the input."""

    def decode_request(self, request: Any) -> Any:
        x = request["input"]
        if not isinstance(x, int | float):
            raise HTTPException(422, f"bad input {x}")
        return x

    def predict(self, x: Any) -> Any:
        return [value * 2 for value in x]

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


def test_an_unencodable_detail_fails_only_its_own_item_of_a_batch(start_server: Start) -> None:
    # The batch closes at three requests (its window is far longer than the test), so all three share it.
    server = start_server(PickyBatchAPI(max_batch_size=3, batch_timeout=60.0), timeout=90)
    inputs: list[Any] = [1, LONE_SURROGATE, 3]
    with gathering(server), concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda x: post(server, {"input": x}, timeout=90), inputs))
    assert [a.status_code for a in answers] == [200, 422, 200]
    assert answers[0].json() == {"output": 2} and answers[2].json() == {"output": 6}
    assert answers[1].json() == {"detail": "bad input \ufffd"}  # replaced, readable, valid UTF-8 JSON
    endpoint = server.status.endpoints[0]
    assert endpoint.batch_sizes == ((3, 1),)
    assert (endpoint.ok, endpoint.client_errors, endpoint.server_errors) == (2, 1, 0)


class DetailStrRaises:
    def __str__(self) -> str:
        raise RuntimeError("no text either")


class RaisingDetailAPI(LitAPI):
    def decode_request(self, request: Any) -> Any:
        if request["input"] == "odd":
            raise HTTPException(400, DetailStrRaises())
        return request["input"]

    def predict(self, x: Any) -> Any:
        return x

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


def test_a_detail_that_is_neither_json_nor_text_still_gets_its_status(start_server: Start) -> None:
    server = start_server(RaisingDetailAPI())
    answer = post(server, {"input": "odd"})
    assert (answer.status_code, answer.json()) == (400, {"detail": "Internal server error"})
    assert post(server, {"input": 2}).json() == {"output": 2}


def test_an_output_with_a_lone_surrogate_is_sent_with_it_replaced(start_server: Start) -> None:
    class EchoAPI(LitAPI):
        def predict(self, x: Any) -> Any:
            return {"echo": x["input"]}

    server = start_server(EchoAPI())
    answer = post(server, {"input": f"a{LONE_SURROGATE}b"})
    assert (answer.status_code, answer.json()) == (200, {"echo": "a\ufffdb"})


# --- NaN and Infinity ----------------------------------------------------------------------------------


class NonFiniteAPI(LitAPI):
    def predict(self, x: Any) -> Any:
        return float(x["input"])  # float("nan"), float("inf")

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_or_infinity_in_an_output_is_a_500_whose_log_names_the_hook_and_endpoint(
    start_server: Start, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    server = start_server(NonFiniteAPI())
    with caplog.at_level(logging.ERROR, logger="litserve"):
        answer = post(server, {"input": value})
        assert (answer.status_code, answer.json()) == (500, {"detail": "Internal server error"})
        assert post(server, {"input": "2.5"}).json() == {"output": 2.5}
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "encode_response" in logged and "/predict" in logged and "NaN or Infinity" in logged
    last_error = server.status.last_error
    assert last_error is not None and "NonFiniteNumberError" in last_error.summary
    assert "encode_response" in last_error.where


class NonFiniteStreamAPI(LitAPI):
    def predict(self, x: Any) -> Iterator[Any]:
        yield 1.0
        yield float("nan")
        yield 3.0

    def encode_response(self, output: Iterator[Any]) -> Iterator[Any]:
        for value in output:
            yield {"output": value}


def test_nan_in_a_started_stream_ends_it_with_the_error_line(start_server: Start) -> None:
    server = start_server(NonFiniteStreamAPI(stream=True))
    with requests.post(server.url + "/predict", json={}, stream=True, timeout=30) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert response.status_code == 200
    assert lines == [{"output": 1.0}, {"error": "Internal server error", "status": 500}]


class BatchedNonFiniteStreamAPI(LitAPI):
    def predict(self, x: Any) -> Iterator[Any]:
        for step in range(3):
            yield [float("nan") if value == "bad" and step == 1 else float(step) for value in x]

    def encode_response(self, output: Iterator[Any]) -> Iterator[Any]:
        for step in output:
            yield [{"output": value} for value in step]


def test_nan_in_one_stream_of_a_batch_ends_only_that_stream(start_server: Start) -> None:
    server = start_server(BatchedNonFiniteStreamAPI(stream=True, max_batch_size=2, batch_timeout=60.0), timeout=90)

    def lines_for(value: str) -> list[Any]:
        with requests.post(server.url + "/predict", json=value, stream=True, timeout=90) as response:
            return [json.loads(line) for line in response.iter_lines() if line]

    with gathering(server), concurrent.futures.ThreadPoolExecutor(2) as pool:
        bad, good = pool.map(lines_for, ["bad", "good"])
    assert bad == [{"output": 0.0}, {"error": "Internal server error", "status": 500}]
    assert good == [{"output": 0.0}, {"output": 1.0}, {"output": 2.0}]
    assert server.status.endpoints[0].batch_sizes == ((2, 1),)


# --- string annotations in a class shipped by value ---------------------------------------------------

CELL = textwrap.dedent(
    """
    from __future__ import annotations

    from pydantic import BaseModel

    from litserve import LitAPI


    class Body(BaseModel):
        text: str
        times: int = 1


    class RepeatAPI(LitAPI):
        def decode_request(self, request: Body) -> str:
            return request.text * request.times

        def predict(self, x: str) -> str:
            return x

        def encode_response(self, output: str) -> dict:
            return {"output": output}
    """
)


def notebook_cell(source: str) -> types.ModuleType:
    """Run `source` as a notebook cell does: in a module Python cannot import again, so its classes are
    shipped by value (cloudpickle) to worker processes."""
    module = types.ModuleType("litserve_test_cell")  # not in sys.modules: not importable
    exec(compile(source, "<cell>", "exec"), module.__dict__)
    return module


def test_a_body_model_named_by_a_string_annotation_validates_in_both_modes(start_server: Start) -> None:
    server = start_server(notebook_cell(CELL).RepeatAPI())
    answer = post(server, {"text": "ab", "times": 2})
    assert (answer.status_code, answer.json()) == (200, {"output": "abab"})
    refused = post(server, {"times": 2})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["text"]
    assert server.status.workers[0].restarts == 0


def test_an_annotation_that_names_nothing_means_the_parsed_body_with_a_warning(
    start_server: Start, caplog: pytest.LogCaptureFixture
) -> None:
    source = CELL.replace("request: Body", "request: Missing").replace(
        "return request.text * request.times", 'return request["text"]'
    )
    with caplog.at_level(logging.WARNING, logger="litserve"):
        api = notebook_cell(source).RepeatAPI()
        server = start_server(api)
    assert "'Missing', which names nothing in its module" in caplog.text
    assert post(server, {"text": "plain"}).json() == {"output": "plain"}  # never None, in either mode


def test_another_parameters_unresolvable_annotation_does_not_hide_the_body_model(start_server: Start) -> None:
    source = CELL.replace("request: Body)", "request: Body, context: NotImported = None)")
    server = start_server(notebook_cell(source).RepeatAPI())
    assert post(server, {"text": "x", "times": 3}).json() == {"output": "xxx"}
    assert post(server, {"text": 1}).status_code == 422
