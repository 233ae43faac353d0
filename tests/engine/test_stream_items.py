"""A stream's items on the loop: in order, a sleeping consumer woken by a put or a run, nothing lost to a cancel."""

from __future__ import annotations

import asyncio

import pytest

from litserve.engine.messages import STREAM_END, StreamStart
from litserve.engine.stream_items import StreamItems


def test_items_come_out_in_the_order_they_went_in_singly_or_in_runs() -> None:
    items = StreamItems()
    assert items.empty() and items.take() is None
    with pytest.raises(asyncio.QueueEmpty):
        items.get_nowait()
    items.put_nowait(StreamStart("application/x-ndjson", b"0"))
    items.extend([b"1", b"2"])
    items.put_nowait(STREAM_END)
    assert items.qsize() == 4
    assert items.get_nowait() == StreamStart("application/x-ndjson", b"0")
    assert items.take() == b"1"
    assert asyncio.run(items.get()) == b"2"
    assert items.take() is STREAM_END and items.empty()


def test_a_consumer_asleep_wakes_for_a_single_item_and_for_a_run() -> None:
    async def scenario() -> list[object]:
        items = StreamItems()
        got: list[object] = []

        async def consume(count: int) -> None:
            for _ in range(count):
                got.append(await items.get())

        consumer = asyncio.ensure_future(consume(4))
        await asyncio.sleep(0)  # it sleeps: nothing is there yet
        assert not consumer.done() and got == []
        items.put_nowait(b"a")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert got == [b"a"]
        items.extend([b"b", b"c", STREAM_END])
        await asyncio.wait_for(consumer, 5)
        return got

    assert asyncio.run(scenario()) == [b"a", b"b", b"c", STREAM_END]


def test_a_consumer_cancelled_while_asleep_loses_nothing_and_the_next_get_finds_the_item() -> None:
    async def scenario() -> object:
        items = StreamItems()
        sleeper = asyncio.ensure_future(items.get())
        await asyncio.sleep(0)
        sleeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeper
        items.put_nowait(b"kept")  # its waiter is done (cancelled): the put must not fail on it
        return await asyncio.wait_for(items.get(), 5)

    assert asyncio.run(scenario()) == b"kept"
