"""LitAPI and LitServer arguments are checked at construction, with messages that say what to do."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from litserve import LitAPI, LitServer
from litserve.testing import serving
from tests.apis import SquareAPI


class Minimal(LitAPI):
    def predict(self, x: Any) -> Any:
        return x


class NoSuperInit(LitAPI):
    def __init__(self, scale: int) -> None:  # old LitServe style: never calls super().__init__()
        self.scale = scale

    def predict(self, x: Any) -> Any:
        return x * self.scale


def test_only_predict_is_required() -> None:
    api = Minimal()
    assert api.decode_request({"a": 1}) == {"a": 1}
    assert api.encode_response(3) == 3
    assert api.health() is True
    assert (api.max_batch_size, api.batch_timeout, api.api_path, api.stream) == (1, 0.0, "/predict", False)


def test_a_litapi_without_predict_cannot_be_created() -> None:
    class NoPredict(LitAPI):
        pass

    with pytest.raises(TypeError, match="predict"):
        NoPredict()  # type: ignore[abstract]


def test_subclass_that_skips_super_init_gets_defaults() -> None:
    api = NoSuperInit(3)
    assert api.api_path == "/predict" and api.max_batch_size == 1
    LitServer(api, accelerator="cpu")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_batch_size": 0}, ValueError, "max_batch_size must be >= 1"),
        ({"max_batch_size": 2.5}, TypeError, "max_batch_size must be an int"),
        ({"batch_timeout": -1}, ValueError, "batch_timeout"),
        ({"batch_timeout": "1"}, TypeError, "batch_timeout"),
        ({"api_path": "predict"}, ValueError, "starting with '/'"),
        ({"api_path": "/health"}, ValueError, "reserved"),
        ({"stream": "yes"}, TypeError, "stream must be True or False"),
    ],
)
def test_bad_litapi_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Minimal(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"workers_per_device": 0}, ValueError, "workers_per_device"),
        ({"timeout": 0}, ValueError, "timeout must be > 0"),
        ({"timeout": "30"}, TypeError, "timeout must be a number"),
        ({"max_queue_size": 0}, ValueError, "max_queue_size"),
        ({"accelerator": "tpu"}, ValueError, "accelerator must be one of"),
    ],
)
def test_bad_server_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    kwargs.setdefault("accelerator", "cpu")
    with pytest.raises(error, match=message):
        LitServer(SquareAPI(), **kwargs)


@pytest.mark.parametrize("timeout", [False, None, -1])
def test_timeout_can_be_turned_off(timeout: Any) -> None:
    # A batch window longer than the request timeout is refused (see the next test): with no timeout,
    # an hour-long window is fine, and the server says it has no timeout.
    api = SquareAPI(max_batch_size=2, batch_timeout=3600)
    with serving(api, timeout=timeout) as server:
        info = requests.get(server.url + "/info", timeout=10).json()
    assert info["server"]["timeout"] is None


def test_a_batch_window_longer_than_the_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_timeout"):
        LitServer(SquareAPI(max_batch_size=2, batch_timeout=3600), accelerator="cpu", timeout=30)


def test_lit_api_must_be_an_instance() -> None:
    with pytest.raises(TypeError, match="LitAPI instance"):
        LitServer(SquareAPI, accelerator="cpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        LitServer([], accelerator="cpu")


def test_duplicate_paths_are_rejected() -> None:
    with pytest.raises(ValueError, match="'/predict'"):
        LitServer([SquareAPI(), SquareAPI()], accelerator="cpu")


def test_old_server_level_batching_arguments_warn_and_still_work() -> None:
    api = SquareAPI()
    with pytest.warns(DeprecationWarning, match="pass it to the LitAPI"):
        LitServer(api, accelerator="cpu", max_batch_size=4, batch_timeout=0.01)
    assert (api.max_batch_size, api.batch_timeout) == (4, 0.01)


def test_an_api_path_with_a_trailing_slash_is_refused() -> None:
    with pytest.raises(ValueError, match="must not end with '/'"):
        SquareAPI(api_path="/predict/")
