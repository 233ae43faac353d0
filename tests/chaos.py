"""A chaos load: many raw-socket clients, each request tagged with an id its answer must echo, mixed
with faults (hooks raising, predicts past the timeout, hang-ups, malformed, oversized and random
bodies, stalled bodies, a missing API key). Used by tests/runtime/test_chaos.py at small scale and by
benchmarks/chaos.py for the large run.

`ChaosReport.problems()` lists every broken promise: an answer lost or mixed up, a fault answered with
a status its kind does not allow, counters that disagree with what the clients saw.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from litserve import HTTPException, LitAPI, LitServer
from litserve.status import ServerStatus

CLOSED = 0  # the server closed the connection without an answer
NO_ANSWER = -1  # the client hung up on purpose: nothing to wait for
LOST = -2  # the client waited its whole timeout for an answer that never came

MAX_PAYLOAD_BYTES = 64 * 1024
API_KEY = "chaos-key"

# Each kind of request, and the statuses it may get (CLOSED: the connection closes without an answer).
ALLOWED: dict[str, frozenset[int]] = {
    "ok": frozenset({200}),
    "reject": frozenset({418}),  # decode_request raises HTTPException(418)
    "raise": frozenset({500}),  # decode_request raises RuntimeError
    "slow": frozenset({504}),  # predict runs past the timeout
    "malformed": frozenset({400}),  # not JSON
    "oversized": frozenset({413}),  # Content-Length above max_payload_size
    "random": frozenset({400, CLOSED}),  # bytes that are not HTTP
    "slow-body": frozenset({408, CLOSED}),  # half a body, then nothing: the read timeout ends it
    "no-key": frozenset({401}),  # only when the server has an API key
    "hangup-before-body": frozenset({NO_ANSWER}),
    "hangup-after-body": frozenset({NO_ANSWER}),
}
FAULT_SHARE = {  # of every 100 requests; the rest are "ok"
    "reject": 4,
    "raise": 4,
    "slow": 1,
    "malformed": 4,
    "oversized": 2,
    "random": 3,
    "slow-body": 1,
    "no-key": 3,
    "hangup-before-body": 3,
    "hangup-after-body": 3,
}


class ChaosAPI(LitAPI):
    """{"id": i, "kind": k, "input": x} -> {"id": i, "output": x*x}; the kind decides how it fails."""

    def decode_request(self, request: Any) -> Any:
        kind = request["kind"]
        if kind == "reject":
            raise HTTPException(418, "rejected on purpose")
        if kind == "raise":
            raise RuntimeError("raised on purpose")
        return request["id"], request["input"]

    def predict(self, item: Any) -> Any:
        if self.max_batch_size > 1:
            return [(rid, x * x) for rid, x in item]
        rid, x = item
        return rid, x * x

    def encode_response(self, output: Any) -> Any:
        rid, value = output
        return {"id": rid, "output": value}


class SlowAPI(LitAPI):
    """Sleeps past the server's timeout: every request is a 504."""

    def __init__(self, sleep_s: float) -> None:
        super().__init__(api_path="/slow")
        self.sleep_s = sleep_s

    def decode_request(self, request: Any) -> Any:
        return request

    def predict(self, x: Any) -> Any:
        threading.Event().wait(self.sleep_s)  # a hook that simply takes too long
        return x

    def encode_response(self, output: Any) -> Any:
        return output


def chaos_server(worker_mode: str, batching: bool, api_key: bool, timeout_s: float = 1.0) -> LitServer:
    """The server the chaos load runs against (not started)."""
    batch = {"max_batch_size": 8, "batch_timeout": 0.005} if batching else {}
    return LitServer(
        [ChaosAPI(**batch), SlowAPI(sleep_s=timeout_s * 1.5)],
        accelerator="cpu",
        workers_per_device=2,
        worker_mode=worker_mode,
        timeout=timeout_s,
        api_key=API_KEY if api_key else None,
        max_payload_size=MAX_PAYLOAD_BYTES,
        read_timeout=timeout_s,
    )


@dataclass
class ChaosReport:
    """What every client saw, and what the server counted afterwards."""

    kinds: list[str]
    statuses: list[int]
    mixed: list[int] = field(default_factory=list)  # request numbers answered with another request's answer
    server_5xx: int = 0
    leftover: tuple[int, int] = (0, 0)  # (queued, in flight) once the load ended
    seconds: float = 0.0

    def unexpected(self) -> list[tuple[int, str, int]]:
        return [
            (n, kind, status)
            for n, (kind, status) in enumerate(zip(self.kinds, self.statuses, strict=True))
            if status != LOST and status not in ALLOWED[kind]
        ]

    @property
    def lost(self) -> int:
        return sum(status == LOST for status in self.statuses)

    @property
    def client_5xx(self) -> int:
        return sum(500 <= status < 600 for status in self.statuses)

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{self.lost} answers lost")
        if self.mixed:
            found.append(f"{len(self.mixed)} answers mixed up, e.g. requests {self.mixed[:5]}")
        if self.unexpected():
            found.append(f"{len(self.unexpected())} unexpected statuses, e.g. {self.unexpected()[:5]}")
        if self.server_5xx != self.client_5xx:
            found.append(f"the server counted {self.server_5xx} 5xx, the clients saw {self.client_5xx}")
        if self.leftover != (0, 0):
            found.append(f"(queued, in flight) stayed at {self.leftover}")
        return found

    def summary(self) -> str:
        by_status = collections.Counter(self.statuses)
        shown = ", ".join(f"{_name(s)}={n}" for s, n in sorted(by_status.items()))
        return (
            f"{len(self.kinds)} requests in {self.seconds:.1f} s: lost={self.lost} mixed={len(self.mixed)} "
            f"unexpected={len(self.unexpected())} 5xx server={self.server_5xx} clients={self.client_5xx} "
            f"leftover={self.leftover} [{shown}]"
        )


def _name(status: int) -> str:
    return {CLOSED: "closed", NO_ANSWER: "hung-up", LOST: "lost"}.get(status, str(status))


def chaos_kinds(total: int, seed: int, with_key: bool) -> list[str]:
    """`total` request kinds in a seeded random order, faults in FAULT_SHARE proportions."""
    kinds: list[str] = []
    for kind, share in FAULT_SHARE.items():
        if kind == "no-key" and not with_key:
            continue
        kinds += [kind] * max(1, total * share // 100)
    kinds = kinds[:total] + ["ok"] * max(0, total - len(kinds))
    random.Random(seed).shuffle(kinds)
    return kinds


def run_chaos(
    server: LitServer, total: int, concurrency: int, seed: int = 0, client_timeout_s: float = 30.0
) -> ChaosReport:
    """Drive `total` requests at `concurrency` against a started `server`; wait for its counters to settle."""
    port = server.port
    assert port is not None
    with_key = _has_key(server)
    kinds = chaos_kinds(total, seed, with_key)
    started = time.monotonic()
    statuses, mixed = asyncio.run(_drive(port, kinds, concurrency, client_timeout_s, with_key))
    report = ChaosReport(kinds, statuses, mixed, seconds=time.monotonic() - started)
    status = _settled(server)
    report.server_5xx = sum(e.server_errors + e.timed_out for e in status.endpoints)
    report.leftover = (sum(e.queue_depth for e in status.endpoints), sum(e.in_flight for e in status.endpoints))
    return report


def _has_key(server: LitServer) -> bool:
    running = server._life.running
    return running is not None and running.api_key is not None


def _settled(server: LitServer, deadline_s: float = 30.0) -> ServerStatus:
    """The status once nothing is queued or in flight (bounded wait; what is left is reported)."""
    end = time.monotonic() + deadline_s
    pause = threading.Event()
    while True:
        status = server.status
        idle = all(e.queue_depth == 0 and e.in_flight == 0 for e in status.endpoints)
        if idle or time.monotonic() >= end:
            return status
        pause.wait(0.02)


async def _drive(
    port: int, kinds: Sequence[str], concurrency: int, timeout_s: float, with_key: bool
) -> tuple[list[int], list[int]]:
    gate = asyncio.Semaphore(concurrency)
    statuses = [LOST] * len(kinds)
    mixed: list[int] = []

    async def one(n: int, kind: str) -> None:
        async with gate:
            status, body = await _one_request(port, n, kind, timeout_s, with_key)
        statuses[n] = status
        if kind == "ok" and status == 200 and json.loads(body) != {"id": f"r{n}", "output": n * n}:
            mixed.append(n)

    await asyncio.gather(*(one(n, kind) for n, kind in enumerate(kinds)))
    return statuses, mixed


async def _one_request(port: int, n: int, kind: str, timeout_s: float, with_key: bool) -> tuple[int, bytes]:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout_s)
    except (OSError, TimeoutError):
        return LOST, b""
    try:
        return await asyncio.wait_for(_exchange(reader, writer, port, n, kind, with_key), timeout_s)
    except TimeoutError:
        return LOST, b""
    except (ConnectionError, asyncio.IncompleteReadError):
        return CLOSED, b""
    finally:
        _reset_or_close(writer, reset=kind.startswith("hangup"))


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, n: int, kind: str, with_key: bool
) -> tuple[int, bytes]:
    request, send_whole = _request_bytes(port, n, kind, with_key)
    writer.write(request if send_whole else request[: len(request) // 2 + 1])
    await writer.drain()
    if kind.startswith("hangup"):
        return NO_ANSWER, b""
    return await _read_response(reader)


def _request_bytes(port: int, n: int, kind: str, with_key: bool) -> tuple[bytes, bool]:
    """The bytes to send, and whether to send them whole (else only the first half, then stall)."""
    if kind == "random":
        return random.Random(n).randbytes(64) + b"\r\n\r\n", True
    path = "/slow" if kind == "slow" else "/predict"
    body = json.dumps({"id": f"r{n}", "kind": kind, "input": n}).encode()
    length = len(body)
    if kind == "malformed":
        body = body[:-1] + b",,"
        length = len(body)
    elif kind == "oversized":
        length, body = MAX_PAYLOAD_BYTES + 1, b""
    key = f"X-API-Key: {API_KEY}\r\n" if with_key and kind != "no-key" else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{key}"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + body, kind not in ("slow-body", "hangup-before-body")


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    return status, await reader.read()


def _reset_or_close(writer: asyncio.StreamWriter, reset: bool) -> None:
    if reset:  # an abortive close: the server sees a reset, as from a client that crashed
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
