"""Test helpers: a pytest plugin (fixture `lit_server`) and a plain context manager (`serving`).

Registered as a pytest plugin through the `pytest11` entry point, so any project with litserve
installed can write::

    def test_square(lit_server):
        server = lit_server(SquareAPI())          # started on a free port, stopped after the test
        assert requests.post(server.url + "/predict", json={"input": 3}).json() == {"output": 9}

Other test runners use `with serving(SquareAPI()) as server: ...`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from litserve.api import LitAPI
from litserve.server import LitServer

__all__ = ["lit_server", "serving"]


@contextlib.contextmanager
def serving(lit_api: LitAPI | list[LitAPI], *, host: str = "127.0.0.1", **kwargs: Any) -> Iterator[LitServer]:
    """Start a LitServer on a free port of `host` for the `with` block and always stop it.

    Keyword arguments go to `LitServer`; `accelerator` defaults to "cpu" so tests are the same on
    every machine.
    """
    kwargs.setdefault("accelerator", "cpu")
    server = LitServer(lit_api, **kwargs)
    server.start(host=host, port=0)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def lit_server() -> Iterator[Callable[..., LitServer]]:
    """A factory: `lit_server(api, **LitServer kwargs)` starts a server on a free port for this test."""
    with contextlib.ExitStack() as stack:

        def start(lit_api: LitAPI | list[LitAPI], **kwargs: Any) -> LitServer:
            return stack.enter_context(serving(lit_api, **kwargs))

        yield start
