"""One worker process's socket, owned by the server's event loop: every read and write happens there.

The supervisor thread does the handshake on the blocking socket, then hands it over (`open`). From
then on the loop reads whenever the socket is readable and passes each message on; a write that the
socket cannot take at once waits in a buffer the loop flushes when the socket is writable again, so
nothing ever blocks the loop. End of stream or `close()` ends the channel once, and `on_closed` tells
its owner. A failed write only stops the writing: what the process sent before it died is still read
and handed on (its answers count), and its end of stream then closes the channel.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import final

from litserve.engine.bridge import LoopHandle
from litserve.process.messages import FromChild, ToChild, decode, encode
from litserve.process.wire import MAX_PIECES, RECV_SIZE, BadFrame, FrameReader, unsent_part

__all__ = ["Channel"]


@final
class Channel:
    """A non-blocking socket to one worker process; every method runs on the loop's thread."""

    def __init__(
        self,
        sock: socket.socket,
        frames: FrameReader,
        loop: LoopHandle,
        on_message: Callable[[ToChild | FromChild | BadFrame], None],
        on_closed: Callable[[], None],
    ) -> None:
        self._sock = sock
        self._frames = frames  # may hold the start of a frame read with the handshake
        self._loop = loop.loop
        self._on_message = on_message
        self._on_closed = on_closed
        self._unsent = bytearray()  # what the socket did not take yet, in order
        self._is_open = False
        self._is_broken = False  # a write failed: nothing more is sent; reading goes on to the end

    @property
    def is_open(self) -> bool:
        return self._is_open

    def open(self) -> None:
        """Start reading on the loop."""
        self._sock.setblocking(False)
        self._is_open = True
        self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def send(self, message: ToChild) -> bool:
        """Write one message now, or queue what the socket cannot take yet; False once nothing can be sent."""
        if not self._is_open or self._is_broken:
            return False
        pieces = encode(message)
        if self._unsent:  # keep frames in order behind what waits already
            self._buffer(pieces)
            return True
        try:
            sent = self._sock.sendmsg(pieces[:MAX_PIECES])
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # the worker process died; its end of stream may not be read yet
            self._break()
            return False
        rest = unsent_part(pieces, sent)
        if rest:
            self._buffer(rest)
        return True

    def close(self) -> None:
        """Stop reading and writing, close the socket and tell the owner (once)."""
        if not self._is_open:
            return
        self._is_open = False
        fd = self._sock.fileno()
        if not self._loop.is_closed():
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._on_closed()

    def _break(self) -> None:
        # Stop writing, and make sure the end of stream comes even if the process still runs (the write
        # failed for another reason): it reads the end of its input and exits.
        self._is_broken = True
        self._unsent.clear()
        self._loop.remove_writer(self._sock.fileno())
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _buffer(self, pieces: list[bytes | memoryview]) -> None:
        if not self._unsent:
            self._loop.add_writer(self._sock.fileno(), self._on_writable)
        for piece in pieces:
            self._unsent += piece

    def _on_writable(self) -> None:
        try:
            sent = self._sock.send(self._unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._break()
            return
        del self._unsent[:sent]
        if not self._unsent:
            self._loop.remove_writer(self._sock.fileno())

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the worker process exited (or closed its end)
            self.close()
            return
        for wire_form in self._frames.feed(data):
            self._on_message(decode(wire_form))
            if not self._is_open:
                return
