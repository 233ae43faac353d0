"""The hint that thread-mode workers are CPU-bound: given once for hooks that spin, never for hooks that wait."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

import litserve as ls
from litserve import LitServer
from litserve.engine.cpu_hint import MIN_REQUESTS, CpuMeter, usable_cores

HINT_LOGGER = "litserve.engine.cpu_hint"
MAX_REQUESTS = 400  # bounded: the hint must come well before this many requests


class Spin(ls.LitAPI):
    """predict keeps the interpreter lock busy for 10 ms of its thread's CPU time."""

    def setup(self, device: str) -> None:
        pass

    def predict(self, x: Any) -> Any:
        until = time.thread_time() + 0.010
        while time.thread_time() < until:
            pass
        return x


class Wait(ls.LitAPI):
    """predict waits (as for IO or a device), using no CPU."""

    def setup(self, device: str) -> None:
        pass

    def predict(self, x: Any) -> Any:
        time.sleep(0.010)
        return x


class _Catch(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.given = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.given.set()


@pytest.fixture
def hints() -> Iterator[_Catch]:
    catch = _Catch()
    logger = logging.getLogger(HINT_LOGGER)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(catch)
    try:
        yield catch
    finally:
        logger.removeHandler(catch)
        logger.setLevel(level)


def _send_until(server: LitServer, stop: Callable[[], bool], count: int) -> int:
    sent = 0
    with requests.Session() as session:
        while sent < count and not stop():
            answer = session.post(server.url + "/predict", json={"input": sent}, timeout=30)
            assert answer.status_code == 200
            sent += 1
    return sent


needs_two_cores = pytest.mark.skipif(usable_cores() < 2, reason="the hint is for machines with several cores")


@needs_two_cores
def test_cpu_bound_thread_workers_get_the_hint_once(lit_server: Callable[..., LitServer], hints: _Catch) -> None:
    server = lit_server(Spin(), worker_mode="thread")
    _send_until(server, hints.given.is_set, MAX_REQUESTS)
    assert hints.given.is_set(), f"no hint after {MAX_REQUESTS} CPU-bound requests"
    _send_until(server, lambda: False, MIN_REQUESTS * 2)  # later windows say nothing more
    assert len(hints.records) == 1
    message = hints.records[0].getMessage()
    assert "worker_mode='process'" in message and "/predict" in message


@pytest.mark.parametrize(("api", "mode"), [(Wait, "thread"), (Spin, "process")])
def test_no_hint_for_waiting_hooks_nor_for_worker_processes(
    lit_server: Callable[..., LitServer], hints: _Catch, api: type[ls.LitAPI], mode: str
) -> None:
    server = lit_server(api(), worker_mode=mode)
    _send_until(server, lambda: False, MIN_REQUESTS * 3)
    assert hints.records == []


def test_one_core_never_hints(hints: _Catch) -> None:
    now = [0.0]
    meter = CpuMeter("/predict", cores=1, wall=lambda: now[0])
    assert not meter.active  # the workers do not even read their CPU clock


def test_the_window_needs_enough_requests_and_time(hints: _Catch) -> None:
    now = [0.0]
    meter = CpuMeter("/predict", cores=2, wall=lambda: now[0])
    meter.ran(0.01, 1)  # starts the window
    for _ in range(MIN_REQUESTS - 1):
        now[0] += 0.1
        meter.ran(0.1, 1)  # fully CPU-bound, but too few requests yet
    assert hints.records == [] and meter.active
    now[0] += 0.1
    meter.ran(0.1, 1)
    assert len(hints.records) == 1 and not meter.active
