"""A worker process's request queue, fed from the server's socket by whichever of its threads is idle.

In thread mode a worker sleeps on its endpoint's queue until the HTTP loop puts a request there. A
worker process gets its requests over a socket. If one thread read that socket and queued what came,
every request would wake two threads in turn, the reader and then a worker: about 60 µs more per
request than thread mode on a 2-core machine. So every thread of the process waits on the socket
itself, and the kernel picks which one to wake:

- Each waiting thread has its own epoll instance watching the socket with `EPOLLEXCLUSIVE`. Linux
  then wakes one waiting instance per arrival, the first registered, and skips instances nobody is
  waiting on. The workers' instances are registered first and the main thread's last, so an idle
  worker reads the request it then runs, the same worker at low load (its model warm in cache),
  and the main thread wakes only while every worker is busy: it reads cancellations, health checks
  and "stop" while models run, and queues requests for the next free worker.
- Whoever wakes reads whatever has come, under one read lock, and hands on each request as it is
  read, so requests keep their order and a "stop" behind them finds them handed out. A worker keeps
  the first request for itself, unless another worker is collecting a batch: as in `RequestQueue`,
  the collector gets the next request first. Each other request goes straight to one sleeping worker
  (woken through its own wake-up socket, watched by the same epoll): a collector if one sleeps, else
  the worker that went to sleep last; to the queue when none sleeps.

EPOLLEXCLUSIVE needs Linux 4.5; a wait that times out reads once more without waiting before it
gives up, so no request is left unread if a kernel's exclusive wake-up went to that waiter. Without
epoll (not Linux) the workers wait on their wake-up sockets only and the main thread reads
everything: correct, with the extra hand-off.
"""

from __future__ import annotations

import collections
import queue
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, final

from litserve.engine.messages import InferenceRequest
from litserve.process.wire import Link, LinkClosedError

__all__ = ["ChildQueue"]

_HAS_EPOLL = hasattr(select, "epoll") and hasattr(select, "EPOLLEXCLUSIVE")
_LONGEST_WAIT_S = 1_000_000.0  # epoll refuses timeouts past ~24 days; a longer wait loops again
_NOTHING_YET: Any = object()  # nothing handed, queued or closed: the caller reads or waits


@final
class _Waiter:
    """Where one thread sleeps: its wake-up socket and, when it may read, the link's socket."""

    def __init__(self, link_fd: int | None) -> None:
        self._wake, self._woken = socket.socketpair()
        self._wake.setblocking(False)
        self._woken.setblocking(False)
        self._link_fd = link_fd
        self._fds = [self._woken.fileno()] if link_fd is None else [link_fd, self._woken.fileno()]
        self._epoll: select.epoll | None = None
        self.collecting = False  # waiting with a timeout: it holds the start of a batch
        self.handed: collections.deque[InferenceRequest] = collections.deque()  # given to it as it was woken
        if _HAS_EPOLL:
            self._epoll = select.epoll()
            if link_fd is not None:
                self._epoll.register(link_fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            self._epoll.register(self._woken.fileno(), select.EPOLLIN)

    def wait(self, timeout_s: float | None) -> bool:
        """Sleep until woken, the link is readable, or `timeout_s` passed; True if the link is readable."""
        if self._epoll is None:
            readable, _, _ = select.select(self._fds, [], [], timeout_s)
            return self._link_fd in readable
        if timeout_s is None:
            events = self._epoll.poll()
        else:
            # epoll's timeout has whole milliseconds, rounded up (0.067 s would be 68 ms): a batch's
            # collection window must not stretch, so epoll gets the whole milliseconds less half of one,
            # and the rest is waited with select(), which is not exclusive.
            deadline_s = time.monotonic() + timeout_s
            whole_ms = int(timeout_s * 1000)
            events = self._epoll.poll((whole_ms - 0.5) / 1000) if whole_ms else []
            remaining_s = deadline_s - time.monotonic()
            if not events and remaining_s > 0:
                readable, _, _ = select.select(self._fds, [], [], remaining_s)
                return self._link_fd in readable
        return any(fd == self._link_fd for fd, _ in events)

    def wake(self) -> None:
        try:
            self._wake.send(b"\0")
        except BlockingIOError:  # already woken many times over
            pass

    def settle(self) -> None:
        """Forget the wake-ups it got (the caller looks at the queue next)."""
        try:
            while self._woken.recv(4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
        self._wake.close()
        self._woken.close()


@final
class ChildQueue:
    """The worker process's queue: `get`/`get_nowait` for its `consumers` workers, `serve` for its main thread.

    `handle` turns one message from the server into a request to queue, or deals with it at once (a
    cancellation, a health check, "stop") and returns None. It runs on whichever thread read the
    message, under the read lock, so messages are handled one at a time and in order.
    """

    def __init__(self, link: Link, handle: Callable[[Any], InferenceRequest | None], consumers: int) -> None:
        self._link = link
        self._handle = handle
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._items: collections.deque[InferenceRequest] = collections.deque()
        self._sleeping: list[_Waiter] = []  # the latest last
        self._by_thread: dict[int, _Waiter] = {}
        # Registered in this order, which is the order the kernel offers them a request: workers first.
        link_fd = link.fileno() if _HAS_EPOLL else None
        self._unclaimed = [_Waiter(link_fd) for _ in range(consumers)]
        self._unclaimed.reverse()  # the first registered goes to the first worker to ask
        self._main = _Waiter(link.fileno())
        self._is_closed = False
        self._link_closed = False

    def has_unread(self) -> bool:
        """A request was read and waits, or messages from the server wait to be read."""
        return bool(self._items) or self._link.has_pending()

    def sleeping(self) -> int:
        """How many workers wait in get() for a request."""
        return len(self._sleeping)

    # --- the workers' side ----------------------------------------------------------------------------

    def get(self, timeout_s: float | None = None) -> InferenceRequest | None:
        """The next request, waiting up to `timeout_s` (None: no limit); None once closed and empty.

        Raises `queue.Empty` when `timeout_s` passes first.
        """
        me = self._waiter()
        self._catch_up()
        deadline_s = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._lock:
                taken = self._take(me)
                if taken is not _NOTHING_YET:
                    return taken
                remaining_s: float | None = None
                if deadline_s is not None:
                    remaining_s = deadline_s - time.monotonic()
                    if remaining_s <= 0:
                        break
                me.collecting = deadline_s is not None
                self._sleeping.append(me)
            try:
                readable = me.wait(None if remaining_s is None else min(remaining_s, _LONGEST_WAIT_S))
            finally:
                with self._lock:
                    woken = me not in self._sleeping  # a request handed to it, or close, took it off the list
                    if not woken:
                        self._sleeping.remove(me)
                if woken:
                    me.settle()
            if readable:  # the kernel woke this thread alone for what came: it must read it
                with self._lock:
                    keep_one = not me.handed
                request = self._read(keep_one)
                if request is not None:
                    return request
        return self.get_nowait()  # before giving up, what may have come unannounced

    def get_nowait(self) -> InferenceRequest | None:
        """A request that has already come; raises `queue.Empty` if none, None once closed and empty."""
        me = self._waiter()
        self._catch_up()
        with self._lock:
            taken = self._take(me)
        if taken is not _NOTHING_YET:
            return taken
        request = self._read(keep_one=True)  # what sits unread in the socket has come too
        if request is not None:
            return request
        raise queue.Empty

    def _catch_up(self) -> None:
        """Before a worker takes a request read earlier, handle what came since: a `Cancel` for it (its
        client reset while every worker was busy) must drop it, not lose the race to the worker."""
        if self._items:  # through the read lock: a read another thread is handling finishes first
            self._read(keep_one=False)

    def _take(self, me: _Waiter) -> InferenceRequest | None:
        # With the lock held: what was handed to this worker, else the queue's head; None once closed.
        if me.handed:
            return me.handed.popleft()
        if self._items:
            return self._items.popleft()
        return None if self._is_closed else _NOTHING_YET

    def _waiter(self) -> _Waiter:
        ident = threading.get_ident()
        waiter = self._by_thread.get(ident)
        if waiter is None:
            with self._lock:
                # More consumers than announced (not in litserve: one per worker): the extra ones are
                # woken with handed requests only, and their late sockets must stay below select()'s 1024.
                waiter = self._unclaimed.pop() if self._unclaimed else _Waiter(None)
                self._by_thread[ident] = waiter
        return waiter

    # --- the main thread's side -----------------------------------------------------------------------

    def serve(self) -> None:
        """Read while every worker is busy, until the queue closes; LinkClosedError if the server went away."""
        self._read(keep_one=False)  # anything that came with the first message
        while True:
            with self._lock:
                if self._is_closed:
                    break
            if self._main.wait(None):
                self._read(keep_one=False)
            else:
                self._main.settle()
        if self._link_closed:
            raise LinkClosedError("the server process is gone")

    def close(self) -> None:
        """Hand out no more than what is queued; wake every worker and the main thread."""
        self._close(link_closed=False)

    # --- shared -----------------------------------------------------------------------------------------

    def _read(self, keep_one: bool) -> InferenceRequest | None:
        """Read what has come and hand on each request as it is handled; with `keep_one` the caller
        keeps the first one instead (not while another worker collects a batch)."""
        mine: InferenceRequest | None = None
        with self._read_lock:
            try:
                for message in self._link.receive_nowait():
                    request = self._handle(message)  # may answer at once (health), so may find the link closed
                    if request is None:
                        continue
                    with self._lock:
                        if keep_one and mine is None and not any(w.collecting for w in self._sleeping):
                            mine = request
                        else:
                            self._give(request)
            except LinkClosedError:
                self._close(link_closed=True)
        return mine

    def _give(self, request: InferenceRequest) -> None:
        # With the lock held: straight to a sleeping worker, one collecting a batch first, else the one
        # that went to sleep last; to the queue when none sleeps.
        sleeping = self._sleeping
        for at in range(len(sleeping) - 1, -1, -1):
            if sleeping[at].collecting:
                break
        else:
            at = len(sleeping) - 1
        if at < 0:
            self._items.append(request)
            return
        waiter = sleeping.pop(at)
        waiter.handed.append(request)
        waiter.wake()

    def _close(self, link_closed: bool) -> None:
        with self._lock:
            self._is_closed = True
            self._link_closed = self._link_closed or link_closed
            while self._sleeping:
                self._sleeping.pop().wake()
        self._main.wake()
