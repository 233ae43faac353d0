"""`callbacks=`: LitServe's events, where they run, in which order, and that a failing one never fails serving."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import litserve
from litserve import Callback, LitAPI, LitServer
from litserve.callbacks import WORKER_EVENTS, CallbackRunner, EventTypes, check_callbacks
from litserve.engine.observe import NO_OBSERVERS, Observers
from litserve.engine.request_queue import RequestQueue
from litserve.engine.worker import Worker
from litserve.hooks import plan_hooks
from litserve.status import ErrorLog
from tests.apis import GatedPredictAPI, SquareAPI
from tests.helpers import post, wait_until
from tests.sync import CrossLog

Start = Callable[..., LitServer]


class Recorder(Callback):
    """Appends (event, where it ran, what it was given) for every worker event to a log any process can write."""

    def __init__(self) -> None:
        self.events = CrossLog()

    def names(self) -> list[str]:
        return [entry[0] for entry in self.events.values()]


def _recording(name: str) -> Callable[..., None]:
    def record(self: Recorder, *args: Any, **kwargs: Any) -> None:
        api = kwargs.get("lit_api")
        self.events.append(
            [name, os.getpid(), type(api).__name__, getattr(api, "device", None), sorted(kwargs), len(args)]
        )

    return record


class Failing(Callback):
    """Raises in every event."""


def _failing(name: str) -> Callable[..., None]:
    def fail(self: Failing, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"boom in {name}")

    return fail


for _event in WORKER_EVENTS:
    setattr(Recorder, _event.value, _recording(_event.value))
for _event in EventTypes:
    setattr(Failing, _event.value, _failing(_event.value))


def test_callback_is_public_and_importable_as_litserve_does() -> None:
    assert litserve.Callback is litserve.callbacks.Callback
    assert [e.value for e in EventTypes] == [
        "on_before_setup",
        "on_after_setup",
        "on_before_decode_request",
        "on_after_decode_request",
        "on_before_encode_response",
        "on_after_encode_response",
        "on_before_predict",
        "on_after_predict",
        "on_server_start",
        "on_server_end",
        "on_request",
        "on_response",
    ]
    for event in EventTypes:  # every event is a method a subclass may override
        assert getattr(Callback(), event.value)(lit_api=None) is None


def test_worker_events_run_in_the_worker_in_order_with_its_lit_api(start_server: Start, worker_mode: str) -> None:
    recorder = Recorder()
    server = start_server(SquareAPI(), callbacks=[recorder])
    assert post(server, {"input": 3}).json() == {"output": 9}
    assert recorder.names() == [
        "on_before_setup",
        "on_after_setup",
        "on_before_decode_request",
        "on_after_decode_request",
        "on_before_predict",
        "on_after_predict",
        "on_before_encode_response",
        "on_after_encode_response",
    ]
    entries = recorder.events.values()
    pids = {entry[1] for entry in entries}
    assert pids == ({os.getpid()} if worker_mode == "thread" else {server.status.workers[0].pid})
    # Keyword `lit_api=` only, as LitServe passes it; the worker's copy, its device set before setup().
    assert all(entry[2:] == ["SquareAPI", "cpu", ["lit_api"], 0] for entry in entries)


def test_a_single_callback_may_be_passed_without_a_list(start_server: Start) -> None:
    recorder = Recorder()
    server = start_server(SquareAPI(), callbacks=recorder)
    assert post(server, {"input": 2}).json() == {"output": 4}
    assert "on_after_predict" in recorder.names()


class StreamAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(stream=True)

    def predict(self, x: Any) -> Iterator[int]:
        yield from range(3)

    def encode_response(self, outputs: Iterator[int]) -> Iterator[dict[str, int]]:
        for output in outputs:
            yield {"n": output}


def test_a_streaming_hook_is_done_when_its_stream_is_exhausted(start_server: Start) -> None:
    recorder = Recorder()
    server = start_server(StreamAPI(), callbacks=[recorder])
    assert post(server, {"input": 1}).text.splitlines() == ['{"n":0}', '{"n":1}', '{"n":2}']
    assert recorder.names()[2:] == [
        "on_before_decode_request",
        "on_after_decode_request",
        "on_before_predict",
        "on_before_encode_response",
        "on_after_predict",
        "on_after_encode_response",
    ]


class AsyncStreamAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(stream=True, enable_async=True)

    async def decode_request(self, request: Any) -> Any:
        return request["input"]

    async def predict(self, x: Any) -> AsyncIterator[int]:
        for i in range(x):
            yield i

    async def encode_response(self, outputs: AsyncIterator[int]) -> AsyncIterator[dict[str, int]]:
        async for output in outputs:
            yield {"n": output}


class AsyncSquareAPI(SquareAPI):
    def __init__(self) -> None:
        super().__init__(enable_async=True)

    async def predict(self, x: Any) -> Any:
        return x * x


def test_async_hooks_are_done_when_awaited_or_exhausted(start_server: Start) -> None:
    recorder = Recorder()
    server = start_server([AsyncSquareAPI(), _at(AsyncStreamAPI(), "/stream")], callbacks=[recorder])
    assert post(server, {"input": 3}).json() == {"output": 9}
    assert post(server, {"input": 2}, path="/stream").text.splitlines() == ['{"n":0}', '{"n":1}']
    names = [n for n in recorder.names() if "setup" not in n]
    assert names == [
        "on_before_decode_request",
        "on_after_decode_request",
        "on_before_predict",
        "on_after_predict",
        "on_before_encode_response",
        "on_after_encode_response",
        "on_before_decode_request",
        "on_after_decode_request",
        "on_before_predict",
        "on_before_encode_response",
        "on_after_predict",
        "on_after_encode_response",
    ]


def _at(api: LitAPI, path: str) -> LitAPI:
    api.api_path = path
    return api


def test_a_failing_callback_is_logged_with_its_traceback_and_serving_goes_on(
    start_server: Start, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="litserve"):
        server = start_server(SquareAPI(), callbacks=[Failing(), recorder])
        assert post(server, {"input": 5}).json() == {"output": 25}
        assert post(server, {"input": 6}).json() == {"output": 36}
    # The next callback still ran for every event; setup and requests went through.
    assert recorder.names().count("on_after_encode_response") == 2
    last = server.status.last_error
    assert last is not None and "Failing.on_" in last.where and "RuntimeError: boom in on_" in last.summary
    logged = "\n".join(r.getMessage() + (str(r.exc_info[1]) if r.exc_info else "") for r in caplog.records)
    assert "boom in on_before_setup" in logged and "boom in on_after_encode_response" in logged
    assert any(r.exc_info is not None or "Traceback" in r.getMessage() for r in caplog.records)


def test_server_events_run_in_the_server_process(start_server: Start) -> None:
    seen: list[tuple[str, Any]] = []
    answered = threading.Event()

    class ServerEvents(Callback):
        def on_server_start(self, litserver: LitServer) -> None:
            seen.append(("start", litserver))

        def on_request(self, active_requests: int | None, litserver: LitServer) -> None:
            seen.append(("request", active_requests))

        def on_response(self, litserver: LitServer) -> None:
            seen.append(("response", litserver))
            answered.set()

        def on_server_end(self, litserver: LitServer) -> None:
            seen.append(("end", litserver.state))

    server = start_server(SquareAPI(), callbacks=[ServerEvents()])
    assert seen == [("start", server)]
    assert post(server, {"input": 2}).json() == {"output": 4}
    assert answered.wait(10)
    assert seen[1:] == [("request", None), ("response", server)]  # None: track_requests is off
    server.stop()
    assert seen[-1] == ("end", litserve.ServerState.STOPPED)


def test_on_request_sees_the_active_requests_when_tracked(start_server: Start) -> None:
    counts: list[int | None] = []

    class Tracker(Callback):
        def on_request(self, active_requests: int | None, **kwargs: Any) -> None:
            counts.append(active_requests)

    api = GatedPredictAPI()
    server = start_server(api, callbacks=[Tracker()], track_requests=True)
    assert server.active_requests == 0
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = pool.submit(post, server, {"input": 1})
        assert api.entered.acquire(10)
        rest = [pool.submit(post, server, {"input": i}) for i in (2, 3, 4)]
        assert wait_until(lambda: server.active_requests == 4, 10)
        api.gate.set()
        assert [f.result(10).json()["output"] for f in [first, *rest]] == [1, 4, 9, 16]
    assert sorted(counts) == [1, 2, 3, 4]
    assert wait_until(lambda: server.active_requests == 0, 10)


def test_check_callbacks_says_what_was_wrong() -> None:
    assert check_callbacks(None) == ()
    one = Callback()
    assert check_callbacks(one) == (one,)
    with pytest.raises(TypeError, match="litserve.Callback instances"):
        check_callbacks([object()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="a list of them"):
        check_callbacks(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="litserve.Callback instances"):
        LitServer(SquareAPI(), callbacks=["not a callback"])  # type: ignore[list-item]


def test_callback_runner_calls_each_event_by_name_or_type_and_survives_failures() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    failures: list[str] = []

    class Counting(Callback):
        def on_after_predict(self, **kwargs: Any) -> None:
            calls.append(("after_predict", kwargs))

    runner = CallbackRunner([Failing(), Counting()], on_error=lambda where, exc: failures.append(where))
    runner.trigger_event(EventTypes.AFTER_PREDICT, lit_api="api")
    runner.trigger_event("on_after_predict", lit_api="api")
    assert calls == [("after_predict", {"lit_api": "api"})] * 2
    assert failures == ["Failing.on_after_predict"] * 2
    assert CallbackRunner().callbacks == ()


def test_a_worker_without_callbacks_wraps_nothing() -> None:
    """Zero cost: without callbacks a worker has no runner, so its hooks are bound exactly as before."""
    api = SquareAPI()
    queue: RequestQueue[Any] = RequestQueue(None)
    plain = Worker("litserve-test-worker", api, "cpu", queue, ErrorLog(), plan_hooks(api))
    assert plain._callbacks is None
    watched = Worker("w", api, "cpu", queue, ErrorLog(), plan_hooks(api), observers=Observers((Callback(),)))
    assert watched._callbacks is not None
    assert NO_OBSERVERS == Observers()
