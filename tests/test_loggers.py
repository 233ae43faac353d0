"""`loggers=` and `LitAPI.log`: entries reach the loggers in the server process, off the request path."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
import requests

import litserve
from litserve import Callback, LitServer, Logger
from litserve import loggers as loggers_module
from litserve.loggers import LogDrain, check_loggers
from tests.apis import SquareAPI
from tests.helpers import post

Start = Callable[..., LitServer]


class ListLogger(Logger):
    """Keeps what it processed; `wait_for(n)` blocks (bounded) until n entries came."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[tuple[str, Any]] = []
        self._changed = threading.Condition()

    def process(self, key: str, value: Any) -> None:
        with self._changed:
            self.entries.append((key, value))
            self._changed.notify_all()

    def wait_for(self, count: int, timeout_s: float = 10.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.entries) >= count, timeout_s)


class LoggingAPI(SquareAPI):
    def setup(self, device: str) -> None:
        super().setup(device)
        self.log("setup", device)

    def predict(self, x: Any) -> Any:
        for i in range(1, 5):
            self.log("time", i / 10)
        return super().predict(x)


class LogAfterPredict(Callback):
    def on_after_predict(self, lit_api: litserve.LitAPI) -> None:
        lit_api.log("after_predict", 1)


def test_logger_is_public_and_importable_as_litserve_does() -> None:
    assert litserve.Logger is loggers_module.Logger
    with pytest.raises(TypeError):
        Logger()  # type: ignore[abstract]


def test_entries_from_hooks_setup_and_callbacks_reach_every_logger_in_order(start_server: Start) -> None:
    first, second = ListLogger(), ListLogger()
    server = start_server(LoggingAPI(), loggers=[first, second], callbacks=[LogAfterPredict()])
    assert post(server, {"input": 4.0}).json() == {"output": 16.0}
    for logger in (first, second):
        assert logger.wait_for(6)
        assert logger.entries == [
            ("setup", "cpu"),
            ("time", 0.1),
            ("time", 0.2),
            ("time", 0.3),
            ("time", 0.4),
            ("after_predict", 1),
        ]


class GatedLogger(ListLogger):
    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def process(self, key: str, value: Any) -> None:
        assert self.gate.wait(10), "the test never opened the logger's gate"
        super().process(key, value)


def test_a_slow_logger_never_holds_up_a_request(start_server: Start) -> None:
    logger = GatedLogger()
    server = start_server(LoggingAPI(), loggers=logger)  # a single Logger works too
    answers = [post(server, {"input": x}).json() for x in (1, 2, 3)]
    assert answers == [{"output": 1}, {"output": 4}, {"output": 9}]
    assert logger.entries == []  # still held by the gate, while every request was answered
    logger.gate.set()
    assert logger.wait_for(13)


class FailingLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def process(self, key: str, value: Any) -> None:
        self.calls += 1
        raise RuntimeError(f"cannot write {key}")


def test_a_failing_logger_is_logged_and_the_thread_goes_on(
    start_server: Start, caplog: pytest.LogCaptureFixture
) -> None:
    failing, good = FailingLogger(), ListLogger()
    with caplog.at_level(logging.ERROR, logger="litserve"):
        server = start_server(LoggingAPI(), loggers=[failing, good])
        assert post(server, {"input": 2}).json() == {"output": 4}
        assert good.wait_for(5)
    assert failing.calls == 5  # every entry, though each one raised
    failures = [r for r in caplog.records if "FailingLogger.process raised" in r.getMessage()]
    assert len(failures) == 5 and all(r.exc_info is not None for r in failures)


def test_log_without_loggers_warns_once_and_never_fails(
    start_server: Start, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loggers_module, "_warned", threading.Event())
    with caplog.at_level(logging.WARNING, logger="litserve"):
        server = start_server(LoggingAPI())
        assert post(server, {"input": 3}).json() == {"output": 9}
        assert post(server, {"input": 4}).json() == {"output": 16}
        server.stop()  # in process mode the entries travel to the server: all arrived once it stopped
    warnings = [r for r in caplog.records if "has no loggers" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert server.status.last_error is None


def test_log_outside_a_server_warns_once(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loggers_module, "_warned", threading.Event())
    with caplog.at_level(logging.WARNING, logger="litserve"):
        SquareAPI().log("key", 1)
        SquareAPI().log("key", 2)
    assert [r.getMessage().count("has no loggers") for r in caplog.records] == [1]


class UnpicklableValueAPI(SquareAPI):
    def predict(self, x: Any) -> Any:
        self.log("fn", lambda: x)  # a lambda: worker processes cannot send it to the server
        self.log("x", x)
        return super().predict(x)


def test_an_entry_that_cannot_travel_fails_neither_the_request_nor_the_next_entries(
    start_server: Start, worker_mode: str
) -> None:
    logger = ListLogger()
    server = start_server(UnpicklableValueAPI(), loggers=[logger])
    assert post(server, {"input": 5}).json() == {"output": 25}
    if worker_mode == "thread":  # nothing travels: the logger gets the value itself
        assert logger.wait_for(2) and [key for key, _ in logger.entries] == ["fn", "x"]
    else:
        assert logger.wait_for(1) and logger.entries == [("x", 5)]
        last = server.status.last_error
        assert last is not None and "lambda" in last.summary


def test_stop_processes_what_is_queued_and_joins_the_loggers_thread(start_server: Start) -> None:
    logger = ListLogger()
    server = start_server(LoggingAPI(), loggers=[logger])
    assert post(server, {"input": 1}).json() == {"output": 1}
    server.stop()
    assert len(logger.entries) == 5  # nothing left behind: stop() drained the queue first
    assert not [t for t in threading.enumerate() if t.name == "litserve-loggers"]


def test_the_drain_is_bounded_and_drops_what_does_not_fit(caplog: pytest.LogCaptureFixture) -> None:
    logger = GatedLogger()
    drain = LogDrain([logger], capacity=2)
    drain.start()
    with caplog.at_level(logging.WARNING, logger="litserve"):
        for i in range(6):  # the first is taken by the thread (held at the gate), two wait, the rest drop
            drain.put("k", i)
            if i == 0:
                assert _wait_until_taken(drain)
    assert drain.dropped == 3
    assert len([r for r in caplog.records if "fall behind" in r.getMessage()]) == 1
    logger.gate.set()
    assert drain.stop()
    assert logger.entries == [("k", 0), ("k", 1), ("k", 2)]
    drain.put("late", 1)  # after stop: ignored, no error
    assert LogDrain([]).stop()  # never started: nothing to join


def _wait_until_taken(drain: LogDrain) -> bool:
    from tests.helpers import wait_until

    return wait_until(lambda: not drain._entries, 10)


def test_check_loggers_says_what_was_wrong() -> None:
    assert check_loggers(None) == ()
    with pytest.raises(TypeError, match="litserve.Logger instances"):
        check_loggers([object()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="a list of them"):
        check_loggers(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="litserve.Logger instances"):
        LitServer(SquareAPI(), loggers=[print])  # type: ignore[list-item]


async def _metrics_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = f"root_path={scope['root_path']} path={scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


class MountingLogger(ListLogger):
    def __init__(self) -> None:
        super().__init__()
        self.mount("/metrics", _metrics_app)


class NoInitLogger(Logger):
    def __init__(self) -> None:  # does not call super().__init__(): mount still works
        self.mount("/stats", _metrics_app)

    def process(self, key: str, value: Any) -> None:
        pass


def test_a_logger_can_mount_an_asgi_app(start_server: Start) -> None:
    server = start_server(SquareAPI(), loggers=[MountingLogger(), NoInitLogger()])
    metrics = requests.get(server.url + "/metrics", timeout=10)
    assert (metrics.status_code, metrics.text) == (200, "root_path=/metrics path=/metrics")
    assert requests.get(server.url + "/stats/x", timeout=10).text == "root_path=/stats path=/stats/x"
    assert post(server, {"input": 2}).json() == {"output": 4}
    assert requests.get(server.url + "/metricsx", timeout=10).status_code == 404
    assert server._ext.web.metrics_path is None  # the built-in metrics route stepped aside


def test_a_mount_may_not_hide_a_route() -> None:
    class OnPredict(ListLogger):
        def __init__(self) -> None:
            super().__init__()
            self.mount("/predict", _metrics_app)

    with pytest.raises(ValueError, match="would hide"):
        LitServer(SquareAPI(), loggers=[OnPredict()])
    with pytest.raises(ValueError, match="would hide"):
        LitServer(SquareAPI(), loggers=[MountingLogger()], healthcheck_path="/metrics/health")


def test_a_logger_stuck_at_stop_is_left_behind_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    logger = GatedLogger()
    drain = LogDrain([logger])
    drain.start()
    drain.put("k", 1)
    with caplog.at_level(logging.WARNING, logger="litserve"):
        assert drain.stop(timeout_s=0.05) is False  # bounded: stop() does not wait for a stuck process()
    assert any("did not finish" in r.getMessage() for r in caplog.records)
    logger.gate.set()
    assert drain.stop()  # it ends once process() returns


def test_a_mount_must_be_an_asgi_app() -> None:
    class BadMount(ListLogger):
        def __init__(self) -> None:
            super().__init__()
            self.mount("/metrics", "not an app")

    with pytest.raises(TypeError, match="not an ASGI app"):
        LitServer(SquareAPI(), loggers=[BadMount()])
