"""Which LitServer of this process holds which port, and stopping them all at interpreter exit.

Starting a server on a port another LitServer of this process holds stops that one first, so
re-running a notebook cell replaces the old server instead of failing with "address in use".
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Protocol

__all__ = ["Stoppable", "forget", "remember", "stop_holder_of"]

logger = logging.getLogger("litserve")


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


def stop_holder_of(port: int, newcomer: Stoppable) -> None:
    """Stop the other LitServer of this process on `port`, if any (port 0 never collides)."""
    if port == 0:
        return
    with _lock:
        previous = _by_port.get(port)
    if previous is not None and previous is not newcomer:
        logger.info("stopping the LitServer already on port %d to start the new one", port)
        previous.stop()
