"""Shared test helpers (real sockets on 127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import requests


def free_port() -> int:
    """A port that was free a moment ago (for tests that must know the port before start() returns)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class Shared:
    """Wraps an object that every worker's LitAPI copy must share with the test (events, barriers)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __deepcopy__(self, memo: dict[int, Any]) -> Shared:
        return self


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """Wait, bounded, for a condition the server reaches on its own (e.g. a counter catching up)."""
    deadline_s = time.monotonic() + timeout_s
    pause = threading.Event()
    while not predicate():
        if time.monotonic() >= deadline_s:
            return False
        pause.wait(0.005)
    return True


def raw_request(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> socket.socket:
    """Send a POST over a raw socket and return the open socket (the caller reads or hangs up)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {"Content-Type": "application/json"}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


def post(target: Any, payload: Any = None, path: str = "/predict", **kwargs: Any) -> requests.Response:
    """POST `payload` as JSON to a running server's `path` (or to `target` itself when it is a URL)."""
    url = target if isinstance(target, str) else target.url + path
    if payload is not None:
        kwargs["json"] = payload
    kwargs.setdefault("timeout", 30)
    return requests.post(url, **kwargs)


@contextlib.contextmanager
def gathering(server: Any, path: str = "/predict") -> Any:
    """Hold an endpoint's batch window open for the requests a test sends inside the block.

    The adaptive window (`litserve.engine.batcher`) closes a batch as soon as nothing more is queued
    or being read; clients in threads reach the server one after another, so a test that wants them in
    one batch says "more is coming" for the block, as an admitted request still being read would. The
    batch still closes at `max_batch_size` or after `batch_timeout`. The count is changed on the HTTP
    loop, its only writer.
    """
    running = server._life.running
    endpoint = next(e for e in running.endpoints if e.path == path)
    loop = running.http._loop

    async def change(by: int) -> None:
        endpoint.queue.coming += by

    asyncio.run_coroutine_threadsafe(change(1), loop).result(10)
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(change(-1), loop).result(10)
