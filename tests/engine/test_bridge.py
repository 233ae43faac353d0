"""The one doorway into the HTTP loop: at once on the loop's own thread, a hop from any other, nothing once closed."""

from __future__ import annotations

import asyncio
import threading

from litserve.engine.bridge import LoopHandle, LoopReply, StreamReply
from litserve.engine.messages import STREAM_END, Outcome
from litserve.engine.stream_items import StreamItems
from litserve.engine.stream_window import StreamWindow

ANSWER = Outcome(200, b"{}")


def test_a_call_on_the_loops_own_thread_runs_at_once_and_from_another_thread_on_the_loop() -> None:
    loop = asyncio.new_event_loop()
    try:
        ran: list[str] = []
        here = LoopHandle(loop, threading.get_ident())
        assert here.call(ran.append, "at once") and ran == ["at once"]
        elsewhere = LoopHandle(loop, -1)  # as seen from a thread that is not the loop's
        assert elsewhere.call(ran.append, "on the loop") and ran == ["at once"]
        loop.run_until_complete(asyncio.sleep(0))
        assert ran == ["at once", "on the loop"]
    finally:
        loop.close()


def test_a_closed_loop_is_never_touched_even_from_a_thread_that_reuses_its_id() -> None:
    loop = asyncio.new_event_loop()
    future = loop.create_future()
    future.add_done_callback(lambda _: None)  # as a waiting route's task does: setting it schedules on the loop
    reply = LoopReply(loop, future)  # made on this thread: it counts as the loop's
    loop.close()
    ran: list[str] = []
    assert not LoopHandle(loop, threading.get_ident()).call(ran.append, "x")
    assert ran == []
    reply.deliver(ANSWER)  # the request is gone with its loop: a late answer must not raise in the worker
    reply.deliver_batch([(reply, ANSWER)])


def test_stream_items_from_a_worker_thread_cross_to_the_loop_in_runs_and_in_order() -> None:
    loop = asyncio.new_event_loop()
    try:
        queue = StreamItems()
        reply = StreamReply(loop, queue, StreamWindow())  # made on this thread, which runs the loop below

        def worker(first: int, count: int) -> None:
            for i in range(first, first + count):
                reply.push(f"{i}".encode())

        thread = threading.Thread(target=worker, args=(0, 100))
        thread.start()
        thread.join(10)  # the loop is not running: every push waits for one drain
        assert loop._ready and len(loop._ready) == 1  # type: ignore[attr-defined]  # one wake-up for the run
        loop.run_until_complete(asyncio.sleep(0))
        assert [queue.get_nowait() for _ in range(100)] == [f"{i}".encode() for i in range(100)]
        thread = threading.Thread(target=worker, args=(100, 1))  # after a drain, the next push asks again
        thread.start()
        thread.join(10)
        reply.push(
            STREAM_END
        )  # on the loop's own thread: straight into the queue (as before: not behind items still crossing)
        loop.run_until_complete(asyncio.sleep(0))
        assert {queue.get_nowait(), queue.get_nowait()} == {b"100", STREAM_END}
        assert reply.is_finished
    finally:
        loop.close()


def test_a_stream_window_holds_its_worker_when_full_and_a_release_lets_it_on() -> None:
    window = StreamWindow(2)
    window.acquire()
    window.acquire()  # both slots are taken: the next chunk must wait for the client
    took_third = threading.Event()

    def worker() -> None:
        window.acquire()
        took_third.set()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        deadline_s = 10.0
        while window._sleeper is None and deadline_s > 0:  # the worker is asleep on its own lock
            took_third.wait(0.01)
            deadline_s -= 0.01
        assert window._sleeper is not None and not took_third.is_set()
        window.release()  # the response body sent a chunk
        assert took_third.wait(10)
    finally:
        window.release(2)
        thread.join(10)
    assert not thread.is_alive()


def test_a_stream_windows_releases_go_to_its_listener_in_process_mode() -> None:
    window = StreamWindow(1)
    given: list[int] = []
    window.listener = given.append
    window.release(3)
    assert given == [3]
    window.acquire()  # the local slots are untouched by the listener's releases
    assert window._sleeper is None


def test_a_loops_inbox_runs_calls_from_other_threads_in_order_with_one_wake_up_per_run() -> None:
    from litserve.engine.bridge import LoopInbox

    loop = asyncio.new_event_loop()
    try:
        inbox = LoopInbox.of(loop)
        assert LoopInbox.of(loop) is inbox  # one per loop
        ran: list[int] = []

        def fail() -> None:
            raise ValueError("a broken call")

        def hand_over() -> None:  # from a worker thread, while the loop is not draining
            inbox.call(ran.append, 1)
            inbox.call(fail)
            inbox.call(ran.append, 2)

        thread = threading.Thread(target=hand_over)
        thread.start()
        thread.join(10)
        assert len(loop._ready) == 1  # type: ignore[attr-defined]  # three calls, one drain scheduled
        loop.run_until_complete(asyncio.sleep(0))
        assert ran == [1, 2]  # in order, and the broken call stranded nothing behind it
    finally:
        loop.close()
    inbox.call(ran.append, 3)  # the loop is closed: nothing runs, nothing raises
    assert ran == [1, 2]


def test_a_loop_closed_with_a_drain_due_keeps_no_answers() -> None:
    from litserve.engine.bridge import LoopInbox

    loop = asyncio.new_event_loop()
    inbox = LoopInbox.of(loop)
    ran: list[int] = []
    inbox.call(ran.append, 1)  # a drain is due ...
    loop.close()  # ... and never runs: the server stopped
    inbox.call(ran.append, 2)
    assert ran == [] and not inbox._calls  # late answers are dropped, not kept with the loop
