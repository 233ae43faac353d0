"""How an endpoint turns what `encode_response` returns into bytes: the default JSON/NDJSON, or a spec's.

A spec (e.g. OpenAI chat completions) shapes answers its own way: one JSON document built from the
model's output, or Server-Sent Events for a stream. It does that work in the worker, where the output
is, so the HTTP loop only forwards bytes (in process mode, the worker process pays for it). The engine
knows these protocols only; the specs implement them (`litserve.specs`).
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["AnswerCodec", "ChunkEncoder"]


class ChunkEncoder(Protocol):
    """One streamed request's encoder; it may keep state (e.g. text gathered for a non-streamed answer)."""

    @property
    def media_type(self) -> str:
        """The response's content type."""
        ...

    def encode(self, chunk: Any) -> bytes:
        """Bytes to send for one chunk `encode_response` yielded (b"" when nothing is to be sent yet)."""
        ...

    def close(self) -> bytes:
        """Bytes that end a stream that finished normally (b"" for none)."""
        ...


class AnswerCodec(Protocol):
    """An endpoint's way of encoding answers; `shape` is the per-request value its route passed to submit."""

    def encode_answer(self, encoded: Any, payload: Any, shape: Any) -> bytes:
        """The 200 body for a non-streamed request whose `encode_response` returned `encoded`."""
        ...

    def open_stream(self, payload: Any, shape: Any) -> ChunkEncoder:
        """The encoder for one streamed request."""
        ...
