"""LitServe's test helpers (`litserve.utils`): a server driven by an in-process ASGI client, and a package probe.

LitServe users' tests run unchanged::

    from fastapi.testclient import TestClient
    from litserve.utils import wrap_litserve_start

    with wrap_litserve_start(server) as server, TestClient(server.app) as client:
        assert client.post("/predict", json={"input": 4.0}).json() == {"output": 16.0}

`httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app))` works the same way, inside any event
loop: each request is answered on the loop that calls the app.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from litserve.server import LitServer

__all__ = ["is_package_installed", "wrap_litserve_start"]


@contextlib.contextmanager
def wrap_litserve_start(server: LitServer, worker_monitor: bool = False) -> Iterator[LitServer]:
    """Start `server`'s workers without binding a socket, yield it, and stop it on exit.

    Inside the block `server.app` is an ASGI app that Starlette's `TestClient` or httpx's
    `ASGITransport` drive in-process, on their own event loop. The server is otherwise fully running
    (`server.status`, `server.predict`); it has no URL. On exit it is stopped (workers and threads),
    even when the block raised.

    Args:
        server: a LitServer that is not running yet.
        worker_monitor: accepted for LitServe compatibility; worker processes are always supervised here.

    Yields:
        The server itself.

    Example:
        >>> with wrap_litserve_start(LitServer(SimpleLitAPI())) as server, TestClient(server.app) as client:
        ...     client.post("/predict", json={"input": 4.0}).json()
        {'output': 16.0}

    Stability: beta (LitServe's name and usage).
    """
    del worker_monitor
    try:
        yield server._start_in_process()
    finally:
        server.stop()


def is_package_installed(package_name: str) -> bool:
    """True when `package_name` can be imported here (it is found, not imported).

    Stability: beta (LitServe's name).
    """
    return importlib.util.find_spec(package_name) is not None
