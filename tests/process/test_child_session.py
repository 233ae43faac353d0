"""The worker process's side of a message: batch sizes ride on answers, and a message that cannot be
pickled loses none of them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from litserve.api import LitAPI
from litserve.engine.messages import Outcome
from litserve.hooks import plan_with_model
from litserve.process.child import _Session
from litserve.process.messages import Answer, Answers, Batches, ChildInit, Chunk, decode
from litserve.process.wire import Link
from tests.process.test_process_hardening import LockedBytes  # a body that cannot be pickled


class EchoAPI(LitAPI):
    def predict(self, x: Any) -> Any:
        return x


@pytest.fixture
def session() -> Iterator[tuple[_Session, Link]]:
    near, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    init = ChildInit(b"", "cpu", ("litserve-worker-cpu-0",), ())
    api = EchoAPI()
    child = _Session(Link(near), init, plan_with_model(api, None), is_stream=False)
    server_end = Link(far)
    try:
        yield child, server_end
    finally:
        queue = child.queue
        for waiter in (*queue._by_thread.values(), *queue._unclaimed, queue._main):
            waiter.close()
        near.close()
        far.close()


def received(link: Link) -> Any:
    return decode(link.recv())


def test_an_answer_carries_the_batch_sizes_collected_before_it_in_the_same_frame(
    session: tuple[_Session, Link],
) -> None:
    child, server = session
    child.batch_taken(2)
    child.batch_taken(1)
    child.send(Answers(((1, Outcome(200, b"1")), (2, Outcome(200, b"2")))), 1, 2)
    child.send(Answer(3, Outcome(200, b"3")), 3)  # nothing collected since: no sizes
    first, second = received(server), received(server)
    assert isinstance(first, Answers) and first.batches == (2, 1)
    assert second == Answer(3, Outcome(200, b"3"))


def test_any_other_message_is_preceded_by_its_own_batches_frame(session: tuple[_Session, Link]) -> None:
    child, server = session
    child.batch_taken(4)
    child.send(Chunk(5, b"data"))
    assert received(server) == Batches((4,))
    assert received(server) == Chunk(5, b"data")


def test_an_answer_that_cannot_be_pickled_leaves_its_batch_sizes_for_the_next_message(
    session: tuple[_Session, Link],
) -> None:
    child, server = session
    child.batch_taken(3)
    with pytest.raises(TypeError, match="pickle"):
        child.send(Answer(1, Outcome(200, LockedBytes(b"x"))), 1)
    child.batch_taken(1)
    child.send(Answer(2, Outcome(200, b"ok")), 2)
    assert received(server) == Answer(2, Outcome(200, b"ok"), (3, 1))
