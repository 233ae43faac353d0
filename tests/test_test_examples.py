"""`litserve.test_examples`: LitServe's example APIs give the answers LitServe's own tests expect."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
from collections.abc import Callable

import litserve as ls
from litserve import LitServer
from litserve.test_examples import SimpleBatchedAPI, SimpleLitAPI, SimpleStreamAPI, SimpleTorchAPI, openai_spec_example
from tests.app_client import AppClient
from tests.helpers import post

StartApp = Callable[..., AppClient]


def test_importing_the_examples_imports_neither_torch_nor_numpy() -> None:
    code = (
        "import sys\n"
        "import litserve.test_examples, litserve.test_examples.simple_example, litserve.utils\n"
        "heavy = [name for name in ('torch', 'numpy', 'fastapi', 'starlette') if name in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_examples_are_reachable_as_litserve_attributes() -> None:
    assert ls.test_examples.SimpleLitAPI is SimpleLitAPI
    assert set(ls.test_examples.__all__) == {  # LitServe's list
        "SimpleLitAPI",
        "SimpleBatchedAPI",
        "SimpleTorchAPI",
        "SimpleStreamAPI",
        "TestAPI",
        "TestAPIWithCustomEncode",
        "TestAPIWithStructuredOutput",
        "TestAPIWithToolCalls",
        "OpenAIBatchContext",
    }
    assert all(getattr(ls.test_examples, name).__name__ == name for name in ls.test_examples.__all__)
    assert ls.test_examples.TestAPI is openai_spec_example.TestAPI


def test_simple_lit_api_squares(start_app: StartApp) -> None:
    assert start_app(SimpleLitAPI()).post({"input": 4.0}).json() == {"output": 16.0}


def test_simple_batched_api_answers_each_request_of_a_batch(start_server: Callable[..., LitServer]) -> None:
    server = start_server(SimpleBatchedAPI(max_batch_size=4, batch_timeout=0.05))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda x: post(server, {"input": x}).json(), [1.0, 2.0, 3.0, 4.0]))
    assert answers == [{"output": 1.0}, {"output": 4.0}, {"output": 9.0}, {"output": 16.0}]


def test_simple_batched_api_without_batching(start_app: StartApp) -> None:
    assert start_app(SimpleBatchedAPI()).post({"input": 4.0}).json() == {"output": 16.0}


def test_simple_torch_api_is_two_x_plus_one(start_app: StartApp) -> None:
    assert start_app(SimpleTorchAPI()).post({"input": 4.0}).json() == {"output": 9.0}


def test_simple_stream_api_streams_three_lines(start_app: StartApp) -> None:
    response = start_app(SimpleStreamAPI(stream=True)).post({"input": "Hi"})
    assert (response.status_code, response.headers["content-type"]) == (200, "application/x-ndjson")
    assert response.text == '{"output":"0: Hi"}\n{"output":"1: Hi"}\n{"output":"2: Hi"}\n'
