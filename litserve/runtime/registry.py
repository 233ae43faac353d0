"""Which LitServer of this process holds which port, and stopping them all at interpreter exit.

Starting a server on a port another LitServer of this process holds takes that one's place (a hot swap,
`runtime.swap`, or a stop and a fresh start), so re-running a notebook cell replaces the old server
instead of failing with "address in use".
"""

from __future__ import annotations

import atexit
import threading
from typing import Protocol

__all__ = ["Stoppable", "forget", "holder_of", "remember"]


class Stoppable(Protocol):
    def stop(self) -> None: ...


_lock = threading.Lock()
_by_port: dict[int, Stoppable] = {}
_atexit_registered = False


def _stop_all() -> None:
    with _lock:
        servers = list(_by_port.values())
    for server in servers:
        server.stop()


def remember(port: int, server: Stoppable) -> None:
    """Record `server` as the holder of `port`; the first call arranges the stop at interpreter exit."""
    global _atexit_registered
    with _lock:
        _by_port[port] = server
        if not _atexit_registered:
            # Python joins non-daemon threads before atexit handlers; ours are daemons, so this runs.
            atexit.register(_stop_all)
            _atexit_registered = True


def forget(port: int, server: Stoppable) -> None:
    """Drop the record, only if `server` still holds `port` (a newer server may have taken it)."""
    with _lock:
        if _by_port.get(port) is server:
            del _by_port[port]


def holder_of(port: int) -> Stoppable | None:
    """The LitServer of this process on `port`, if any (port 0 never collides)."""
    if port == 0:
        return None
    with _lock:
        return _by_port.get(port)
