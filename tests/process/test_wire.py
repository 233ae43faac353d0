"""The frame format between the server and its worker processes, fed in every way a socket can split it."""

from __future__ import annotations

import dataclasses
import pickle
import socket
import struct
import threading
from typing import Any

import numpy as np
import pytest

from litserve.engine.messages import DropReason, Outcome, StreamStart
from litserve.process import messages
from litserve.process.messages import Answer, Answers, Chunk, HealthAnswer, Request, decode, encode
from litserve.process.wire import BadFrame, FrameReader, Link, LinkClosedError, send_all, unsent_part
from litserve.timing import Timing
from tests.helpers import wait_until

MESSAGES: list[Any] = [
    Request(7, {"input": [1.0, 2.0]}, None, None, None, 12.5, None, 12.25, True),
    Answers(((1, Outcome(200, b"x" * 100_000)), (2, Outcome(200, b"")))),
    Chunk(3, np.arange(50_000, dtype=np.float32)),  # travels out of band
    HealthAnswer(4, True),
    Request(
        5,
        {"a": np.ones(3, dtype=np.int8), "b": np.zeros(70_000, dtype=np.float64)},
        1.0,
        None,
        None,
        2.0,
        None,
        1.5,
        False,
    ),
    Answers(((8, Outcome(404, b'{"error":"x"}', "text/plain", (("x-a", "1"),), {"why": [1]})),)),
    Chunk(9, StreamStart("text/event-stream", b"data: 1")),
    Answer(10, Outcome(200, b"{}", timing=Timing(0.002, 4, 0.001))),  # the timing crosses with the answer
]


def frame_bytes(message: Any) -> bytes:
    return b"".join(bytes(piece) for piece in encode(message))


def sent_through_a_socket_pair(pieces: list[bytes | memoryview]) -> bool:
    """send_all() the pieces on one end while a thread reads the other: did every byte arrive, in order?"""
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    expected = b"".join(bytes(p) for p in pieces)
    received = bytearray()

    def read() -> None:
        while len(received) < len(expected) and (chunk := right.recv(1 << 16)):
            received.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        send_all(left, pieces)
    finally:
        left.close()  # the reader sees the end of the stream, whatever happened
        reader.join(10)
        right.close()
    return bytes(received) == expected


def same(a: Any, b: Any) -> bool:
    return pickle.dumps(a) == pickle.dumps(b)


def test_an_array_travels_out_of_band_as_its_own_piece() -> None:
    array = np.arange(1000, dtype=np.int64)
    pieces = encode(Chunk(1, array))
    assert len(pieces) == 2
    assert memoryview(pieces[1]).nbytes == array.nbytes


@pytest.mark.parametrize("piece_size", [1, 7, 4096, 1 << 20])
def test_messages_come_out_whole_and_in_order_however_the_bytes_are_split(piece_size: int) -> None:
    stream = b"".join(frame_bytes(m) for m in MESSAGES)
    reader = FrameReader()
    received: list[Any] = []
    for at in range(0, len(stream), piece_size):
        received.extend(reader.feed(stream[at : at + piece_size]))
    assert len(received) == len(MESSAGES)
    for got, sent in zip(received, MESSAGES, strict=True):
        assert same(decode(got), sent)
    assert reader.feed(b"") == []


def test_a_link_carries_messages_bigger_than_the_socket_buffer_both_ways() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a, b = Link(left), Link(right)
    big = np.ones(2_000_000, dtype=np.float32)  # 8 MB: far more than the socket buffer holds
    try:
        answer = Answer(9, Outcome(200, b"y" * 3_000_000))
        writer = threading.Thread(
            target=lambda: [a.send(encode(Chunk(i, big))) for i in range(3)] + [b.send(encode(answer))]
        )
        writer.start()
        for i in range(3):
            chunk = decode(b.recv())
            assert chunk.request_id == i
            assert np.array_equal(chunk.item, big)
        assert decode(a.recv()) == answer
        writer.join(10)
        assert not writer.is_alive()
    finally:
        left.close()
        right.close()


def test_a_closed_link_says_so() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    b = Link(right)
    left.close()
    with pytest.raises(LinkClosedError):
        b.recv()
    with pytest.raises(LinkClosedError):
        b.send(encode(HealthAnswer(1, True)))
    right.close()


def test_send_all_writes_every_piece_on_a_blocking_socket() -> None:
    assert sent_through_a_socket_pair([b"a" * 300_000, memoryview(np.arange(100_000, dtype=np.int32)), b"z"])


def test_a_frame_that_cannot_be_unpickled_is_skipped_and_the_next_one_still_comes_out() -> None:
    garbage = b"certainly not a pickle"
    bad = struct.pack("<IQQ", 0, 42, len(garbage)) + garbage  # no buffers, tag 42, the "pickle"
    reader = FrameReader()
    first, second = reader.feed(bad + frame_bytes(HealthAnswer(1, True)))
    assert isinstance(first, BadFrame) and first.tag == 42  # which request it was, still known
    assert decode(second) == HealthAnswer(1, True)


def test_send_all_writes_more_pieces_than_one_sendmsg_may_carry() -> None:
    assert sent_through_a_socket_pair([bytes([i % 256]) * 10 for i in range(3000)])  # IOV_MAX is 1024


def test_unsent_part_cuts_inside_a_piece_and_skips_whole_ones() -> None:
    pieces: list[bytes | memoryview] = [b"abc", b"defg", memoryview(b"hi")]
    assert [bytes(p) for p in unsent_part(pieces, 0)] == [b"abc", b"defg", b"hi"]
    assert [bytes(p) for p in unsent_part(pieces, 3)] == [b"defg", b"hi"]
    assert [bytes(p) for p in unsent_part(pieces, 5)] == [b"fg", b"hi"]
    assert unsent_part(pieces, 9) == []


def test_receive_nowait_returns_every_whole_message_and_never_waits() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    link = Link(right)
    try:
        assert link.receive_nowait() == []
        whole = frame_bytes(MESSAGES[0]) + frame_bytes(MESSAGES[3])
        half = frame_bytes(MESSAGES[1])
        left.sendall(whole + half[:100])
        assert [same(decode(a), b) for a, b in zip(link.receive_nowait(), [MESSAGES[0], MESSAGES[3]], strict=True)] == [
            True,
            True,
        ]
        assert link.receive_nowait() == []  # the rest of the third has not come
        left.sendall(half[100:])
        received: list[Any] = []
        # The rest may take more than one read.
        assert wait_until(lambda: bool(received.extend(link.receive_nowait()) or received), timeout_s=10)
        assert same(decode(received[0]), MESSAGES[1])
        left.close()
        with pytest.raises(LinkClosedError):
            link.receive_nowait()
    finally:
        right.close()


def test_outcomes_and_stream_starts_unpickle_equal_with_every_field() -> None:
    outcome = Outcome(418, b"teapot", "text/plain", (("retry-after", "1"),), {"detail": "x"})
    start = StreamStart("application/x-ndjson", b"{}")
    assert pickle.loads(pickle.dumps(outcome, protocol=5)) == outcome
    assert pickle.loads(pickle.dumps(start, protocol=5)) == start
    for value in (outcome, start):  # a field added later must be added to __reduce__ too
        assert len(value.__reduce__()[1]) == len(dataclasses.fields(value))


def test_a_request_frame_carries_its_id_as_the_tag() -> None:
    request = Request(31, {"x": 1}, None, None, None, 0.0, None, 0.0, False)
    head = frame_bytes(request)[: struct.calcsize("<IQQ")]
    assert struct.unpack("<IQQ", head)[1] == 31
    assert struct.unpack("<IQQ", frame_bytes(HealthAnswer(31, True))[: struct.calcsize("<IQQ")])[1] == 0


def crossed(message: Any) -> Any:
    """`message` written as a frame and read back, as the other process reads it."""
    (wire_form,) = FrameReader().feed(frame_bytes(message))
    return decode(wire_form)


@pytest.mark.parametrize("name", messages.__all__)
def test_every_message_kind_crosses_with_every_field(name: str) -> None:
    kind = getattr(messages, name)
    if not dataclasses.is_dataclass(kind):
        return  # the unions, encode() and decode()
    values = [i if f.type == "int" else f"value {i}" for i, f in enumerate(dataclasses.fields(kind))]
    message = kind(*values)
    assert crossed(message) == message


def test_a_drop_reason_and_outcome_reason_survive_the_crossing() -> None:
    outcome = Outcome(504, b"{}", reason=DropReason.TIMED_OUT)
    assert crossed(Answer(1, outcome)).outcome.reason is DropReason.TIMED_OUT


@pytest.mark.parametrize("wire_form", [("not", "a", "message"), (999,), (-1,), (True, 1, 2, 3, 4, 5, 6), 42])
def test_a_frame_that_is_no_message_of_ours_reads_as_a_bad_frame(wire_form: Any) -> None:
    bad = decode(wire_form)
    assert isinstance(bad, BadFrame) and bad.tag == 0


def test_a_request_that_cannot_be_rebuilt_keeps_its_id_so_it_is_still_answered() -> None:
    (wire_form,) = FrameReader().feed(frame_bytes(Request(31, {"x": 1}, None, None, None, 0.0, None, 0.0, False)))
    bad = decode(wire_form[:-1])  # a field short, as from another version
    assert isinstance(bad, BadFrame) and bad.tag == 31


def test_the_handshake_keeps_what_came_in_the_same_read_as_ready() -> None:
    from litserve.process.messages import ErrorReport, Ready
    from litserve.process.supervisor import _first_messages
    from litserve.status import ErrorRecord

    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        report = ErrorReport(ErrorRecord("w", "ValueError: x", "Traceback ...", 1.0))
        send_all(left, [*encode(Ready(7)), *encode(report)])  # one write: one read on the other end
        first, *early = _first_messages(right, FrameReader())
        assert decode(first) == Ready(7)
        assert [decode(m) for m in early] == [report]
    finally:
        left.close()
        right.close()
