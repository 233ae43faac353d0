"""A hot swap under load: c=16 clients post to a real server while it swaps V1 for V2 (`server.swap`).

The server (`servers/litserve_hot_swap.py`) runs in its own process. Each client thread posts in a loop over
one keep-alive connection. After `--before-s` seconds the server is told to swap. V2's setup() sleeps
`--setup-s` seconds to stand for loading a model, so the swap window shows whether V1 serves on at full speed
meanwhile. The load then runs `--after-s` seconds more. All of it happens in one run, for each worker mode:

- the longest gap between two consecutive answers (any client) inside the swap window, and before it;
- p50/p99 latency of the requests in flight during the swap window (from the swap() call until it returned:
  V2's setup(), the switch, V1's last requests, V1's workers stopped), and of those answered in a window as
  long just before it;
- failed requests, answers per version, and answers out of order (a V1 answer after that client saw V2);
- connections the clients opened (a swap must not close one: it should equal the concurrency).

The figures also go to a JSON report (--output, default benchmarks/results/hot_swap.json).

Usage: python benchmarks/hot_swap.py [--concurrency 16] [--before-s 3] [--after-s 2] [--setup-s 1]
       [--worker-modes thread,process] [--output PATH]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runner import RESULTS_DIR, SERVERS_DIR, free_port

SERVER_SCRIPT = SERVERS_DIR / "litserve_hot_swap.py"


@dataclass
class Client:
    """One keep-alive connection posting in a loop; each answer as (sent, done, version or 'error')."""

    port: int
    answers: list[tuple[float, float, str]] = field(default_factory=list)
    connections: int = 0

    def run(self, stop: threading.Event) -> None:
        connection = None
        body = json.dumps({"input": 3}).encode()
        while not stop.is_set():
            if connection is None or connection.sock is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                connection.connect()
                self.connections += 1
            sent_s = time.monotonic()
            try:
                connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
                version = json.loads(data)["version"] if response.status == 200 else "error"
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                connection.close()
                version = "error"
            self.answers.append((sent_s, time.monotonic(), version))
        if connection is not None:
            connection.close()


@dataclass(frozen=True)
class Result:
    worker_mode: str
    concurrency: int
    swap_s: float  # how long swap() took (V2's setup included)
    first_v2_after_s: float  # from the swap() call to the first V2 answer
    longest_gap_ms_during: float
    longest_gap_ms_before: float
    p50_ms_before: float
    p99_ms_before: float
    p50_ms_during: float
    p99_ms_during: float
    answers_before: int
    answers_during: int
    errors: int
    out_of_order: int
    by_version: dict[str, int]
    connections: int


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def longest_gap_ms(done: list[float], start_s: float, end_s: float) -> float:
    """The longest time without any answer between start_s and end_s (the window's edges count)."""
    inside = [start_s] + [t for t in done if start_s < t < end_s] + [end_s]
    return max(b - a for a, b in zip(inside, inside[1:], strict=False)) * 1000


def measure(worker_mode: str, args: argparse.Namespace) -> Result:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), *sys.path])}
    command = [sys.executable, str(SERVER_SCRIPT), str(port), worker_mode, str(args.setup_s)]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert server.stdin is not None and server.stdout is not None
    try:
        assert server.stdout.readline().strip() == "ready", "the server did not start"
        clients, stop = [Client(port) for _ in range(args.concurrency)], threading.Event()
        threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in clients]
        for thread in threads:
            thread.start()
        load_start_s = time.monotonic()
        stop.wait(args.before_s)
        server.stdin.write("swap\n")
        server.stdin.flush()
        _, swap_start, swap_end = server.stdout.readline().split()
        start_s, end_s = float(swap_start), float(swap_end)
        stop.wait(args.after_s)
        stop.set()
        for thread in threads:
            thread.join(60)
        server.stdin.write("stop\n")
        server.stdin.flush()
        server.wait(60)
    finally:
        if server.poll() is None:
            server.kill()
    return summarize(worker_mode, args, clients, load_start_s + 0.5, start_s, end_s)


def summarize(
    worker_mode: str, args: argparse.Namespace, clients: list[Client], warm_s: float, start_s: float, end_s: float
) -> Result:
    answers = [a for c in clients for a in c.answers]
    # "Before" is a window as long as the swap's, just before it (after the warm-up): like with like.
    warm_s = max(warm_s, start_s - (end_s - start_s))
    before = [done - sent for sent, done, _ in answers if warm_s <= sent and done < start_s]
    during = [done - sent for sent, done, _ in answers if sent < end_s and done > start_s]
    done = sorted(d for _, d, version in answers if version != "error")
    first_v2 = min((d for _, d, version in answers if version == "v2"), default=float("nan"))
    out_of_order = 0
    for client in clients:
        seen_v2 = False
        for _, _, version in client.answers:
            seen_v2 = seen_v2 or version == "v2"
            out_of_order += seen_v2 and version == "v1"
    by_version: dict[str, int] = {}
    for _, _, version in answers:
        by_version[version] = by_version.get(version, 0) + 1
    return Result(
        worker_mode=worker_mode,
        concurrency=args.concurrency,
        swap_s=end_s - start_s,
        first_v2_after_s=first_v2 - start_s,
        longest_gap_ms_during=longest_gap_ms(done, start_s, end_s),
        longest_gap_ms_before=longest_gap_ms(done, warm_s, start_s),
        p50_ms_before=percentile(before, 0.5),
        p99_ms_before=percentile(before, 0.99),
        p50_ms_during=percentile(during, 0.5),
        p99_ms_during=percentile(during, 0.99),
        answers_before=len(before),
        answers_during=len(during),
        errors=by_version.get("error", 0),
        out_of_order=out_of_order,
        by_version=by_version,
        connections=sum(c.connections for c in clients),
    )


def table(results: list[Result]) -> str:
    lines = [
        "| worker mode | swap (s) | first v2 after (s) | longest gap before / during (ms) "
        "| p50 before / during (ms) | p99 before / during (ms) | errors | out of order | connections |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.worker_mode} | {r.swap_s:.2f} | {r.first_v2_after_s:.2f} "
            f"| {r.longest_gap_ms_before:.1f} / {r.longest_gap_ms_during:.1f} "
            f"| {r.p50_ms_before:.1f} / {r.p50_ms_during:.1f} | {r.p99_ms_before:.1f} / {r.p99_ms_during:.1f} "
            f"| {r.errors} | {r.out_of_order} | {r.connections} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--before-s", type=float, default=3.0, help="seconds of load before the swap")
    parser.add_argument("--after-s", type=float, default=2.0, help="seconds of load after swap() returned")
    parser.add_argument("--setup-s", type=float, default=1.0, help="seconds V2's setup() takes")
    parser.add_argument("--worker-modes", default="thread,process")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "hot_swap.json")
    args = parser.parse_args()
    results = [measure(mode, args) for mode in args.worker_modes.split(",")]
    print(table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    print(f"report: {args.output}")
    if any(r.errors or r.out_of_order for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
