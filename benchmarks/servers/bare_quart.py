"""Benchmark server "bare": the ceiling, a bare Quart app on Hypercorn answering inline.

Same stack as litserve (Quart on Hypercorn, default asyncio loop, or uvloop with --uvloop; no access log) without the
queue, the worker thread and the thread-to-loop hop. Usage: python bare_quart.py PORT [--uvloop].
Stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Response, request

app = Quart(__name__)

_encoder = json.JSONEncoder(separators=(",", ":"))


@app.post("/predict")
async def predict() -> Response:
    payload = json.loads(await request.get_data(cache=False, as_text=False))
    x = payload["input"]
    return Response(_encoder.encode({"output": x * x}), status=200, content_type="application/json")


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
    print(f"bare quart on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    await serve(app, config, shutdown_trigger=stop.wait)


def main(argv: list[str]) -> None:
    args = [a for a in argv[1:] if a != "--uvloop"]
    port = int(args[0]) if args else 8000
    new_loop = __import__("uvloop").new_event_loop if "--uvloop" in argv else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(_serve(port))


if __name__ == "__main__":
    main(sys.argv)
