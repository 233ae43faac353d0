"""Streaming benchmark: litserve with stream=True against a bare Quart app streaming the same lines inline.

Every request is `POST /predict` with `{"input": 1}`; the answer is 32 NDJSON lines `{"token":0}` ...
`{"token":31}` produced with no work between them, so the numbers are all streaming overhead.

Servers (each its own subprocess on 127.0.0.1, pinned to core 0):
  litserve  servers/litserve_stream.py: LitAPI(stream=True), predict yields {"token": i},
            encode_response passes the chunks through
  bare      servers/bare_quart_stream.py: Quart on Hypercorn, the POST handler returns a streamed
            response from an async generator yielding the same lines
  litserve@before  litserve importing litserve from --before DIR (added with --before)

The load generator is benchmarks/stream_client.py (raw asyncio HTTP/1.1 keep-alive connections,
chunked decoding by hand), run as a subprocess pinned to core 1. It measures tokens/s, requests/s and
the time to first token (request written -> first complete line received), and checks that every
response has exactly 32 lines and ends properly.

Each cell (round x concurrency x server) starts a fresh server, polls GET /health, checks one
answer, runs the client (warm-up, then measurement), and stops the server by PID; the two servers
alternate and which goes first flips each time.

Usage: python benchmarks/streaming.py [--duration 10] [--rounds 1] [--concurrency 1,16] [--before DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from report import Cell, before_after, git_state, markdown_table, print_before_after, verdict, write_report
from runner import (
    HERE,
    SERVERS_DIR,
    Cpus,
    add_run_options,
    int_list,
    interleaved,
    logs_dir,
    pick_cpus,
    say_if_busy,
    server_names,
    serving,
    without_before,
)

CLIENT = HERE / "stream_client.py"
SERVER_SCRIPTS = {
    "litserve": SERVERS_DIR / "litserve_stream.py",
    "bare": SERVERS_DIR / "bare_quart_stream.py",
}

# The project's targets.
TARGET_TOKENS_RATIO = 0.8  # litserve tokens/s over bare's, at each concurrency
TARGET_TTFT_P50_C1_MS = 2.0  # litserve's TTFT p50 at concurrency 1

_FIGURES = ("tokens_per_s", "requests_per_s", "ttft_p50_ms", "ttft_p99_ms", "client_cpu_pct")


def cell_json(cell: Cell) -> dict[str, Any]:
    return {
        "server": cell.server,
        "concurrency": cell.concurrency,
        **{name: cell.median(name) for name in _FIGURES},
        "requests": sum(run["requests"] for run in cell.runs),
        "tokens": sum(run["tokens"] for run in cell.runs),
        "errors": sum(run["errors"] for run in cell.runs),
        "error_examples": [e for run in cell.runs for e in run["error_examples"]][:5],
        "server_log_problems": cell.server_log_problems,
        "rounds": cell.runs,
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
    name: str, concurrency: int, args: argparse.Namespace, cpus: Cpus, log_path: Path
) -> tuple[dict[str, Any], list[str]]:
    script = SERVER_SCRIPTS[without_before(name)]

    def command(port: int) -> list[str]:
        return [sys.executable, str(script), str(port), str(args.tokens)]

    with serving(name, command, cpus[0], log_path, args.startup_timeout, args.before) as server:
        check_answer(server.base_url + "/predict", args.tokens)
        result = run_client(server.port, concurrency, args, cpus[1])
    return result, server.log_problems()


def table(cells: list[Cell]) -> str:
    columns = ["server", "concurrency", "tokens/s", "req/s", "TTFT p50 ms", "TTFT p99 ms", "errors", "client CPU %"]
    rows = []
    for cell in cells:
        row = cell_json(cell)
        rows.append(
            [cell.server, str(cell.concurrency), f"{row['tokens_per_s']:.0f}", f"{row['requests_per_s']:.0f}"]
            + [f"{row['ttft_p50_ms']:.3f}", f"{row['ttft_p99_ms']:.3f}", str(row["errors"])]
            + [f"{row['client_cpu_pct']:.0f}"]
        )
    return markdown_table(columns, rows)


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


def print_ratios(found: dict[str, float | None]) -> None:
    for name, value in found.items():
        if value is None:
            continue
        if name.startswith("litserve_over_bare"):
            print(f"{name}: {value:.3f} (target >= {TARGET_TOKENS_RATIO}: {verdict(value >= TARGET_TOKENS_RATIO)})")
        else:
            ok = value < TARGET_TTFT_P50_C1_MS
            print(f"{name}: {value:.3f} ms (target < {TARGET_TTFT_P50_C1_MS}: {verdict(ok)})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(parser, duration_s=10.0, warmup_s=1.0, output="streaming.json", load="load")
    parser.add_argument("--count", type=int, default=None, help="also stop a cell after this many requests")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated connection counts (default 1,16)")
    parser.add_argument("--tokens", type=int, default=32, help="lines per response (default 32)")
    parser.add_argument("--servers", default="bare,litserve", help="which servers (default bare,litserve)")
    args = parser.parse_args(argv)
    args.concurrency_levels = int_list(parser, "--concurrency", args.concurrency)
    args.server_names = server_names(parser, args, lambda name: name == "litserve")
    unknown = [s for s in args.server_names if without_before(s) not in SERVER_SCRIPTS]
    if unknown:
        parser.error(f"unknown servers {unknown}; pick from {sorted(SERVER_SCRIPTS)} (and litserve@before)")
    if args.rounds < 1 or args.duration <= 0 or args.tokens < 1 or not args.concurrency_levels:
        parser.error("--rounds, --duration and --tokens must be positive and --concurrency non-empty")
    return args


def run_cells(args: argparse.Namespace, cpus: Cpus) -> tuple[list[Cell], bool]:
    """Every round, concurrency and server in ABBA order; the cells, and whether any request failed."""
    logs = logs_dir()
    cells = {(n, c): Cell(n, c) for c in args.concurrency_levels for n in args.server_names}
    failed = False
    for round_index, concurrency, name in interleaved(args.server_names, args.concurrency_levels, args.rounds):
        log_path = logs / f"stream-{name}-c{concurrency}-r{round_index + 1}.log"
        result, problems = measure(name, concurrency, args, cpus, log_path)
        cells[name, concurrency].record(result, log_path, problems)
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
    return [cells[n, c] for n in args.server_names for c in args.concurrency_levels], failed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    git_at_start = git_state()  # litserve may change while a long run goes on: record both ends
    say_if_busy()
    cpus = pick_cpus(args.pin)
    print(
        f"stream client: {args.duration:.0f} s per cell after {args.warmup:.0f} s warm-up, {args.tokens} tokens, "
        f"rounds={args.rounds}, server cpu={cpus[0]}, client cpu={cpus[1]}"
    )
    ordered, failed = run_cells(args, cpus)
    print()
    print(table(ordered))
    print()
    found = ratios(ordered)
    print_ratios(found)
    compared = before_after(ordered, lambda cell: f"c{cell.concurrency}", "tokens_per_s", "ttft_p50_ms")
    print_before_after(compared)
    settings = {
        "duration_s": args.duration,
        "count": args.count,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "tokens": args.tokens,
        "concurrency": args.concurrency_levels,
        "server_cpu": cpus[0],
        "client_cpu": cpus[1],
    }
    targets = {
        "litserve_over_bare_tokens_per_s": f">= {TARGET_TOKENS_RATIO} at each concurrency",
        "litserve_ttft_p50_ms_c1": f"< {TARGET_TTFT_P50_C1_MS}",
    }
    table_json = [cell_json(cell) for cell in ordered]
    write_report(
        args.output,
        settings,
        git_at_start,
        args.before,
        table=table_json,
        ratios=found,
        targets=targets,
        before_after=compared,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
