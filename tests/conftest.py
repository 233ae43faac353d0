from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from litserve import LitServer
from tests.app_client import AppClient
from tests.sync import remove_all

# litserve.testing not through its entry point (see addopts in pyproject.toml); tests.browser: a headless Chromium.
pytest_plugins = ["litserve.testing", "tests.browser"]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail any test that leaves a litserve-* thread running."""
    before = set(threading.enumerate())
    yield
    leaked = [t.name for t in threading.enumerate() if t not in before and t.name.startswith("litserve-")]
    assert not leaked, f"threads outlived the test: {leaked}"


@pytest.fixture(scope="session", autouse=True)
def remove_sync_files() -> Iterator[None]:
    yield
    remove_all()


@pytest.fixture(params=["thread", "process"])
def worker_mode(request: pytest.FixtureRequest) -> str:
    """Run a test once with worker threads and once with worker processes: the behaviour must match."""
    return str(request.param)


@pytest.fixture
def start_server(lit_server: Callable[..., LitServer], worker_mode: str) -> Callable[..., LitServer]:
    """`lit_server` in the worker mode of this test run."""

    def start(lit_api: Any, **kwargs: Any) -> LitServer:
        kwargs.setdefault("worker_mode", worker_mode)
        return lit_server(lit_api, **kwargs)

    return start


@pytest.fixture
def start_app(worker_mode: str) -> Iterator[Callable[..., AppClient]]:
    """Serve a LitAPI in-process (no socket; Quart's test client) in the worker mode of this test run."""
    with contextlib.ExitStack() as stack:  # every client is closed, even if closing one fails

        def start(lit_api: Any, **kwargs: Any) -> AppClient:
            kwargs.setdefault("worker_mode", worker_mode)
            client = AppClient(lit_api, **kwargs)
            stack.callback(client.close)
            return client

        yield start
