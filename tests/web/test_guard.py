"""The connection guard as a plain ASGI layer (no socket): stuck body reads at stop, the client watch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from litserve.web.guard import CLIENT_WATCH, ConnectionGuard, HostPolicy, follow_client

Message = MutableMapping[str, Any]


def _scope(kind: str = "http") -> dict[str, Any]:
    return {"type": kind, "method": "POST", "path": "/predict", "headers": [(b"host", b"127.0.0.1:8000")]}


class _Wire:
    """The server side of one request: messages for the app to receive, and what the app sent."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        return await self.incoming.get()

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def answer(self) -> tuple[int, dict[bytes, bytes], Any]:
        start, body = self.sent
        return start["status"], dict(start["headers"]), json.loads(body["body"])


async def _reads_until_gone(scope: Message, receive: Any, send: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def test_a_body_read_waiting_at_stop_ends_and_is_answered_503() -> None:
    async def main() -> None:
        first_part = asyncio.Event()

        async def app(scope: Message, receive: Any, send: Any) -> None:
            assert (await receive())["more_body"]
            first_part.set()  # and, in the same step, waits for the rest
            assert (await receive())["type"] == "http.disconnect"

        wire = _Wire()
        guard = ConnectionGuard(app, HostPolicy(loopback_only=True))
        await wire.incoming.put({"type": "http.request", "body": b"{", "more_body": True})
        serving = asyncio.ensure_future(guard(_scope(), wire.receive, wire.send))
        await asyncio.wait_for(first_part.wait(), 5)
        guard.stop_reading()
        await asyncio.wait_for(serving, 5)
        status, headers, body = wire.answer()
        assert (status, headers[b"connection"], body) == (503, b"close", {"detail": "Server is shutting down"})

    asyncio.run(main())


def test_a_body_read_starting_after_stop_ends_at_once() -> None:
    async def main() -> None:
        wire = _Wire()
        guard = ConnectionGuard(_reads_until_gone, HostPolicy(loopback_only=True))
        guard.stop_reading()
        await asyncio.wait_for(guard(_scope(), wire.receive, wire.send), 5)
        assert wire.answer()[0] == 503

    asyncio.run(main())


def test_other_scopes_pass_through_untouched() -> None:
    seen: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        seen.append(scope)

    async def main() -> None:
        wire = _Wire()
        await ConnectionGuard(app, HostPolicy(loopback_only=True))(_scope("lifespan"), wire.receive, wire.send)
        assert seen == [_scope("lifespan")] and not wire.sent

    asyncio.run(main())


def test_a_route_that_follows_a_client_already_gone_is_cancelled_at_its_next_await() -> None:
    reached: list[str] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "http.request"
        assert (await receive())["type"] == "http.disconnect"  # the client left while the body was read
        follow_client(scope)
        reached.append("followed")
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(5)
        reached.append("cancelled")
        raise asyncio.CancelledError

    async def main() -> None:
        wire = _Wire()
        await wire.incoming.put({"type": "http.request", "body": b"{}", "more_body": False})
        await wire.incoming.put({"type": "http.disconnect"})
        task = asyncio.ensure_future(
            ConnectionGuard(app, HostPolicy(loopback_only=True))(_scope(), wire.receive, wire.send)
        )
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert reached == ["followed", "cancelled"] and not wire.sent

    asyncio.run(main())


def test_follow_client_without_a_guard_does_nothing() -> None:
    async def main() -> None:
        follow_client({"type": "http"})  # in-process serving: no watch in the scope
        await asyncio.sleep(0)

    asyncio.run(main())
    assert CLIENT_WATCH not in {"type": "http"}


class _RouteInATaskOfItsOwn:
    """An app that runs its route in a task of its own, as Quart does, which follows the client."""

    def __init__(self, read_after_body: bool) -> None:
        self.entered = asyncio.Event()
        self.route_cancelled = asyncio.Event()
        self._read_after_body = read_after_body

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        await receive()  # the body
        route = asyncio.ensure_future(self._route(scope))
        if self._read_after_body:
            await receive()  # Quart's reader: here it fails, as Ray's receive does for a cancelled request
        await asyncio.wait([route])  # as Quart waits for its tasks: a cancel of this call does not reach the route

    async def _route(self, scope: Message) -> None:
        follow_client(scope)
        self.entered.set()
        try:
            await asyncio.Event().wait()  # waiting for a worker's answer
        except asyncio.CancelledError:
            self.route_cancelled.set()
            raise


def test_a_cancelled_call_cancels_a_route_running_in_a_task_of_its_own() -> None:
    async def scenario() -> None:
        app = _RouteInATaskOfItsOwn(read_after_body=False)
        wire = _Wire()
        await wire.incoming.put({"type": "http.request", "body": b"{}", "more_body": False})
        guard = ConnectionGuard(app, HostPolicy(loopback_only=False), ())
        call = asyncio.ensure_future(guard(_scope(), wire.receive, wire.send))
        await asyncio.wait_for(app.entered.wait(), 10)
        call.cancel()  # e.g. Ray cancels the ASGI call when its proxy's client hangs up
        await asyncio.wait_for(app.route_cancelled.wait(), 10)
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(scenario())


def test_a_receive_that_fails_after_the_body_cancels_the_route() -> None:
    class _Cancelled(Exception):
        """What Ray's receive raises for a request its proxy cancelled."""

    async def scenario() -> None:
        app = _RouteInATaskOfItsOwn(read_after_body=True)
        wire = _Wire()
        await wire.incoming.put({"type": "http.request", "body": b"{}", "more_body": False})
        failing = {"first": True}

        async def receive() -> Message:
            if failing["first"]:
                failing["first"] = False
                return await wire.receive()
            await app.entered.wait()
            raise _Cancelled("the request was cancelled")

        guard = ConnectionGuard(app, HostPolicy(loopback_only=False), ())
        call = asyncio.ensure_future(guard(_scope(), receive, wire.send))
        await asyncio.wait_for(app.route_cancelled.wait(), 10)
        with pytest.raises(_Cancelled):
            await call

    asyncio.run(scenario())
