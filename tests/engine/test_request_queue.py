from __future__ import annotations

import queue
import signal
import threading
import time
from typing import Any

import pytest

from litserve.engine.request_queue import RequestQueue
from litserve.exceptions import QueueClosedError, QueueFullError
from tests.helpers import wait_until


def test_full_queue_refuses_without_waiting() -> None:
    q: RequestQueue[int] = RequestQueue(max_size=2)
    q.put_nowait(1)
    q.put_nowait(2)
    with pytest.raises(QueueFullError):
        q.put_nowait(3)
    assert q.get() == 1
    q.put_nowait(3)
    assert q.qsize() == 2


def test_close_wakes_every_blocked_consumer_after_the_queued_items() -> None:
    q: RequestQueue[int] = RequestQueue()
    q.put_nowait(7)
    results: list[int | None] = []
    lock = threading.Lock()
    ready = threading.Barrier(4)

    def consume() -> None:
        ready.wait(10)
        item = q.get()
        with lock:
            results.append(item)

    consumers = [threading.Thread(target=consume, name=f"consumer-{i}") for i in range(3)]
    for thread in consumers:
        thread.start()
    ready.wait(10)
    q.close()
    for thread in consumers:
        thread.join(10)
        assert not thread.is_alive()
    assert sorted(results, key=lambda r: r is None) == [7, None, None]
    with pytest.raises(QueueClosedError):
        q.put_nowait(8)
    assert q.qsize() == 0


def test_get_with_timeout_raises_empty() -> None:
    q: RequestQueue[int] = RequestQueue()
    with pytest.raises(queue.Empty):
        q.get(timeout_s=0.001)
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_drain_returns_waiting_items_and_keeps_the_queue_closed() -> None:
    q: RequestQueue[int] = RequestQueue()
    q.put_nowait(1)
    q.put_nowait(2)
    q.close()
    assert q.drain_nowait() == [1, 2]
    assert q.get_nowait() is None
    assert q.get() is None


def test_bad_bound_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_queue_size"):
        RequestQueue(max_size=0)


def test_two_consumers_gathering_batches_with_timeouts_never_strand_an_item() -> None:
    """The pattern of two workers collecting batches: block for the first item, then wait a little
    for more. queue.SimpleQueue on CPython 3.11 can leave the loser of a race blocked past its
    timeout, holding the items it already took; every burst here must be fully taken, promptly."""
    q: RequestQueue[int] = RequestQueue()
    taken: list[int] = []
    progress = threading.Condition()

    def gather() -> None:
        while (first := q.get()) is not None:
            batch = [first]
            deadline_s = time.monotonic() + 0.002
            while len(batch) < 16:
                try:
                    item = q.get(max(0.0, deadline_s - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    break
                batch.append(item)
            sum(i * i for i in range(5000))  # "predict": holds the GIL a while, like real work
            with progress:
                taken.extend(batch)
                progress.notify_all()

    consumers = [threading.Thread(target=gather, name=f"gatherer-{i}") for i in range(2)]
    for thread in consumers:
        thread.start()
    try:
        sent = 0
        for _ in range(400):
            for _ in range(16):
                q.put_nowait(sent)
                sent += 1
                time.sleep(0.0001)  # requests arrive spread out, not all in one go
            with progress:
                all_taken = progress.wait_for(lambda n=sent: len(taken) == n, timeout=5)
                assert all_taken, f"{sent - len(taken)} items stranded"
    finally:
        q.close()
        for thread in consumers:
            thread.join(10)
    assert sorted(taken) == list(range(sent))


def test_a_put_wakes_the_consumer_that_went_to_sleep_last() -> None:
    """Its model is the warmest in cache; a consumer that slept longer stays asleep."""
    q: RequestQueue[str] = RequestQueue()
    got: dict[str, str | None] = {}
    done = {name: threading.Event() for name in ("early", "late")}

    def consume(name: str) -> None:
        got[name] = q.get(timeout_s=30)
        done[name].set()

    early = threading.Thread(target=consume, args=("early",), name="early")
    late = threading.Thread(target=consume, args=("late",), name="late")
    try:
        early.start()
        assert wait_until(lambda: q.sleeping() == 1)
        late.start()
        assert wait_until(lambda: q.sleeping() == 2)
        q.put_nowait("first")
        assert done["late"].wait(10) and got["late"] == "first"
        assert not done["early"].is_set() and q.sleeping() == 1
        q.put_nowait("second")
        assert done["early"].wait(10) and got["early"] == "second"
    finally:
        q.close()
        early.join(10)
        late.join(10)
    assert q.sleeping() == 0


def test_a_consumer_that_gives_up_waiting_leaves_no_trace() -> None:
    q: RequestQueue[int] = RequestQueue()
    with pytest.raises(queue.Empty):
        q.get(timeout_s=0.01)
    assert q.sleeping() == 0
    q.put_nowait(1)
    assert q.get(timeout_s=0.01) == 1


def test_a_timeout_longer_than_the_platform_allows_still_waits_for_the_request() -> None:
    q: RequestQueue[int] = RequestQueue()
    got: list[int | None] = []
    consumer = threading.Thread(target=lambda: got.append(q.get(timeout_s=1e10)), name="patient")
    consumer.start()
    try:
        assert wait_until(lambda: q.sleeping() == 1)
        q.put_nowait(5)
        consumer.join(10)
        assert got == [5]
    finally:
        q.close()
        consumer.join(10)


class Interrupted(Exception):
    pass


def test_a_consumer_interrupted_while_waiting_leaves_no_sleeper_behind() -> None:
    """An exception out of the wait (here from a signal handler) must not leave a stale sleeper that
    would swallow the next request's wake-up while a real consumer sleeps on."""

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted

    q: RequestQueue[int] = RequestQueue()
    main = threading.get_ident()
    previous = signal.signal(signal.SIGUSR1, interrupt)
    poker = threading.Thread(
        target=lambda: wait_until(lambda: q.sleeping() == 1) and signal.pthread_kill(main, signal.SIGUSR1),
        name="poker",
    )
    try:
        poker.start()
        with pytest.raises(Interrupted):
            q.get(timeout_s=30)
        assert q.sleeping() == 0
        got: list[int | None] = []
        consumer = threading.Thread(target=lambda: got.append(q.get(timeout_s=30)), name="real-consumer")
        consumer.start()
        assert wait_until(lambda: q.sleeping() == 1)
        q.put_nowait(9)
        consumer.join(10)
        assert got == [9]
    finally:
        signal.signal(signal.SIGUSR1, previous)
        poker.join(10)
        q.close()
