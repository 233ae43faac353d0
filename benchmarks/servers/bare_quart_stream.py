"""Benchmark server: the streaming ceiling, a bare Quart app on Hypercorn streaming inline.

Usage: python bare_quart_stream.py PORT [TOKENS] [--uvloop]

`POST /predict` parses the body and returns a streamed response from an async generator yielding
TOKENS NDJSON lines, `{"token":0}` ... `{"token":TOKENS-1}`, one chunk each, with no work between
them. Same stack as litserve (Quart on Hypercorn, default asyncio loop, or uvloop with --uvloop; no access
log) without the queue, the worker thread and the hops between threads. Stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Response, request

app = Quart(__name__)
TOKENS = 32

_encoder = json.JSONEncoder(separators=(",", ":"))


async def _tokens() -> AsyncIterator[bytes]:
    for i in range(TOKENS):
        yield _encoder.encode({"token": i}).encode() + b"\n"


@app.post("/predict")
async def predict() -> Response:
    json.loads(await request.get_data(cache=False, as_text=False))
    response = Response(_tokens(), status=200, content_type="application/x-ndjson")
    response.timeout = None
    return response


@app.get("/health")
async def health() -> Response:
    return Response("ok", status=200, content_type="text/plain")


async def _serve(port: int) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"bare quart (streaming {TOKENS} tokens) on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    await serve(app, config, shutdown_trigger=stop.wait)


def main(argv: list[str]) -> None:
    global TOKENS
    args = [a for a in argv[1:] if a != "--uvloop"]
    port = int(args[0]) if args else 8000
    TOKENS = int(args[1]) if len(args) > 1 else 32
    new_loop = __import__("uvloop").new_event_loop if "--uvloop" in argv else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(_serve(port))


if __name__ == "__main__":
    main(sys.argv)
