"""The batching policy, driven by a fake clock and a fake source: no real waiting."""

from __future__ import annotations

import asyncio
import queue
from collections import deque

import pytest

from litserve.engine.batcher import collect_batch
from litserve.engine.bridge import LoopReply
from litserve.engine.messages import Cancellation, DropReason, InferenceRequest, Outcome


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


class ScriptedSource:
    """Each get() returns the next scripted arrival; an arrival may come after a delay on the fake clock."""

    def __init__(self, clock: FakeClock, arrivals: list[tuple[float, InferenceRequest | None]]) -> None:
        self.clock = clock
        self.arrivals = deque(arrivals)
        self.waits: list[float | None] = []

    def get(self, timeout_s: float | None = None) -> InferenceRequest | None:
        self.waits.append(timeout_s)
        if not self.arrivals:
            if timeout_s is None:
                raise AssertionError("the batcher would block forever")
            self.clock.now_s += timeout_s
            raise queue.Empty
        delay_s, item = self.arrivals[0]
        if timeout_s is not None and delay_s > timeout_s:
            self.clock.now_s += timeout_s
            self.arrivals[0] = (delay_s - timeout_s, item)
            raise queue.Empty
        self.arrivals.popleft()
        self.clock.now_s += delay_s
        return item

    def get_nowait(self) -> InferenceRequest | None:
        self.waits.append(0.0)
        if not self.arrivals or self.arrivals[0][0] > 0:
            raise queue.Empty
        return self.arrivals.popleft()[1]


@pytest.fixture
def loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def make_request(
    loop: asyncio.AbstractEventLoop, deadline_s: float | None = None, handed_s: float | None = None
) -> InferenceRequest:
    future: asyncio.Future[Outcome] = loop.create_future()
    return InferenceRequest({"input": 1}, LoopReply(loop, future), deadline_s, Cancellation(), handed_s=handed_s)


def test_a_lone_request_waits_for_batch_timeout_then_goes(loop: asyncio.AbstractEventLoop) -> None:
    clock = FakeClock()
    first = make_request(loop)
    source = ScriptedSource(clock, [(0.0, first)])
    batch = collect_batch(source, max_batch_size=4, batch_timeout_s=0.05, clock=clock)
    assert batch is not None and batch.requests == (first,)
    assert source.waits == [None, pytest.approx(0.05)]
    assert clock.now_s == pytest.approx(100.05)


def test_requests_arriving_within_the_timeout_join_the_batch(loop: asyncio.AbstractEventLoop) -> None:
    clock = FakeClock()
    items = [make_request(loop) for _ in range(3)]
    source = ScriptedSource(clock, [(5.0, items[0]), (0.01, items[1]), (0.02, items[2])])
    batch = collect_batch(source, max_batch_size=8, batch_timeout_s=0.05, clock=clock)
    assert batch is not None and batch.requests == tuple(items)
    # Every wait is the real remaining time since the first arrival: no polling interval anywhere.
    assert source.waits == [None, pytest.approx(0.05), pytest.approx(0.04), pytest.approx(0.02)]


@pytest.mark.parametrize(
    ("handed_s", "window_left_s"),
    [
        # Handed over at 100.001 to a worker waiting since 100.0: the 2 ms crossing is part of the
        # window, not waited on top of it.
        pytest.param(100.001, 0.048, id="idle-worker-window-opens-at-the-hand-over"),
        # Handed over at 99.0, while the worker still ran its last batch: the window opens when it
        # began collecting (100.0), as a thread-mode worker's for a request that waited in the queue.
        pytest.param(99.0, 0.047, id="busy-worker-window-opens-when-it-began-collecting"),
        # A stamp after the read (impossible with one monotonic clock for every process): the window
        # opens at the read, so it could only shrink, never outgrow batch_timeout_s.
        pytest.param(200.0, 0.05, id="stamp-after-the-read-window-opens-at-the-read"),
    ],
)
def test_in_a_worker_process_the_window_opens_when_the_request_was_handed_over(
    loop: asyncio.AbstractEventLoop, handed_s: float, window_left_s: float
) -> None:
    # The worker begins collecting at 100.0 and has read the request at 100.003.
    clock = FakeClock()
    first = make_request(loop, handed_s=handed_s)
    source = ScriptedSource(clock, [(0.003, first)])
    batch = collect_batch(source, max_batch_size=4, batch_timeout_s=0.05, clock=clock)
    assert batch is not None and batch.requests == (first,)
    assert source.waits == [None, pytest.approx(window_left_s)]
    assert clock.now_s == pytest.approx(100.003 + window_left_s)


def test_a_crossing_longer_than_the_window_leaves_nothing_to_wait_for(loop: asyncio.AbstractEventLoop) -> None:
    clock = FakeClock()
    first, waiting = make_request(loop, handed_s=100.0), make_request(loop, handed_s=100.001)
    source = ScriptedSource(clock, [(0.06, first), (0.0, waiting), (0.01, make_request(loop))])
    batch = collect_batch(source, max_batch_size=4, batch_timeout_s=0.05, clock=clock)
    assert batch is not None and batch.requests == (first, waiting)  # what had come, and no more
    assert source.waits == [None, 0.0, 0.0]


def test_a_full_batch_goes_without_waiting(loop: asyncio.AbstractEventLoop) -> None:
    clock = FakeClock()
    items = [make_request(loop) for _ in range(3)]
    source = ScriptedSource(clock, [(0.0, item) for item in items])
    batch = collect_batch(source, max_batch_size=2, batch_timeout_s=10.0, clock=clock)
    assert batch is not None and batch.requests == tuple(items[:2])
    assert clock.now_s == 100.0


def test_zero_batch_timeout_takes_only_what_is_waiting(loop: asyncio.AbstractEventLoop) -> None:
    clock = FakeClock()
    items = [make_request(loop) for _ in range(3)]
    source = ScriptedSource(clock, [(0.0, items[0]), (0.0, items[1]), (0.5, items[2])])
    batch = collect_batch(source, max_batch_size=8, batch_timeout_s=0.0, clock=clock)
    assert batch is not None and batch.requests == tuple(items[:2])
    assert source.waits == [None, 0.0, 0.0]


def test_expired_and_cancelled_requests_never_enter_a_batch(loop: asyncio.AbstractEventLoop) -> None:
    clock = FakeClock()
    expired = make_request(loop, deadline_s=99.0)
    gone = make_request(loop)
    gone.cancellation.cancel(DropReason.DISCONNECTED)
    live = make_request(loop, deadline_s=200.0)
    source = ScriptedSource(clock, [(0.0, expired), (0.0, gone), (0.0, live)])
    batch = collect_batch(source, max_batch_size=4, batch_timeout_s=0.0, clock=clock)
    assert batch is not None
    assert batch.requests == (live,)
    assert batch.dropped == ((expired, DropReason.TIMED_OUT), (gone, DropReason.DISCONNECTED))


def test_drops_alone_are_reported_without_blocking(loop: asyncio.AbstractEventLoop) -> None:
    clock = FakeClock()
    gone = make_request(loop)
    gone.cancellation.cancel(DropReason.DISCONNECTED)
    source = ScriptedSource(clock, [(0.0, gone)])
    batch = collect_batch(source, max_batch_size=4, batch_timeout_s=1.0, clock=clock)
    assert batch is not None and batch.requests == () and len(batch.dropped) == 1


def test_a_closed_source_ends_collection(loop: asyncio.AbstractEventLoop) -> None:
    clock = FakeClock()
    first = make_request(loop)
    source = ScriptedSource(clock, [(0.0, first), (0.0, None), (0.0, None)])
    batch = collect_batch(source, max_batch_size=4, batch_timeout_s=1.0, clock=clock)
    assert batch is not None and batch.requests == (first,)
    assert collect_batch(source, max_batch_size=4, batch_timeout_s=1.0, clock=clock) is None


def test_with_nothing_coming_a_lone_request_goes_at_once(loop: asyncio.AbstractEventLoop) -> None:
    """The adaptive window: nothing queued and nothing being read, so waiting could not grow the batch."""
    clock = FakeClock()
    first = make_request(loop)
    source = ScriptedSource(clock, [(0.0, first)])
    batch = collect_batch(source, max_batch_size=4, batch_timeout_s=5.0, clock=clock, others_coming=lambda: False)
    assert batch is not None and batch.requests == (first,)
    assert source.waits == [None]  # no second wait at all
    assert clock.now_s == 100.0


def test_while_others_are_coming_the_window_still_fills_the_batch(loop: asyncio.AbstractEventLoop) -> None:
    clock = FakeClock()
    requests = [make_request(loop) for _ in range(3)]
    source = ScriptedSource(clock, [(0.0, requests[0]), (0.01, requests[1]), (0.01, requests[2])])
    coming = iter([True, True, False])  # asked after each request joined: the third was the last on its way
    batch = collect_batch(source, 4, batch_timeout_s=5.0, clock=clock, others_coming=lambda: next(coming))
    assert batch is not None and batch.requests == tuple(requests)
    assert len(source.waits) == 3  # the first, and one wait for each of the two that were coming
    assert clock.now_s == pytest.approx(100.02)


def test_batch_timeout_stays_the_bound_when_others_never_come(loop: asyncio.AbstractEventLoop) -> None:
    clock = FakeClock()
    first = make_request(loop)
    source = ScriptedSource(clock, [(0.0, first)])
    batch = collect_batch(source, 4, batch_timeout_s=0.05, clock=clock, others_coming=lambda: True)
    assert batch is not None and batch.requests == (first,)
    assert clock.now_s == pytest.approx(100.05)
