"""Hearing a client leave through Hypercorn's receive queue, without a task reading it."""

from __future__ import annotations

import asyncio
from typing import Any

from litserve.web.disconnect_listener import listen_on


def test_a_listener_hears_the_disconnect_the_queue_is_given_and_leaves_nothing_behind() -> None:
    async def scenario() -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        left: list[str] = []
        listener = listen_on(queue.get, lambda: left.append("left"))
        assert listener is not None
        assert len(queue._getters) == 1  # type: ignore[attr-defined]  # a getter of ours, no task
        await queue.put({"type": "http.request", "body": b"", "more_body": False})  # not a leave: it waits on
        await asyncio.sleep(0)
        assert left == [] and len(queue._getters) == 1  # type: ignore[attr-defined]
        await queue.put({"type": "http.disconnect"})
        await asyncio.sleep(0)
        assert left == ["left"]
        listener.stop()  # after the fact: nothing to undo

        answered: list[str] = []
        quiet = listen_on(queue.get, lambda: answered.append("left"))
        assert quiet is not None
        quiet.stop()  # the request was answered first
        assert not queue._getters  # type: ignore[attr-defined]
        await queue.put({"type": "http.disconnect"})
        await asyncio.sleep(0)
        assert answered == [] and queue.qsize() == 1

    asyncio.run(scenario())


def test_a_message_already_waiting_is_heard_at_once() -> None:
    async def scenario() -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await queue.put({"type": "http.disconnect"})  # the client left while the body was parsed
        left: list[str] = []
        assert listen_on(queue.get, lambda: left.append("left")) is not None
        assert left == ["left"]

    asyncio.run(scenario())


def test_any_other_receive_is_left_to_a_task() -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    class NotAQueue:
        async def get(self) -> dict[str, Any]:
            return {}

    assert listen_on(receive, lambda: None) is None
    assert listen_on(NotAQueue().get, lambda: None) is None
