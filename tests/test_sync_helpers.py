"""The cross-process synchronisation helpers the tests themselves rely on."""

from __future__ import annotations

from collections.abc import Callable

from litserve import LitServer
from tests.sync import CrossSemaphore

Start = Callable[..., LitServer]


def test_cross_process_semaphore_counts() -> None:
    semaphore = CrossSemaphore()
    semaphore.release(2)
    assert semaphore.acquire(1) and semaphore.acquire(1)
    assert not semaphore.acquire(0.01)
