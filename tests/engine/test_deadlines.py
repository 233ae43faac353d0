"""Deadlines under one timer: each fires at its time, in order, never when cancelled, never late when out of order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from litserve.engine.deadlines import Deadlines


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh event loop, closed after the test (the deadlines kept on it go with it)."""
    new = asyncio.new_event_loop()
    yield new
    new.close()


def _run_until(loop: asyncio.AbstractEventLoop, done: asyncio.Event) -> None:
    loop.run_until_complete(asyncio.wait_for(done.wait(), 10))


def test_deadlines_fire_in_order_at_their_time_and_cancelled_ones_never(loop: asyncio.AbstractEventLoop) -> None:
    deadlines = Deadlines.of(loop, "request")
    assert Deadlines.of(loop, "request") is deadlines and Deadlines.of(loop, "read") is not deadlines
    fired: list[tuple[str, float]] = []
    done = asyncio.Event()
    start_s = time.monotonic()

    def note(name: str) -> None:
        fired.append((name, time.monotonic()))
        if name == "last":
            done.set()

    deadlines.at(start_s + 0.02, lambda: note("first"))
    cancelled = deadlines.at(start_s + 0.03, lambda: note("cancelled"))
    deadlines.at(start_s + 0.04, lambda: note("last"))
    cancelled.cancel()
    _run_until(loop, done)
    assert [name for name, _ in fired] == ["first", "last"]
    assert fired[0][1] >= start_s + 0.02 and fired[1][1] >= start_s + 0.04
    assert len(deadlines) == 0


def test_a_deadline_set_out_of_order_is_not_late(loop: asyncio.AbstractEventLoop) -> None:
    deadlines = Deadlines.of(loop, "request")
    fired: list[str] = []
    done = asyncio.Event()
    start_s = time.monotonic()
    deadlines.at(start_s + 30, lambda: fired.append("much later"))  # the FIFO's timer is 30 s away
    deadlines.at(start_s + 0.02, lambda: (fired.append("early"), done.set()))  # e.g. a slow body read ended late
    _run_until(loop, done)
    assert fired == ["early"]
    assert time.monotonic() - start_s < 10  # it did not wait for the 30 s timer


def test_cancelled_deadlines_are_let_go_as_new_ones_come(loop: asyncio.AbstractEventLoop) -> None:
    deadlines = Deadlines.of(loop, "request")
    now_s = time.monotonic()
    for i in range(1000):  # requests answered long before their deadlines, one after another
        deadlines.at(now_s + 30 + i * 1e-6, lambda: None).cancel()
    assert len(deadlines) <= 1


def test_a_callback_that_raises_leaves_the_later_deadlines_armed(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    deadlines = Deadlines.of(loop, "request")
    done = asyncio.Event()
    start_s = time.monotonic()

    def broken() -> None:
        raise ValueError("broken")

    def again() -> None:  # a callback may set a deadline of the same kind
        deadlines.at(time.monotonic() + 0.01, done.set)

    deadlines.at(start_s + 0.01, broken)
    deadlines.at(start_s + 0.011, again)
    _run_until(loop, done)
    assert "a deadline's callback raised" in caplog.text


def test_an_earlier_deadline_after_a_cancelled_later_one_fires_at_its_own_time(loop: asyncio.AbstractEventLoop) -> None:
    deadlines = Deadlines.of(loop, "read")
    done = asyncio.Event()
    start_s = time.monotonic()
    deadlines.at(start_s + 30, lambda: None).cancel()  # the timer was armed for 30 s
    deadlines.at(start_s + 0.02, done.set)  # e.g. a shorter timeout after a hot swap
    _run_until(loop, done)
    assert time.monotonic() - start_s < 10


def test_cancelled_deadlines_behind_a_live_one_do_not_pile_up(loop: asyncio.AbstractEventLoop) -> None:
    deadlines = Deadlines.of(loop, "request")
    now_s = time.monotonic()
    slow = deadlines.at(now_s + 30, lambda: None)  # one request still running
    for i in range(10_000):  # every later one answered at once
        deadlines.at(now_s + 30 + i * 1e-6, lambda: None).cancel()
    assert len(deadlines) < 200
    slow.cancel()
