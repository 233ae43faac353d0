"""Streaming benchmark: litserve with stream=True against a bare Quart app streaming the same lines inline.

Every request is `POST /predict` with `{"input": 1}`; the answer is 32 NDJSON lines `{"token":0}` ...
`{"token":31}` produced with no work between them, so the numbers are all streaming overhead.

Servers (each its own subprocess on 127.0.0.1, pinned to core 0):
  litserve  servers/litserve_stream.py: LitAPI(stream=True), predict yields {"token": i},
            encode_response passes the chunks through
  bare      servers/bare_quart_stream.py: Quart on Hypercorn, the POST handler returns a streamed
            response from an async generator yielding the same lines

The load generator is benchmarks/stream_client.py (raw asyncio HTTP/1.1 keep-alive connections,
chunked decoding by hand), run as a subprocess pinned to core 1. It measures tokens/s, requests/s and
the time to first token (request written -> first complete line received), and checks that every
response has exactly 32 lines and ends properly.

Each cell (round x concurrency x server) starts a fresh server, polls GET /health, checks one
answer, runs the client (warm-up, then measurement), and stops the server by PID; the two servers
alternate and which goes first flips each time.

Usage: python benchmarks/streaming.py [--duration 10] [--rounds 1] [--concurrency 1,16]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from run import ServerProcess, free_port, git_state, interleaved, pick_cpus

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
CLIENT = HERE / "stream_client.py"
SERVER_SCRIPTS = {
    "litserve": HERE / "servers" / "litserve_stream.py",
    "bare": HERE / "servers" / "bare_quart_stream.py",
}

# The project's targets.
TARGET_TOKENS_RATIO = 0.8  # litserve tokens/s over bare's, at each concurrency
TARGET_TTFT_P50_C1_MS = 2.0  # litserve's TTFT p50 at concurrency 1

_FIGURES = ("tokens_per_s", "requests_per_s", "ttft_p50_ms", "ttft_p99_ms", "client_cpu_pct")


@dataclass
class Cell:
    """One (server, concurrency) cell over all rounds: the client's reports and the server's log problems."""

    server: str
    concurrency: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    server_log_problems: list[str] = field(default_factory=list)

    def median(self, name: str) -> float:
        values = [run[name] for run in self.runs if run[name] is not None]
        return statistics.median(values) if values else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "concurrency": self.concurrency,
            **{name: self.median(name) for name in _FIGURES},
            "requests": sum(run["requests"] for run in self.runs),
            "tokens": sum(run["tokens"] for run in self.runs),
            "errors": sum(run["errors"] for run in self.runs),
            "error_examples": [e for run in self.runs for e in run["error_examples"]][:5],
            "server_log_problems": self.server_log_problems,
            "rounds": self.runs,
        }


def check_answer(url: str, tokens: int) -> None:
    """One request by urllib (which undoes the chunking): exactly TOKENS lines {"token": i}."""
    request = urllib.request.Request(
        url, data=b'{"input":1}', headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10.0) as response:
        body = response.read()
        content_type = response.headers.get("Content-Type", "")
    lines = body.decode().splitlines()
    if [json.loads(line) for line in lines] != [{"token": i} for i in range(tokens)]:
        raise RuntimeError(f"{url} answered {body[:200]!r}..., expected {tokens} lines {{'token': i}}")
    if "ndjson" not in content_type:
        raise RuntimeError(f"{url} answered with Content-Type {content_type!r}, expected application/x-ndjson")


def run_client(port: int, concurrency: int, args: argparse.Namespace, cpu: int | None) -> dict[str, Any]:
    command = [
        sys.executable,
        str(CLIENT),
        str(port),
        f"--concurrency={concurrency}",
        f"--duration={args.duration}",
        f"--warmup={args.warmup}",
        f"--tokens={args.tokens}",
    ]
    if args.count is not None:
        command.append(f"--count={args.count}")
    if cpu is not None:
        command.append(f"--cpu={cpu}")
    # The client stops by itself after warm-up + duration; the timeout only guards against a wedged run.
    limit_s = args.warmup + args.duration + 60
    done = subprocess.run(command, capture_output=True, text=True, timeout=limit_s, check=False)
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"the client printed nothing (exit {done.returncode}):\n{done.stderr}")
    return dict(json.loads(lines[-1]))


def measure(
    name: str, concurrency: int, args: argparse.Namespace, cpus: tuple[int | None, int | None], log_path: Path
) -> tuple[dict[str, Any], list[str]]:
    server_cpu, client_cpu = cpus
    port = free_port()
    command = [sys.executable, str(SERVER_SCRIPTS[name]), str(port), str(args.tokens)]
    server = ServerProcess(name, port, server_cpu, log_path, command=command)
    try:
        server.wait_ready(args.startup_timeout)
        check_answer(server.base_url + "/predict", args.tokens)
        result = run_client(port, concurrency, args, client_cpu)
        if server.process.poll() is not None:
            raise RuntimeError(f"{name} died under load (exit {server.process.returncode}); see {log_path}")
    finally:
        code = server.stop()
    problems = server.log_problems()
    if code not in (0, None) and code != -signal.SIGINT:
        problems.append(f"exit code {code}")
    return result, problems


def markdown_table(cells: list[Cell]) -> str:
    lines = [
        "| server | concurrency | tokens/s | req/s | TTFT p50 ms | TTFT p99 ms | errors | client CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:
        row = cell.as_json()
        lines.append(
            f"| {cell.server} | {cell.concurrency} | {row['tokens_per_s']:.0f} | {row['requests_per_s']:.0f} "
            f"| {row['ttft_p50_ms']:.3f} | {row['ttft_p99_ms']:.3f} | {row['errors']} | {row['client_cpu_pct']:.0f} |"
        )
    return "\n".join(lines)


def ratios(cells: list[Cell]) -> dict[str, float | None]:
    by_key = {(cell.server, cell.concurrency): cell for cell in cells}
    found: dict[str, float | None] = {}
    for concurrency in sorted({cell.concurrency for cell in cells}):
        ours, bare = by_key.get(("litserve", concurrency)), by_key.get(("bare", concurrency))
        if ours is not None and bare is not None:
            found[f"litserve_over_bare_tokens_per_s_c{concurrency}"] = ours.median("tokens_per_s") / bare.median(
                "tokens_per_s"
            )
    if ("litserve", 1) in by_key:
        found["litserve_ttft_p50_ms_c1"] = by_key["litserve", 1].median("ttft_p50_ms")
    return found


def _verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measured load per cell (default 10)")
    parser.add_argument("--count", type=int, default=None, help="also stop a cell after this many requests")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load per cell (0: none)")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated connection counts (default 1,16)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything N times; report medians")
    parser.add_argument("--tokens", type=int, default=32, help="lines per response (default 32)")
    parser.add_argument("--servers", default="bare,litserve", help="which servers (default bare,litserve)")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin the server to one core and the client to another (default on)",
    )
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="seconds to wait for GET /health")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "streaming.json", help="where to write JSON")
    args = parser.parse_args(argv)
    args.concurrency_levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.server_names = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in args.server_names if s not in SERVER_SCRIPTS]
    if unknown:
        parser.error(f"unknown servers {unknown}; pick from {sorted(SERVER_SCRIPTS)}")
    if args.rounds < 1 or args.duration <= 0 or args.tokens < 1 or not args.concurrency_levels:
        parser.error("--rounds, --duration and --tokens must be positive and --concurrency non-empty")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    git_at_start = git_state()  # litserve may change while a long run goes on: record both ends
    cpus = pick_cpus(args.pin)
    logs_dir = RESULTS_DIR / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"stream client: {args.duration:.0f} s per cell after {args.warmup:.0f} s warm-up, {args.tokens} tokens, "
        f"rounds={args.rounds}, server cpu={cpus[0]}, client cpu={cpus[1]}"
    )
    cells = {(n, c): Cell(n, c) for c in args.concurrency_levels for n in args.server_names}
    failed = False
    for round_index, concurrency, name in interleaved(args.server_names, args.concurrency_levels, args.rounds):
        log_path = logs_dir / f"stream-{name}-c{concurrency}-r{round_index + 1}.log"
        result, problems = measure(name, concurrency, args, cpus, log_path)
        cell = cells[name, concurrency]
        cell.runs.append(result)
        cell.server_log_problems.extend(f"{log_path.name}: {line}" for line in problems)
        failed = failed or result["errors"] > 0
        print(
            f"round {round_index + 1} {name:>8} c={concurrency:<3} {result['tokens_per_s']:9.0f} tokens/s "
            f"{result['requests_per_s']:7.0f} req/s  TTFT p50 {result['ttft_p50_ms']:.3f} ms "
            f"p99 {result['ttft_p99_ms']:.3f} ms  requests {result['requests']}  errors {result['errors']}  "
            f"client CPU {result['client_cpu_pct']:.0f}%",
            flush=True,
        )
        for line in result["error_examples"][:3] + problems[:5]:
            print(f"    {line}", flush=True)
    ordered = [cells[n, c] for n in args.server_names for c in args.concurrency_levels]
    print()
    print(markdown_table(ordered))
    print()
    found = ratios(ordered)
    for name, value in found.items():
        if value is None:
            continue
        if name.startswith("litserve_over_bare"):
            print(f"{name}: {value:.3f} (target >= {TARGET_TOKENS_RATIO}: {_verdict(value >= TARGET_TOKENS_RATIO)})")
        else:
            ok = value < TARGET_TTFT_P50_C1_MS
            print(f"{name}: {value:.3f} ms (target < {TARGET_TTFT_P50_C1_MS}: {_verdict(ok)})")
    report = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "duration_s": args.duration,
            "count": args.count,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "tokens": args.tokens,
            "concurrency": args.concurrency_levels,
            "server_cpu": cpus[0],
            "client_cpu": cpus[1],
        },
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "git": {"at_start": git_at_start, "at_end": git_state()},
        "table": [cell.as_json() for cell in ordered],
        "ratios": found,
        "targets": {
            "litserve_over_bare_tokens_per_s": f">= {TARGET_TOKENS_RATIO} at each concurrency",
            "litserve_ttft_p50_ms_c1": f"< {TARGET_TTFT_P50_C1_MS}",
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
