"""Frames between the server and its worker processes over a Unix socket.

Each message (`process.messages`) is pickled with protocol 5; buffers that support it (numpy arrays,
`PickleBuffer`s) travel out of band, as their own frames, without being copied into the pickle.
Both ends are our own code:
what is unpickled here was pickled by litserve, never bytes read from the network.

Frame: u32 buffer count, u64 tag, u64 pickle length, u64 length of each buffer, the pickle, the
buffers. The tag is a request id (0: none), readable even when the pickle is not, so a request whose
payload cannot be unpickled on the other side can still be answered.

`encode` and `FrameReader` are the format; `Link` uses them for a blocking socket (the worker process),
and `process.channel` with a non-blocking one (the server process, on its event loop).
"""

from __future__ import annotations

import pickle
import select
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any, final

__all__ = [
    "MAX_PIECES",
    "RECV_SIZE",
    "BadFrame",
    "FrameReader",
    "Link",
    "LinkClosedError",
    "encode",
    "send_all",
    "unsent_part",
]

_FIRST = struct.Struct("<IQQ")  # buffer count, tag, pickle length: the whole head of a frame without buffers
_LENGTH = struct.Struct("<Q")  # then one per buffer
RECV_SIZE = 1 << 18  # bytes asked of one recv() on either end
MAX_PIECES = 512  # pieces per sendmsg call; Linux refuses more than IOV_MAX (1024)


class LinkClosedError(ConnectionError):
    """The other end went away (the process exited or closed its socket)."""


def encode(message: Any, tag: int = 0) -> list[bytes | memoryview]:
    """One message as the pieces of its frame, to be written in order (buffers are not copied)."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    if not buffers:
        return [_FIRST.pack(0, tag, len(data)) + data]
    raws = [buffer.raw() for buffer in buffers]
    head = _FIRST.pack(len(raws), tag, len(data)) + b"".join(_LENGTH.pack(r.nbytes) for r in raws)
    return [head + data, *raws]


def send_all(sock: socket.socket, pieces: list[bytes | memoryview]) -> None:
    """Write every piece on a blocking socket (scatter-gather, no joining of big buffers)."""
    while pieces:
        pieces = unsent_part(pieces, sock.sendmsg(pieces[:MAX_PIECES]))


def unsent_part(pieces: list[bytes | memoryview], sent: int) -> list[bytes | memoryview]:
    """What is left of `pieces` after the first `sent` bytes went out."""
    if len(pieces) == 1 and type(pieces[0]) is bytes and sent == len(pieces[0]):
        return []  # the common case: one frame without buffers, all of it taken
    rest: list[bytes | memoryview] = []
    for piece in pieces:
        view = memoryview(piece).cast("B")
        if sent >= view.nbytes:
            sent -= view.nbytes
            continue
        rest.append(view[sent:] if sent else piece)
        sent = 0
    return rest


@final
@dataclass(frozen=True, slots=True)
class BadFrame:
    """A whole frame that could not be unpickled; the reader skipped it and went on."""

    error: Exception
    tag: int  # the request it carried, or 0


@final
class FrameReader:
    """Turns bytes read from the socket, in whatever pieces they come, into whole messages."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """Add what was read; return the messages it completed, in order.

        Pickles are read in place; only out-of-band buffers are copied out, as the objects keep them.
        """
        buffer = self._buffer
        buffer += data
        messages: list[Any] = []
        at, end = 0, len(buffer)
        with memoryview(buffer) as view:  # released before the buffer is trimmed below
            while end - at >= _FIRST.size:
                count, tag, pickle_length = _FIRST.unpack_from(view, at)
                head = _FIRST.size + _LENGTH.size * count
                if end - at < head:
                    break
                lengths = struct.unpack_from(f"<{count}Q", view, at + _FIRST.size) if count else ()
                start = at + head
                data_end = start + pickle_length
                if end < data_end + sum(lengths):
                    break
                buffers = []
                for n in lengths:
                    buffers.append(bytes(view[data_end : data_end + n]))
                    data_end += n
                try:
                    messages.append(pickle.loads(view[start : start + pickle_length], buffers=buffers))
                except Exception as exc:  # one bad frame must not stop the ones after it
                    messages.append(BadFrame(exc, tag))
                at = data_end
        if at:
            del buffer[:at]
        return messages


@final
class Link:
    """One end of a socket pair, blocking: `send` from any thread; `recv`/`receive_nowait` by one thread at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._frames = FrameReader()
        self._ready: list[Any] = []
        self._send_lock = threading.Lock()

    def send(self, pieces: list[bytes | memoryview]) -> None:
        """Send one frame (from `encode`); raises LinkClosedError when the other end is gone."""
        try:
            with self._send_lock:
                send_all(self._sock, pieces)
        except OSError as exc:
            raise LinkClosedError("the other process is gone") from exc

    def recv(self) -> Any:
        """Block for the next message; raises LinkClosedError at end of stream."""
        while not self._ready:
            self._read()
        return self._ready.pop(0)

    def fileno(self) -> int:
        return self._sock.fileno()

    def has_pending(self) -> bool:
        """Messages came that nobody took yet, or bytes wait on the socket (one poll, no read)."""
        if self._ready:
            return True
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):  # closed: the reader finds out
            return False
        return bool(readable)

    def receive_nowait(self) -> list[Any]:
        """Every message that has come, without waiting: [] if none is whole yet.

        Raises LinkClosedError at end of stream. One reader at a time, as for `recv`.
        """
        if not self._ready:
            try:
                self._read(socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
        ready, self._ready = self._ready, []
        return ready

    def _read(self, flags: int = 0) -> None:
        try:
            data = self._sock.recv(RECV_SIZE, flags)
        except BlockingIOError:
            raise
        except OSError as exc:
            raise LinkClosedError("the other process is gone") from exc
        if not data:
            raise LinkClosedError("the other process is gone")
        self._ready.extend(self._frames.feed(data))
