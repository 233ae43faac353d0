"""A worker process's queue: an idle worker reads the socket itself; the main thread reads while all work.

Real sockets and threads, with the server's side played by the test: it writes frames as
`process.channel` does, and `handle` records which thread read each message.
"""

from __future__ import annotations

import platform
import queue
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from litserve.process import child_queue
from litserve.process.child_queue import ChildQueue
from litserve.process.wire import Link, LinkClosedError, encode, send_all
from tests.helpers import wait_until

WAIT_S = 10.0


class Process:
    """The worker-process side: a ChildQueue over one end of a socket pair, its main thread serving it."""

    def __init__(self, consumers: int = 2, serve: bool = True) -> None:
        self.server_end, self.child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.read_by: dict[Any, str] = {}  # message -> the name of the thread that handled it
        self.link = Link(self.child_end)
        self.queue = ChildQueue(self.link, self._handle, consumers)
        self.serve_error: BaseException | None = None
        self.main = threading.Thread(target=self._serve, name="litserve-test-main")
        if serve:
            self.main.start()

    def _handle(self, message: Any) -> Any:
        self.read_by[message] = threading.current_thread().name
        if message[0] == "stop":
            self.queue.close()
        return message if message[0] == "request" else None

    def _serve(self) -> None:
        try:
            self.queue.serve()
        except BaseException as exc:
            self.serve_error = exc

    def send(self, *messages: Any) -> None:
        """All in one write, as the server's loop does when several are due at once."""
        send_all(self.server_end, [piece for message in messages for piece in encode(message)])

    def read_by_thread(self, message: Any) -> str:
        assert wait_until(lambda: message in self.read_by, timeout_s=WAIT_S)
        return self.read_by[message]

    def end(self) -> None:
        self.queue.close()
        if self.main.ident is not None:
            self.main.join(WAIT_S)
            assert not self.main.is_alive()
        # A worker process never frees these (it ends with os._exit); the test frees them itself.
        for waiter in (*self.queue._by_thread.values(), *self.queue._unclaimed, self.queue._main):
            waiter.close()
        self.child_end.close()
        self.server_end.close()


class Worker:
    """A worker thread as `engine.worker` drives the queue: get, leave, run (here: wait until let go)."""

    def __init__(self, process: Process, name: str) -> None:
        self.queue = process.queue
        self.taken: queue.Queue[Any] = queue.Queue()
        self.let_go: queue.Queue[bool] = queue.Queue()
        self.thread = threading.Thread(target=self._main, name=name)
        self.thread.start()
        assert wait_until(lambda: self.thread.ident is not None, timeout_s=WAIT_S)
        self.ident = self.thread.ident

    def _main(self) -> None:
        while True:
            item = self.queue.get()
            self.taken.put(item)
            if item is None:
                return
            self.let_go.get(timeout=WAIT_S)  # "running hooks"

    def take(self) -> Any:
        return self.taken.get(timeout=WAIT_S)

    def finish(self) -> None:
        self.let_go.put(True)

    def join(self) -> None:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive()


@pytest.fixture(params=[2])
def process(request: pytest.FixtureRequest) -> Iterator[Process]:
    started = Process(consumers=request.param)
    yield started
    started.end()


def start_workers(process: Process, count: int) -> list[Worker]:
    workers = [Worker(process, f"litserve-test-worker-{i}") for i in range(count)]
    all_idle(process, *workers)
    return workers


# The system calls a thread sleeping in `select.epoll.poll` is in, by the kernel's table for this machine
# (glibc's epoll_wait is epoll_pwait where the generic table has no epoll_wait). Elsewhere nothing can
# tell a thread about to sleep from one asleep, so the tests that need to know skip.
_EPOLL_WAIT_CALLS = {
    "x86_64": {"232", "281", "441"},  # epoll_wait, epoll_pwait, epoll_pwait2
    **dict.fromkeys(("aarch64", "arm64", "riscv64", "loongarch64"), {"22", "441"}),  # epoll_pwait, epoll_pwait2
}.get(platform.machine())


def all_idle(process: Process, *workers: Worker | threading.Thread) -> None:
    """Each of them sleeps in get(), inside epoll_wait (so a request that comes now can wake it)."""
    if _EPOLL_WAIT_CALLS is None or not sys.platform.startswith("linux"):
        pytest.skip(f"cannot tell a thread asleep in epoll_wait on {sys.platform}/{platform.machine()}")
    threads = [w.thread if isinstance(w, Worker) else w for w in workers]
    assert wait_until(
        lambda: process.queue.sleeping() == len(threads) and all(in_epoll_wait(t) for t in threads),
        timeout_s=WAIT_S,
    )


def in_epoll_wait(thread: threading.Thread) -> bool:
    """Linux: the thread's kernel wait channel, or its system call (epoll_wait, epoll_pwait[2]) on this machine."""
    assert _EPOLL_WAIT_CALLS is not None
    task = f"/proc/self/task/{thread.native_id}"
    try:
        with open(f"{task}/wchan") as wchan, open(f"{task}/syscall") as syscall:
            return "epoll" in wchan.read() or syscall.read().split()[0] in _EPOLL_WAIT_CALLS
    except OSError:
        return False


def stop(process: Process, workers: list[Worker]) -> None:
    process.queue.close()
    for worker in workers:
        worker.finish()
        worker.join()


def request(n: int) -> tuple[str, int]:
    return ("request", n)


def test_an_idle_worker_reads_the_request_it_runs_itself(process: Process) -> None:
    [worker] = start_workers(process, 1)
    process.send(request(1))
    assert worker.take() == request(1)
    assert process.read_by_thread(request(1)) == worker.thread.name
    stop(process, [worker])


def test_while_every_worker_runs_the_main_thread_reads_and_a_worker_that_goes_idle_reads_again(
    process: Process,
) -> None:
    [worker] = start_workers(process, 1)
    process.send(request(1))
    assert worker.take() == request(1)
    process.send(("cancel", 1))
    assert process.read_by_thread(("cancel", 1)) == "litserve-test-main"
    worker.finish()
    all_idle(process, worker)
    process.send(request(2))
    assert worker.take() == request(2)
    assert process.read_by_thread(request(2)) == worker.thread.name
    stop(process, [worker])


def test_a_request_that_comes_while_every_worker_runs_waits_for_the_first_to_finish(process: Process) -> None:
    [worker] = start_workers(process, 1)
    process.send(request(1))
    assert worker.take() == request(1)
    process.send(request(2))
    assert process.read_by_thread(request(2)) == "litserve-test-main"
    worker.finish()
    assert worker.take() == request(2)
    stop(process, [worker])


def test_at_low_load_the_same_worker_serves_every_request(process: Process) -> None:
    workers = start_workers(process, 2)
    served_by = []
    for n in range(8):
        process.send(request(n))
        assert wait_until(lambda: any(not w.taken.empty() for w in workers), timeout_s=WAIT_S)
        server = next(w for w in workers if not w.taken.empty())
        assert server.take() == request(n)
        assert process.read_by[request(n)] == server.thread.name  # it read the request it runs
        served_by.append(server.thread.name)
        server.finish()
        all_idle(process, *workers)
    assert len(set(served_by)) == 1, served_by
    stop(process, workers)


def test_requests_that_come_together_go_one_to_each_idle_worker(process: Process) -> None:
    workers = start_workers(process, 2)
    process.send(request(1), request(2))
    taken = sorted(w.take()[1] for w in workers)
    assert taken == [1, 2]
    stop(process, workers)


@pytest.mark.parametrize("process", [1], indirect=True)
def test_a_worker_collecting_a_batch_reads_the_next_request_and_its_wait_ends_on_time(process: Process) -> None:
    results: queue.Queue[Any] = queue.Queue()

    def collect() -> None:
        q = process.queue
        results.put(q.get())
        results.put(q.get(WAIT_S))
        started = time.monotonic()
        try:
            q.get(0.0125)  # whole milliseconds and a fraction: the wait must not end early
        except queue.Empty:
            results.put(("empty after", time.monotonic() - started))

    collector = threading.Thread(target=collect, name="litserve-test-collector")
    collector.start()
    all_idle(process, collector)
    process.send(request(1))
    assert results.get(timeout=WAIT_S) == request(1)
    all_idle(process, collector)
    process.send(request(2))
    assert results.get(timeout=WAIT_S) == request(2)
    assert process.read_by[request(1)] == process.read_by[request(2)] == "litserve-test-collector"
    label, waited_s = results.get(timeout=WAIT_S)
    assert label == "empty after" and waited_s >= 0.0125
    collector.join(WAIT_S)


def test_an_idle_worker_leaves_the_next_request_to_a_worker_collecting_a_batch(process: Process) -> None:
    idle = Worker(process, "litserve-test-worker-0")  # registered first: the kernel wakes it first
    all_idle(process, idle)
    process.send(request(0))
    assert idle.take() == request(0)  # busy now
    results: queue.Queue[Any] = queue.Queue()

    def collect() -> None:
        results.put(process.queue.get())
        results.put(process.queue.get(WAIT_S))

    collector = threading.Thread(target=collect, name="litserve-test-collector")
    collector.start()
    all_idle(process, collector)
    process.send(request(1))
    assert results.get(timeout=WAIT_S) == request(1)
    idle.finish()
    all_idle(process, idle, collector)  # both wait: the idle one first in the kernel's order
    process.send(request(2))
    assert results.get(timeout=WAIT_S) == request(2)  # it joins the batch being collected
    assert process.read_by[request(2)] == idle.thread.name and idle.taken.empty()
    collector.join(WAIT_S)
    stop(process, [idle])


def test_requests_read_with_stop_are_still_handed_out_in_order(process: Process) -> None:
    [worker] = start_workers(process, 1)
    process.send(request(0))
    assert worker.take() == request(0)
    process.send(request(1), request(2), ("stop", 1.0))  # as the server writes its last requests and stop
    assert process.read_by_thread(("stop", 1.0)) == "litserve-test-main"
    process.main.join(WAIT_S)
    worker.finish()
    assert worker.take() == request(1)
    worker.finish()
    assert worker.take() == request(2)
    worker.finish()
    assert worker.take() is None
    worker.join()


def test_get_nowait_takes_what_sits_unread_in_the_socket() -> None:
    process = Process(consumers=1, serve=False)  # nobody waits on the socket: what comes stays there
    try:
        process.send(request(1), request(2))
        assert wait_until(lambda: _unread_bytes(process) > 0, timeout_s=WAIT_S)
        assert process.queue.get_nowait() == request(1)
        assert process.queue.get_nowait() == request(2)  # read with the first, then queued
        with pytest.raises(queue.Empty):
            process.queue.get_nowait()
    finally:
        process.end()


def _unread_bytes(process: Process) -> int:
    import fcntl
    import struct
    import termios

    link_socket = process.link._sock  # the child's end, as the kernel sees it
    return int(struct.unpack("i", fcntl.ioctl(link_socket.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0])


def test_stop_read_by_a_worker_ends_the_main_threads_serve_and_every_get(process: Process) -> None:
    workers = start_workers(process, 2)
    process.send(("stop", 1.0))
    assert [w.take() for w in workers] == [None, None]
    process.main.join(WAIT_S)
    assert not process.main.is_alive() and process.serve_error is None
    assert process.read_by[("stop", 1.0)] in {w.thread.name for w in workers}
    for worker in workers:
        worker.join()


@pytest.mark.parametrize("reader", ["worker", "main thread"])
def test_the_server_going_away_ends_serve_with_link_closed_whoever_reads(process: Process, reader: str) -> None:
    [worker] = start_workers(process, 1)
    if reader == "main thread":
        process.send(request(1))
        assert worker.take() == request(1)  # busy: the main thread alone waits on the socket
    process.server_end.close()
    process.main.join(WAIT_S)
    assert isinstance(process.serve_error, LinkClosedError)
    worker.finish()
    assert worker.take() is None
    worker.join()


def test_a_worker_whose_wait_timed_out_leaves_the_reading_to_the_main_thread(process: Process) -> None:
    with pytest.raises(queue.Empty):
        process.queue.get(0.01)
    assert process.queue.sleeping() == 0  # off the list: nothing can be handed to a wait that ended
    process.send(("cancel", 9))
    assert process.read_by_thread(("cancel", 9)) == "litserve-test-main"


def test_without_epoll_the_main_thread_reads_everything_and_wakes_the_latest_idle_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(child_queue, "_HAS_EPOLL", False)  # as on a system without epoll
    process = Process(consumers=2)
    try:
        first = Worker(process, "litserve-test-worker-0")
        assert wait_until(lambda: process.queue.sleeping() == 1, timeout_s=WAIT_S)
        latest = Worker(process, "litserve-test-worker-1")
        assert wait_until(lambda: process.queue.sleeping() == 2, timeout_s=WAIT_S)
        workers = [first, latest]
        process.send(request(1))
        assert latest.take() == request(1)
        assert process.read_by[request(1)] == "litserve-test-main"
        stop(process, workers)
    finally:
        process.end()
