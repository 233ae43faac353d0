"""Shared test helpers (real sockets on 127.0.0.1 only)."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any


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
