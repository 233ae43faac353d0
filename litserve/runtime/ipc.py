"""Messages between the server and its worker processes over a Unix socket.

Each message is pickled with protocol 5; buffers that support it (numpy arrays, `PickleBuffer`s) travel
out of band, as their own frames, without being copied into the pickle. Both ends are our own code:
what is unpickled here was pickled by litserve, never bytes read from the network.

Frame: u32 buffer count, u64 pickle length, u64 length of each buffer, the pickle, the buffers.
"""

from __future__ import annotations

import pickle
import socket
import struct
import threading
from typing import Any, final

__all__ = ["Link", "LinkClosedError"]

_COUNT = struct.Struct("<I")
_LENGTH = struct.Struct("<Q")


class LinkClosedError(ConnectionError):
    """The other end went away (the process exited or closed its socket)."""


@final
class Link:
    """One end of a socket pair: `send` from any thread, `recv` from one reader thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader = sock.makefile("rb", buffering=1 << 16)
        self._send_lock = threading.Lock()

    def send(self, message: Any) -> None:
        """Send one message; raises LinkClosedError when the other end is gone."""
        buffers: list[pickle.PickleBuffer] = []
        data = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
        raws = [buffer.raw() for buffer in buffers]
        head = _COUNT.pack(len(raws)) + b"".join(_LENGTH.pack(n) for n in (len(data), *(r.nbytes for r in raws)))
        try:
            with self._send_lock:
                self._sock.sendall(head + data)
                for raw in raws:
                    self._sock.sendall(raw)
        except OSError as exc:
            raise LinkClosedError("the other process is gone") from exc

    def recv(self) -> Any:
        """Block for the next message; raises LinkClosedError at end of stream."""
        (count,) = _COUNT.unpack(self._read(_COUNT.size))
        lengths = struct.unpack(f"<{count + 1}Q", self._read(_LENGTH.size * (count + 1)))
        data = self._read(lengths[0])
        buffers = [self._read(n) for n in lengths[1:]]
        return pickle.loads(data, buffers=buffers)

    def _read(self, size: int) -> bytes:
        try:
            chunk: bytes = self._reader.read(size)
        except (OSError, ValueError) as exc:  # ValueError: read on a closed file
            raise LinkClosedError("the other process is gone") from exc
        if len(chunk) != size:
            raise LinkClosedError("the other process is gone")
        return chunk

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.close()
        self._sock.close()
