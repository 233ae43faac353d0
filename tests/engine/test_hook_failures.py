"""Hooks that raise what a catch-all would miss (SystemExit, CancelledError) fail only their own request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from litserve import LitAPI, LitServer
from tests.apis import SquareAPI
from tests.helpers import post

Start = Callable[..., LitServer]


class ExitingAPI(SquareAPI):
    def predict(self, x: Any) -> Any:
        if x == "exit":
            raise SystemExit(3)
        return super().predict(x)


def test_a_hook_raising_system_exit_fails_its_request_and_the_worker_goes_on(start_server: Start) -> None:
    server = start_server(ExitingAPI())
    response = post(server, {"input": "exit"})
    assert (response.status_code, response.json()) == (500, {"detail": "Internal server error"})
    assert post(server, {"input": 3}).json() == {"output": 9}
    last = server.status.last_error
    assert last is not None and "SystemExit" in last.summary


class CancellingAsyncAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(enable_async=True)

    async def predict(self, x: Any) -> Any:
        if x == "cancel":
            raise asyncio.CancelledError()
        return x


def test_an_async_hook_raising_cancelled_error_is_answered_at_once(start_server: Start) -> None:
    server = start_server(CancellingAsyncAPI(), timeout=False)
    response = post(server, "cancel")
    assert response.status_code == 500
    assert post(server, "fine").json() == "fine"
