"""Failure paths found in review: hooks that raise BaseException, stop() from odd places, /health, limits."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from litserve import LitAPI, LitServer, RequestFailedError, ServerState
from litserve.runtime import registry
from tests.apis import GatedPredictAPI, SquareAPI
from tests.sync import CrossEvent, CrossSemaphore

Start = Callable[..., LitServer]


def post(server: LitServer, payload: Any) -> requests.Response:
    return requests.post(server.url + "/predict", json=payload, timeout=30)


class ExitingAPI(SquareAPI):
    def predict(self, x: Any) -> Any:
        if x == "exit":
            raise SystemExit(3)
        return super().predict(x)


def test_a_hook_raising_system_exit_fails_its_request_and_the_worker_goes_on(start_server: Start) -> None:
    server = start_server(ExitingAPI())
    response = post(server, {"input": "exit"})
    assert (response.status_code, response.json()) == (500, {"detail": "Internal server error"})
    assert post(server, {"input": 3}).json() == {"output": 9}
    last = server.status.last_error
    assert last is not None and "SystemExit" in last.summary


class CancellingAsyncAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(enable_async=True)

    async def predict(self, x: Any) -> Any:
        if x == "cancel":
            raise asyncio.CancelledError()
        return x


def test_an_async_hook_raising_cancelled_error_is_answered_at_once(start_server: Start) -> None:
    server = start_server(CancellingAsyncAPI(), timeout=False)
    response = post(server, "cancel")
    assert response.status_code == 500
    assert post(server, "fine").json() == "fine"


class RaisingHealthAPI(SquareAPI):
    def health(self) -> bool:
        raise RuntimeError("probe failed")


def test_a_health_check_that_raises_is_not_ready(start_server: Start) -> None:
    server = start_server(RaisingHealthAPI())
    for _ in range(3):  # in process mode a worker may be the thread that reads the check: it must live on
        response = requests.get(server.url + "/health", timeout=10)
        assert (response.status_code, response.text) == (503, "not ready")
    answer = requests.post(server.url + "/predict", json={"input": 3}, timeout=10)
    assert answer.json() == {"output": 9}


def test_wrong_method_says_which_methods_are_allowed(lit_server: Start) -> None:
    server = lit_server(SquareAPI())
    response = requests.get(server.url + "/predict", timeout=10)
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


def test_an_api_path_with_a_trailing_slash_is_refused() -> None:
    with pytest.raises(ValueError, match="must not end with '/'"):
        SquareAPI(api_path="/predict/")


class StreamUntilDeadlineAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(stream=True)
        self.gate = CrossEvent()

    def predict(self, x: Any) -> Iterator[Any]:
        yield {"first": True}
        self.gate.wait(10)
        yield {"second": True}


def test_a_stream_cut_by_its_deadline_counts_as_timed_out(start_server: Start) -> None:
    api = StreamUntilDeadlineAPI()
    server = start_server(api, timeout=0.3)
    response = post(server, {})
    assert response.content.splitlines()[-1] == b'{"error":"Request timed out","status":504}'
    api.gate.set()
    endpoint = server.status.endpoints[0]
    assert (endpoint.ok, endpoint.timed_out) == (1, 1)


class StopFromHookAPI(SquareAPI):
    server: LitServer | None = None

    def predict(self, x: Any) -> Any:
        assert StopFromHookAPI.server is not None
        StopFromHookAPI.server.stop()  # must neither deadlock nor raise
        return super().predict(x)


def test_stop_called_from_a_hook_stops_the_server_after_answering() -> None:
    server = LitServer(StopFromHookAPI(), accelerator="cpu").start(port=0)
    StopFromHookAPI.server = server
    try:
        assert post(server, {"input": 2}).json() == {"output": 4}
        assert server._stopped.wait(20)
        assert server.state is ServerState.STOPPED
    finally:
        StopFromHookAPI.server = None
        server.stop()
        for thread in threading.enumerate():
            if thread.name == "litserve-stopper":
                thread.join(10)


def test_two_threads_stopping_at_once_both_return_when_it_is_stopped() -> None:
    api = GatedPredictAPI()
    server = LitServer(api, accelerator="cpu", shutdown_timeout=10).start(port=0)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        in_flight = pool.submit(post, server, {"input": 3})
        assert api.entered.acquire(10)
        first = pool.submit(server.stop)
        second = pool.submit(server.stop)
        api.gate.set()
        first.result(20)
        second.result(20)
        assert server.state is ServerState.STOPPED
        assert in_flight.result(10).json() == {"output": 9}


class _Holder:
    def __init__(self) -> None:
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1


def test_the_port_registry_forgets_only_its_own_server() -> None:
    old, new = _Holder(), _Holder()
    registry.remember(54321, old)
    registry.stop_holder_of(54321, new)
    assert old.stopped == 1
    registry.remember(54321, new)
    registry.forget(54321, old)  # a late forget by the replaced server must not drop the new one
    registry.stop_holder_of(54321, _Holder())
    assert new.stopped == 1
    registry.forget(54321, new)


@pytest.mark.slow
def test_requests_still_queued_behind_a_stuck_worker_are_answered_at_stop() -> None:
    api = GatedPredictAPI()
    server = LitServer(api, accelerator="cpu", timeout=False, shutdown_timeout=0).start(port=0)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        stuck = pool.submit(server.predict, {"input": 1})
        assert api.entered.acquire(10)
        queued = pool.submit(server.predict, {"input": 2})
        try:
            server.stop()  # the worker cannot be joined: it is inside predict
            with pytest.raises(RequestFailedError) as caught:
                queued.result(10)
            assert (caught.value.status_code, caught.value.detail) == (503, "Server is shutting down")
        finally:
            api.gate.set()
        assert stuck.result(10) == {"output": 1}
    for thread in threading.enumerate():
        if thread.name.startswith("litserve-worker"):
            thread.join(10)


def test_showing_the_server_again_reuses_its_panel() -> None:
    with LitServer(SquareAPI(), accelerator="cpu").start(port=0) as server:
        first = server.widget()
        server._repr_mimebundle_()
        assert server.widget() is first
        assert len([t for t in threading.enumerate() if t.name == "litserve-panel"]) == 1


def test_cross_process_semaphore_counts() -> None:
    semaphore = CrossSemaphore()
    semaphore.release(2)
    assert semaphore.acquire(1) and semaphore.acquire(1)
    assert not semaphore.acquire(0.01)
