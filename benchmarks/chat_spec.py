"""The OpenAI spec's streaming overhead: OpenAISpec's Server-Sent Events against litserve's plain NDJSON stream
of the same generator.

Both servers run a predict that yields TOKENS short strings "t0 " ... with no work between them, so the
numbers are all streaming overhead:

  ndjson  servers/litserve_stream_text.py: LitAPI(stream=True), `POST /predict`; encode_response yields
          {"content": text}, one NDJSON line per string
  chat    servers/litserve_chat.py: LitAPI(spec=OpenAISpec()), `POST /v1/chat/completions` with
          "stream": true; one `chat.completion.chunk` event per string, the finish chunk (finish_reason
          and usage), then `data: [DONE]`
  NAME@before  the same server importing litserve from --before DIR (added with --before)

The load generator is stream_client.py (`--format content` and `--format sse`), pinned to core 1, the
server to core 0. Each cell (round x concurrency x server) starts a fresh server, polls GET /health,
checks one answer, warms up with an unmeasured client run, then reads the server process's CPU time
(utime + stime, /proc/PID/stat) right before and after the measured client run: server CPU per token
is that difference over the tokens the client received. The servers alternate, and which goes first
flips each time (ABBA).

Usage: python benchmarks/chat_spec.py [--duration 10] [--rounds 3] [--concurrency 1,16] [--tokens 32]
       [--before DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from report import Cell, before_after, git_state, markdown_table, median, print_before_after, verdict, write_report
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
from stream_client import FORMATS

CLIENT = HERE / "stream_client.py"
# name -> (server script, the client's --format)
SERVERS = {
    "ndjson": (SERVERS_DIR / "litserve_stream_text.py", "content"),
    "chat": (SERVERS_DIR / "litserve_chat.py", "sse"),
}

# The project's target: the spec's server CPU per token over the plain stream's.
TARGET_CPU_RATIO = 1.5

_FIGURES = (
    "tokens_per_s",
    "requests_per_s",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "server_cpu_us_per_token",
    "server_cpu_pct",
    "client_cpu_pct",
)
_RATIOS = (("tokens_per_s", "tokens_per_s"), ("ttft_p50_ms", "ttft_p50"), ("ttft_p99_ms", "ttft_p99"))


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


def server_cpu_s(pid: int) -> float:
    """The process's CPU time so far (all its threads, user + system), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def check_answer(url: str, form_name: str, tokens: int) -> None:
    """One request by urllib (which undoes the chunking), checked as the load generator checks them."""
    form = FORMATS[form_name]
    request = urllib.request.Request(
        url + form.path.decode(), data=form.payload, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10.0) as response:
        body = response.read()
        content_type = response.headers.get("Content-Type", "")
    if form.media_type.decode() not in content_type:
        raise RuntimeError(f"{url} answered with Content-Type {content_type!r}, expected {form.media_type!r}")
    form.check(body, tokens)


def run_client(
    port: int, concurrency: int, form: str, duration_s: float, args: argparse.Namespace, cpu: int | None
) -> dict[str, Any]:
    command = [sys.executable, str(CLIENT), str(port), f"--concurrency={concurrency}", f"--duration={duration_s}"]
    command += [f"--tokens={args.tokens}", f"--format={form}"]
    if cpu is not None:
        command.append(f"--cpu={cpu}")
    # The client stops by itself after the duration; the timeout only guards against a wedged run.
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"the client printed nothing (exit {done.returncode}):\n{done.stderr}")
    return dict(json.loads(lines[-1]))


def measure(
    name: str, concurrency: int, args: argparse.Namespace, cpus: Cpus, log_path: Path
) -> tuple[dict[str, Any], list[str]]:
    script, form = SERVERS[without_before(name)]

    def command(port: int) -> list[str]:
        return [sys.executable, str(script), str(port), str(args.tokens)]

    with serving(name, command, cpus[0], log_path, args.startup_timeout, args.before) as server:
        check_answer(server.base_url, form, args.tokens)
        if args.warmup > 0:
            run_client(server.port, concurrency, form, args.warmup, args, cpus[1])
        cpu_before_s = server_cpu_s(server.process.pid)
        result = run_client(server.port, concurrency, form, args.duration, args, cpus[1])
        cpu_s = server_cpu_s(server.process.pid) - cpu_before_s
    result["server_cpu_s"] = cpu_s
    result["server_cpu_us_per_token"] = 1e6 * cpu_s / result["tokens"] if result["tokens"] else None
    result["server_cpu_pct"] = 100.0 * cpu_s / result["wall_s"]
    return result, server.log_problems()


def table(cells: list[Cell]) -> str:
    columns = ["server", "concurrency", "tokens/s", "req/s", "TTFT p50 ms", "TTFT p99 ms"]
    columns += ["server CPU µs/token", "server CPU %", "errors", "client CPU %"]
    rows = []
    for cell in cells:
        row = cell_json(cell)
        rows.append(
            [cell.server, str(cell.concurrency), f"{row['tokens_per_s']:.0f}", f"{row['requests_per_s']:.0f}"]
            + [f"{row['ttft_p50_ms']:.3f}", f"{row['ttft_p99_ms']:.3f}", f"{row['server_cpu_us_per_token']:.1f}"]
            + [f"{row['server_cpu_pct']:.0f}", str(row["errors"]), f"{row['client_cpu_pct']:.0f}"]
        )
    return markdown_table(columns, rows)


def ratios(cells: list[Cell]) -> dict[str, float]:
    """chat over ndjson per concurrency (and per checkout with --before): ratios of the medians, and for CPU
    per token also the median of the per-round ratios (the two ran side by side in every round)."""
    by_key = {(cell.server, cell.concurrency): cell for cell in cells}
    found: dict[str, float] = {}
    for chat in (cell for cell in cells if without_before(cell.server) == "chat"):
        ndjson = by_key.get((chat.server.replace("chat", "ndjson", 1), chat.concurrency))
        if ndjson is None:
            continue
        prefix = f"{chat.server}_over_{ndjson.server}".replace("@", "_")
        suffix = f"_c{chat.concurrency}"
        for figure_name, label in _RATIOS:
            found[f"{prefix}_{label}{suffix}"] = chat.median(figure_name) / ndjson.median(figure_name)
        found[f"{prefix}_cpu_per_token{suffix}"] = chat.median("server_cpu_us_per_token") / ndjson.median(
            "server_cpu_us_per_token"
        )
        found[f"{prefix}_cpu_per_token_paired{suffix}"] = median(
            a["server_cpu_us_per_token"] / b["server_cpu_us_per_token"]
            for a, b in zip(chat.runs, ndjson.runs, strict=True)
            if a["server_cpu_us_per_token"] and b["server_cpu_us_per_token"]
        )
    return found


def print_ratios(found: dict[str, float]) -> None:
    for name, value in found.items():
        if "_cpu_per_token_c" in name:
            ok = value <= TARGET_CPU_RATIO
            print(f"{name}: {value:.3f} (target <= {TARGET_CPU_RATIO}: {verdict(ok)})")
        else:
            print(f"{name}: {value:.3f} (no target)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(parser, duration_s=10.0, warmup_s=1.0, output="chat_spec.json", load="load")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated connection counts (default 1,16)")
    parser.add_argument("--tokens", type=int, default=32, help="strings predict yields per request (default 32)")
    parser.add_argument("--servers", default="ndjson,chat", help="which servers (default ndjson,chat)")
    args = parser.parse_args(argv)
    args.concurrency_levels = int_list(parser, "--concurrency", args.concurrency)
    args.server_names = server_names(parser, args, lambda name: True)
    unknown = [s for s in args.server_names if without_before(s) not in SERVERS]
    if unknown:
        parser.error(f"unknown servers {unknown}; pick from {sorted(SERVERS)} (and NAME@before)")
    if args.rounds < 1 or args.duration <= 0 or args.tokens < 1 or not args.concurrency_levels:
        parser.error("--rounds, --duration and --tokens must be positive and --concurrency non-empty")
    return args


def run_cells(args: argparse.Namespace, cpus: Cpus) -> tuple[list[Cell], bool]:
    """Every round, concurrency and server in ABBA order; the cells, and whether any request failed."""
    logs = logs_dir()
    cells = {(n, c): Cell(n, c) for c in args.concurrency_levels for n in args.server_names}
    failed = False
    for round_index, concurrency, name in interleaved(args.server_names, args.concurrency_levels, args.rounds):
        log_path = logs / f"chat-{name}-c{concurrency}-r{round_index + 1}.log"
        result, problems = measure(name, concurrency, args, cpus, log_path)
        cells[name, concurrency].record(result, log_path, problems)
        failed = failed or result["errors"] > 0
        cpu = result["server_cpu_us_per_token"]
        print(
            f"round {round_index + 1} {name:>6} c={concurrency:<3} {result['tokens_per_s']:8.0f} tokens/s "
            f"TTFT p50 {result['ttft_p50_ms']:.3f} ms p99 {result['ttft_p99_ms']:.3f} ms  "
            f"server CPU {cpu or float('nan'):.1f} µs/token ({result['server_cpu_pct']:.0f}%)  "
            f"requests {result['requests']}  errors {result['errors']}  client CPU {result['client_cpu_pct']:.0f}%",
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
    compared |= before_after(ordered, lambda cell: f"c{cell.concurrency}", "server_cpu_us_per_token", "ttft_p99_ms")
    print_before_after(compared)
    settings = {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "tokens": args.tokens,
        "concurrency": args.concurrency_levels,
        "server_cpu": cpus[0],
        "client_cpu": cpus[1],
    }
    targets = {"chat_over_ndjson_cpu_per_token": f"<= {TARGET_CPU_RATIO} at each concurrency"}
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
