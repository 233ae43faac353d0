"""A small asyncio load generator for streamed responses (NDJSON or Server-Sent Events) over raw HTTP/1.1
keep-alive connections.

Usage: python benchmarks/stream_client.py PORT [--concurrency 16] [--duration 10] [--count N]
       [--warmup 1] [--tokens 32] [--cpu 1] [--format token|content|sse] [--sse]

Opens CONCURRENCY connections to 127.0.0.1:PORT with `asyncio.open_connection`; each sends its request
and reads the answer itself (status line, headers, then chunked transfer encoding, or Content-Length),
back to back, until DURATION seconds have passed or COUNT requests were started. Per request it
measures the time to first token (from writing the request to receiving the first token) and counts
the tokens. Every response must be a 200 with exactly TOKENS tokens in order and a proper end (the
zero-length chunk); anything else counts as an error. With --warmup it first runs that many seconds
unmeasured. What is sent and expected (--format):

  token    (the default) `POST /predict` with `{"input": 1}`; TOKENS NDJSON lines `{"token": i}`
  content  the same request; TOKENS NDJSON lines `{"content": "t<i> "}`
  sse      (also `--sse`) `POST /v1/chat/completions`, OpenAI's chat request with `"stream": true`;
           Server-Sent Events (text/event-stream): TOKENS `chat.completion.chunk` events whose delta
           content is "t<i> ", then one whose choice has a finish_reason (and usage), then
           `data: [DONE]`. A token is an event with delta content; TTFT runs to the first of them.

Prints one JSON object to stdout: requests, tokens, wall_s, tokens_per_s, requests_per_s, TTFT
p50/p99 in ms, errors (with a few examples), and the client's own CPU use (a client near 100% is
itself the bottleneck).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REQUEST_TIMEOUT_S = 10.0
_READ_SIZE = 65536


class BadResponse(Exception):
    """The server's answer was not the expected stream."""


@dataclass
class Stats:
    """What the connections of one run measured."""

    ttft_s: list[float] = field(default_factory=list)
    requests: int = 0
    tokens: int = 0
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    started: int = 0

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_examples) < 5:
            self.error_examples.append(message)


def token_line(i: int) -> Any:
    return {"token": i}


def content_line(i: int) -> Any:
    return {"content": f"t{i} "}


def expected_body(tokens: int, line: Callable[[int], Any] = token_line) -> bytes:
    return b"".join(json.dumps(line(i), separators=(",", ":")).encode() + b"\n" for i in range(tokens))


def check_lines(body: bytes, tokens: int, line: Callable[[int], Any] = token_line) -> None:
    """Raise BadResponse unless `body` is exactly TOKENS lines `line(i)` in order, newline-ended."""
    if not body.endswith(b"\n"):
        raise BadResponse(f"the body does not end with a newline: {body[-80:]!r}")
    lines = body[:-1].split(b"\n")
    if len(lines) != tokens:
        raise BadResponse(f"{len(lines)} lines instead of {tokens}: {body[:200]!r}")
    for i, text in enumerate(lines):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise BadResponse(f"line {i} is not JSON: {text!r}") from exc
        if value != line(i):
            raise BadResponse(f"line {i} is {value!r}, expected {line(i)!r}")


def _sse_chunk(event: bytes) -> dict[str, Any]:
    """One SSE event `data: {chat.completion.chunk}`, parsed."""
    try:
        if not event.startswith(b"data: "):
            raise ValueError("not a data event")
        chunk = json.loads(event[6:])
        if chunk.get("object") != "chat.completion.chunk" or not isinstance(chunk["choices"][0]["delta"], dict):
            raise ValueError("not a chat.completion.chunk")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise BadResponse(f"{exc}: {event[:200]!r}") from exc
    return dict(chunk)


def _delta_content(chunk: dict[str, Any]) -> str | None:
    content = chunk["choices"][0]["delta"].get("content")
    return content if isinstance(content, str) and content else None


def sse_first_token(body: bytes) -> bool:
    """Whether the events received so far include one with delta content."""
    return any(_delta_content(_sse_chunk(event)) is not None for event in body.split(b"\n\n")[:-1])


def check_sse(body: bytes, tokens: int) -> None:
    """Raise BadResponse unless `body` is TOKENS content events "t<i> ", the finish event, `data: [DONE]`."""
    events = body.split(b"\n\n")
    if len(events) < 3 or events[-1] != b"" or events[-2] != b"data: [DONE]":
        raise BadResponse(f"the stream does not end with an event and data: [DONE]: {body[-200:]!r}")
    chunks = [_sse_chunk(event) for event in events[:-2]]
    contents = [_delta_content(chunk) for chunk in chunks[:-1]]
    expected = [f"t{i} " for i in range(tokens)]
    if contents != expected:
        raise BadResponse(f"{len(contents)} delta contents {contents[:4]!r}..., expected {tokens} {expected[:4]!r}...")
    finish = chunks[-1]
    if not finish["choices"][0].get("finish_reason") or "usage" not in finish:
        raise BadResponse(f"the last chunk has no finish_reason and usage: {events[-3][:300]!r}")
    if len({chunk.get("id") for chunk in chunks}) != 1:
        raise BadResponse(f"events of different completions: {body[:300]!r}")


class SseCheck:
    """check_sse with a fast path: a body that differs from one already checked only in its id and `created`
    (which every event repeats) passes by a byte compare; anything else is checked event by event."""

    _HEAD = re.compile(rb'data: \{"id":("[^"]*"),"object":"chat\.completion\.chunk","created":(\d+),')

    def __init__(self) -> None:
        self._template: bytes | None = None  # a checked body, its id and created replaced by placeholders

    def __call__(self, body: bytes, tokens: int) -> None:
        head = self._HEAD.match(body)
        if head is not None and self._template is not None and self._fill(self._template, head) == body:
            return
        check_sse(body, tokens)
        if head is not None:
            template = self._fill(body, head, invert=True)
            self._template = template if self._fill(template, head) == body else None

    @staticmethod
    def _fill(body: bytes, head: re.Match[bytes], invert: bool = False) -> bytes:
        pairs = [(b'"id":' + head[1] + b",", b'"id":\0ID\0,'), (b'"created":' + head[2] + b",", b'"created":\0C\0,')]
        for real, placeholder in pairs:
            body = body.replace(real, placeholder) if invert else body.replace(placeholder, real)
        return body


@dataclass(frozen=True)
class Format:
    """What one kind of stream sends and expects."""

    path: bytes
    payload: bytes
    media_type: bytes  # a part of the Content-Type every answer must have
    first_token: Callable[[bytes], bool]  # whether the body so far holds a whole token
    check: Callable[[bytes, int], None]  # raises BadResponse unless the body has exactly TOKENS tokens
    expected: Callable[[int], bytes | None]  # the exact body, when it is the same for every request


def _ndjson(line: Callable[[int], Any]) -> Format:
    return Format(
        b"/predict",
        b'{"input":1}',
        b"ndjson",
        lambda body: b"\n" in body,
        lambda body, tokens: check_lines(body, tokens, line),
        lambda tokens: expected_body(tokens, line),
    )


CHAT_REQUEST = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'
FORMATS = {
    "token": _ndjson(token_line),
    "content": _ndjson(content_line),
    # LitServe 0.2.19 sends its NDJSON lines with no Content-Type (side_by_side.py): the same lines, any type.
    "token-untyped": dataclasses.replace(_ndjson(token_line), media_type=b""),
    "sse": Format(
        b"/v1/chat/completions", CHAT_REQUEST, b"text/event-stream", sse_first_token, SseCheck(), lambda _: None
    ),
}


class Connection:
    """One keep-alive connection and its receive buffer; `request()` runs one request on it."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, form: Format
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._request = request
        self._format = form
        self._buf = bytearray()
        self._arrived_s = 0.0  # when the latest bytes arrived

    async def _fill(self) -> None:
        data = await self._reader.read(_READ_SIZE)
        self._arrived_s = time.perf_counter()
        if not data:
            raise BadResponse("the server closed the connection mid-response")
        self._buf += data

    async def _line(self) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            await self._fill()
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    async def _exactly(self, size: int) -> bytes:
        while len(self._buf) < size:
            await self._fill()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    async def request(self) -> tuple[float | None, bytes, bool]:
        """Send one request; return (TTFT in s or None, body, whether the server keeps the connection)."""
        sent_s = time.perf_counter()
        self._writer.write(self._request)
        status = await self._line()
        parts = status.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise BadResponse(f"not an HTTP/1.x status line: {status!r}")
        headers: dict[bytes, bytes] = {}
        while line := await self._line():
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        keep_alive = headers.get(b"connection") != b"close"
        body = bytearray()
        ttft_s: float | None = None
        if headers.get(b"transfer-encoding") == b"chunked":
            while True:
                size_line = await self._line()
                size = int(size_line.split(b";", 1)[0], 16)
                if size == 0:
                    while await self._line():  # trailers, then the empty line that ends the message
                        pass
                    break
                chunk = await self._exactly(size + 2)
                if chunk[-2:] != b"\r\n":
                    raise BadResponse(f"a chunk of {size} bytes is not followed by CRLF")
                body += chunk[:-2]
                if ttft_s is None and self._format.first_token(body):
                    ttft_s = self._arrived_s - sent_s
        elif b"content-length" in headers:
            body += await self._exactly(int(headers[b"content-length"]))
            if self._format.first_token(body):
                ttft_s = self._arrived_s - sent_s
        else:
            raise BadResponse(f"neither chunked nor Content-Length: {headers!r}")
        if parts[1] != b"200":
            raise BadResponse(f"status {parts[1].decode()}: {bytes(body[:200])!r}")
        if self._format.media_type not in headers.get(b"content-type", b""):
            raise BadResponse(f"Content-Type {headers.get(b'content-type')!r}, expected {self._format.media_type!r}")
        return ttft_s, bytes(body), keep_alive

    def close(self) -> None:
        self._writer.close()


async def _connect(port: int, request: bytes, form: Format) -> Connection:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return Connection(reader, writer, request, form)


async def _worker(port: int, form: Format, tokens: int, deadline_s: float, count: int | None, stats: Stats) -> None:
    request = (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (form.path, port, len(form.payload), form.payload)
    )
    expected = form.expected(tokens)
    connection: Connection | None = None
    try:
        while time.perf_counter() < deadline_s and (count is None or stats.started < count):
            stats.started += 1
            try:
                if connection is None:
                    connection = await _connect(port, request, form)
                ttft_s, body, keep_alive = await asyncio.wait_for(connection.request(), REQUEST_TIMEOUT_S)
                if body != expected:  # the fast path is a byte compare; otherwise check it token by token
                    form.check(body, tokens)
            except (BadResponse, OSError, ValueError, asyncio.TimeoutError) as exc:
                stats.error(f"{type(exc).__name__}: {exc}")
                if connection is not None:
                    connection.close()
                    connection = None
                continue
            stats.requests += 1
            stats.tokens += tokens
            if ttft_s is not None:
                stats.ttft_s.append(ttft_s)
            if not keep_alive:
                connection.close()
                connection = None
    finally:
        if connection is not None:
            connection.close()


async def run_load(
    port: int, concurrency: int, duration_s: float, count: int | None, tokens: int, form: str = "token"
) -> dict[str, Any]:
    """CONCURRENCY connections for DURATION seconds (or COUNT requests); the measured figures as a dict."""
    stats = Stats()
    start_s = time.perf_counter()
    cpu_start_s = time.process_time()
    deadline_s = start_s + duration_s
    workers = (_worker(port, FORMATS[form], tokens, deadline_s, count, stats) for _ in range(concurrency))
    await asyncio.gather(*workers)
    wall_s = time.perf_counter() - start_s
    cpu_s = time.process_time() - cpu_start_s
    ttft_ms = sorted(t * 1e3 for t in stats.ttft_s)
    return {
        "concurrency": concurrency,
        "requests": stats.requests,
        "tokens": stats.tokens,
        "wall_s": wall_s,
        "tokens_per_s": stats.tokens / wall_s,
        "requests_per_s": stats.requests / wall_s,
        "ttft_p50_ms": percentile(ttft_ms, 50),
        "ttft_p99_ms": percentile(ttft_ms, 99),
        "errors": stats.errors,
        "error_examples": stats.error_examples,
        "client_cpu_pct": 100.0 * cpu_s / wall_s,
    }


def percentile(ordered: list[float], percent: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not ordered:
        return None
    rank = max(1, min(len(ordered), round(percent / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("--concurrency", type=int, default=16, help="connections (default 16)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measured load (default 10)")
    parser.add_argument("--count", type=int, default=None, help="stop after this many requests (default: none)")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds of unmeasured load first (default 0)")
    parser.add_argument("--tokens", type=int, default=32, help="lines every response must have (default 32)")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one core")
    parser.add_argument("--format", choices=sorted(FORMATS), default="token", help="what to send and expect")
    parser.add_argument("--sse", action="store_const", dest="format", const="sse", help="the same as --format sse")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.warmup > 0:
        asyncio.run(run_load(args.port, args.concurrency, args.warmup, None, args.tokens, args.format))
    result = asyncio.run(run_load(args.port, args.concurrency, args.duration, args.count, args.tokens, args.format))
    print(json.dumps(result))
    return 0 if result["errors"] == 0 and result["requests"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
