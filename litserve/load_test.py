"""A built-in load test: drive a running server over real HTTP at given concurrencies, measure what clients see.

`run_benchmark` is the reusable core (`server.benchmark` calls it with the server's URL and key): for each
concurrency level it starts that many client threads, each with its own keep-alive connection
(`http.client`), which send the same request back to back until the level's duration is over; a request
sent before then is waited for (up to `timeout_s`), so every request sent is answered or failed and the
server's own counters agree with the result. A streamed answer counts when its body ends; the time to its
first chunk is measured too.

Where the clients run (`clients=`): by default in a child process (`_child_main`, which reads its orders
on stdin and writes the result as JSON), so they do not take the GIL from a server that
runs in the calling process: measured on 2 cores against a thread-mode server (c=8, a trivial API), client
threads in the server's process cut its throughput by 20-30% and raised p50 latency as much. `"thread"`
runs them in the calling process instead (no process start, about half a second).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, final

from litserve.load_test_view import result_html, result_text

__all__ = ["BenchmarkResult", "LevelResult", "run_benchmark"]

_START_TIMEOUT_S = 30.0  # for the client threads of a level to start
CONNECTION_FAILED = 0  # the status a request gets when no HTTP answer came (refused, reset, timed out)


@final
@dataclass(frozen=True, slots=True)
class LevelResult:
    """What the clients saw at one concurrency. Times in seconds; percentiles over answered requests.

    Stability: beta.

    Attributes:
        concurrency: clients sending at once, each on its own connection.
        sent: requests sent (every one was answered or failed before the level ended).
        duration_s: from the level's start until its last answer.
        requests_per_s: answers (of any status) per second.
        p50_s, p90_s, p99_s, mean_s: latency from sending to the end of the answer's body.
        status_counts: (HTTP status, how many), by status; status 0: no answer (connection failed).
        first_chunk_p50_s: streams only: the median time to the first chunk (None for plain answers).
    """

    concurrency: int
    sent: int
    duration_s: float
    requests_per_s: float
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None
    mean_s: float | None
    status_counts: tuple[tuple[int, int], ...] = ()
    first_chunk_p50_s: float | None = None

    @property
    def errors(self) -> int:
        """Requests that failed: an error status (>= 400) or no answer at all."""
        return sum(n for status, n in self.status_counts if status >= 400 or status == CONNECTION_FAILED)

    @property
    def errors_by_status(self) -> dict[int, int]:
        return {status: n for status, n in self.status_counts if status >= 400 or status == CONNECTION_FAILED}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LevelResult:
        """The inverse of `to_dict`."""
        fields = {name: values[name] for name in cls.__dataclass_fields__ if name != "status_counts"}
        counts = tuple(sorted((int(status), n) for status, n in values["status_counts"].items()))
        return cls(**fields, status_counts=counts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "sent": self.sent,
            "duration_s": self.duration_s,
            "requests_per_s": self.requests_per_s,
            "p50_s": self.p50_s,
            "p90_s": self.p90_s,
            "p99_s": self.p99_s,
            "mean_s": self.mean_s,
            "status_counts": {str(status): n for status, n in self.status_counts},
            "errors": self.errors,
            "first_chunk_p50_s": self.first_chunk_p50_s,
        }


@final
@dataclass(frozen=True, slots=True)
class BenchmarkResult:
    """A load test's levels, in the order they ran; a table and a plot in a notebook.

    Stability: beta.

    Attributes:
        url: where the requests went.
        levels: one `LevelResult` per concurrency.
        warmup_sent: requests sent while warming up (answered, counted by the server, not in `levels`).
    """

    url: str
    levels: tuple[LevelResult, ...]
    warmup_sent: int = 0
    duration_s: float = field(default=0.0)

    @property
    def sent(self) -> int:
        """Every request sent, warm-up included (what the server's counters grew by)."""
        return self.warmup_sent + sum(level.sent for level in self.levels)

    def level(self, concurrency: int) -> LevelResult:
        """The level that ran at `concurrency`; KeyError if none did."""
        for level in self.levels:
            if level.concurrency == concurrency:
                return level
        raise KeyError(f"no level ran at concurrency {concurrency}; these did: {[x.concurrency for x in self.levels]}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> BenchmarkResult:
        """The inverse of `to_dict`."""
        levels = tuple(LevelResult.from_dict(level) for level in values["levels"])
        return cls(values["url"], levels, values["warmup_sent"], values["duration_s"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "warmup_sent": self.warmup_sent,
            "duration_s": self.duration_s,
            "levels": [level.to_dict() for level in self.levels],
        }

    def _repr_html_(self) -> str:
        return result_html(self.url, [level.to_dict() for level in self.levels])

    def __repr__(self) -> str:
        return result_text(self.url, [level.to_dict() for level in self.levels])


@final
class _Client:
    """One client thread's connection and what it measured."""

    def __init__(self, target: urllib.parse.SplitResult, timeout_s: float) -> None:
        self._target = target
        self._timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None
        self.latencies_s: list[float] = []
        self.first_chunks_s: list[float] = []
        self.statuses: Counter[int] = Counter()

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            target = self._target
            kind = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
            self._connection = kind(target.hostname or "127.0.0.1", target.port, timeout=self._timeout_s)
        return self._connection

    def send(self, path: str, body: bytes, headers: Mapping[str, str]) -> None:
        started_s = time.perf_counter()
        try:
            connection = self._connect()
            connection.request("POST", path, body, dict(headers))
            response = connection.getresponse()
            first_s = time.perf_counter()
            response.read()
        except (OSError, http.client.HTTPException):  # refused, reset, timed out: no answer
            self.close()
            self.statuses[CONNECTION_FAILED] += 1
            return
        ended_s = time.perf_counter()
        self.statuses[response.status] += 1
        self.latencies_s.append(ended_s - started_s)
        if response.chunked:
            self.first_chunks_s.append(first_s - started_s)
        if response.will_close:
            self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _percentile(ordered: Sequence[float], percent: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, int(percent / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def _run_level(
    target: urllib.parse.SplitResult,
    body: bytes,
    headers: Mapping[str, str],
    concurrency: int,
    run: tuple[float, float],
) -> tuple[list[_Client], float]:
    """`concurrency` clients sending for `duration_s`; (the clients, the seconds until the last answer)."""
    duration_s, timeout_s = run
    path = target.path or "/"
    clients = [_Client(target, timeout_s) for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1, timeout=_START_TIMEOUT_S)
    end_s = [0.0]
    failures: list[BaseException] = []

    def client_main(client: _Client) -> None:
        try:
            start.wait()
            while time.perf_counter() < end_s[0]:
                client.send(path, body, headers)
        except BaseException as exc:  # noqa: B036 - not a failed request but a broken client: raised below
            failures.append(exc)
        finally:
            client.close()

    threads = [
        threading.Thread(target=client_main, args=(client,), name=f"litserve-load-{i}", daemon=True)
        for i, client in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    started_s = time.perf_counter()
    end_s[0] = started_s + duration_s
    start.wait()
    for thread in threads:  # each ends once its last request is answered or failed (bounded by timeout_s)
        thread.join()
    if failures:
        raise failures[0]
    return clients, time.perf_counter() - started_s


def _level(concurrency: int, clients: list[_Client], elapsed_s: float) -> LevelResult:
    latencies = sorted(x for client in clients for x in client.latencies_s)
    first_chunks = sorted(x for client in clients for x in client.first_chunks_s)
    statuses: Counter[int] = Counter()
    for client in clients:
        statuses.update(client.statuses)
    answered = len(latencies)
    return LevelResult(
        concurrency=concurrency,
        sent=sum(statuses.values()),
        duration_s=elapsed_s,
        requests_per_s=answered / elapsed_s if elapsed_s > 0 else 0.0,
        p50_s=_percentile(latencies, 50),
        p90_s=_percentile(latencies, 90),
        p99_s=_percentile(latencies, 99),
        mean_s=sum(latencies) / answered if answered else None,
        status_counts=tuple(sorted(statuses.items())),
        first_chunk_p50_s=_percentile(first_chunks, 50),
    )


def _check(concurrency: Sequence[int], duration_s: float, warmup_s: float, timeout_s: float) -> tuple[int, ...]:
    levels = tuple(concurrency)
    if not levels or not all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 1024 for c in levels):
        raise ValueError(f"concurrency must be whole numbers from 1 to 1024, e.g. (1, 8, 32); got {concurrency!r}")
    if not duration_s > 0 or not warmup_s >= 0 or not timeout_s > 0:
        raise ValueError(
            f"duration and timeout must be > 0 and warmup >= 0 seconds; got {duration_s!r}, {timeout_s!r}, {warmup_s!r}"
        )
    return levels


def run_benchmark(
    url: str,
    payload: Any,
    concurrency: Sequence[int] = (1, 8, 32),
    duration_s: float = 5.0,
    *,
    api_key: str | None = None,
    warmup_s: float = 1.0,
    timeout_s: float = 30.0,
    headers: Mapping[str, str] | None = None,
    clients: str = "process",
) -> BenchmarkResult:
    """POST `payload` (JSON, or raw bytes) to `url` at each concurrency for `duration_s` seconds.

    Stability: beta.

    Args:
        url: the endpoint's full URL, e.g. "http://127.0.0.1:8000/predict".
        payload: what each request sends: any JSON-able value, or bytes sent as they are.
        concurrency: the levels, run in this order; each runs that many clients at once.
        duration_s: seconds each level sends new requests (requests in flight then are waited for).
        api_key: sent as `X-API-Key` when given.
        warmup_s: seconds of load at the first level before measuring (not in the result's levels).
        timeout_s: seconds a client waits for an answer before counting the request failed (status 0).
        headers: more request headers.
        clients: "process" (default): the client threads run in a child process, off this process's GIL;
            "thread": in this process.

    Returns:
        A BenchmarkResult with one LevelResult per concurrency.

    Example:
        >>> result = run_benchmark(server.url + "/predict", {"input": 4.0}, (1, 8), 2.0)
        >>> result.level(8).requests_per_s  # doctest: +SKIP
    """
    levels = _check(concurrency, duration_s, warmup_s, timeout_s)
    target = urllib.parse.urlsplit(url)
    if target.scheme not in ("http", "https") or not target.hostname:
        raise ValueError(f"url must be an http(s) URL with a host, e.g. http://127.0.0.1:8000/predict; got {url!r}")
    if clients not in ("process", "thread"):
        raise ValueError(f"clients must be 'process' or 'thread', got {clients!r}")
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sent_headers = {"Content-Type": "application/json", **(headers or {})}
    if api_key is not None:
        sent_headers["X-API-Key"] = api_key
    if clients == "process":
        orders: dict[str, Any] = {"url": url, "body": base64.b64encode(body).decode(), "headers": sent_headers}
        orders.update(levels=levels, duration_s=duration_s, warmup_s=warmup_s, timeout_s=timeout_s)
        return _in_child_process(orders)
    return _measure(target, url, body, sent_headers, levels, (duration_s, warmup_s, timeout_s))


def _measure(
    target: urllib.parse.SplitResult,
    url: str,
    body: bytes,
    sent_headers: Mapping[str, str],
    levels: Sequence[int],
    times: tuple[float, float, float],
) -> BenchmarkResult:
    duration_s, warmup_s, timeout_s = times
    began_s = time.perf_counter()
    warmup_sent = 0
    if warmup_s > 0:
        clients, _ = _run_level(target, body, sent_headers, levels[0], (warmup_s, timeout_s))
        warmup_sent = sum(sum(client.statuses.values()) for client in clients)
    results = []
    for level in levels:
        clients, elapsed_s = _run_level(target, body, sent_headers, level, (duration_s, timeout_s))
        results.append(_level(level, clients, elapsed_s))
    return BenchmarkResult(url, tuple(results), warmup_sent, time.perf_counter() - began_s)


def _in_child_process(orders: dict[str, Any]) -> BenchmarkResult:
    """Run the clients in a child process (this interpreter, this sys.path); bounded in time."""
    levels = len(orders["levels"]) + (1 if orders["warmup_s"] > 0 else 0)
    bound_s = 60.0 + levels * (orders["duration_s"] + orders["timeout_s"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path for path in sys.path if path))
    done = subprocess.run(
        [sys.executable, "-c", "from litserve.load_test import _child_main; _child_main()"],
        input=json.dumps(orders),
        capture_output=True,
        text=True,
        timeout=bound_s,
        env=env,
        check=False,
    )
    try:
        if done.returncode != 0:
            raise ValueError(f"exit {done.returncode}")
        return BenchmarkResult.from_dict(json.loads(done.stdout))
    except (ValueError, KeyError) as exc:  # it died, or wrote something else than its result
        raise RuntimeError(f"the load test's client process failed ({exc}):\n{done.stderr[-4000:]}") from None


def _child_main() -> None:
    """The client process: orders on stdin, the result's `to_dict()` as JSON on stdout."""
    orders = json.loads(sys.stdin.read())
    url = orders["url"]
    times = (orders["duration_s"], orders["warmup_s"], orders["timeout_s"])
    body = base64.b64decode(orders["body"])
    result = _measure(urllib.parse.urlsplit(url), url, body, orders["headers"], orders["levels"], times)
    sys.stdout.write(json.dumps(result.to_dict()))
