"""Benchmark litserve against a bare Quart app with wrk; print a markdown table and the target ratios.

Each measurement (server x concurrency x round) runs against a fresh server subprocess:
start it, poll GET /health until 200, check one answer, warm up with wrk, measure with wrk,
stop it (SIGINT, then SIGTERM, then SIGKILL, by PID). Servers run one at a time, alternating
bare and ours per concurrency level, so slow drift of a noisy machine hits both alike.
With --pin (default) the server runs on one core (taskset -c 0) and wrk on another (-c 1).
With --before DIR, ours@before (ours importing litserve from DIR) runs in the same rounds.

Usage: bash benchmarks/setup.sh && python benchmarks/run.py [--duration 5] [--rounds 1] [--before DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

from report import Cell, before_after, git_state, markdown_table, print_before_after, verdict, write_report
from runner import (
    SERVERS_DIR,
    Cpus,
    ServerProcess,
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
from wrk import WrkResult, has_wrk, summary, warm_up_and_measure

SERVERS: dict[str, Path] = {
    "bare": SERVERS_DIR / "bare_quart.py",
    "ours": SERVERS_DIR / "litserve_square.py",
    "ours-nometrics": SERVERS_DIR / "litserve_square_nometrics.py",  # LitServer(metrics_path=None)
}
EXPECTED = {"output": 49}

# The project's targets.
TARGET_RPS_RATIO_C16 = 0.9
TARGET_P50_OVERHEAD_C1_MS = 0.15


def check_answer(server: ServerProcess) -> None:
    """One request by hand: the workload must really answer {"output": 49}."""
    body = json.dumps({"input": 7}).encode()
    request = urllib.request.Request(
        server.base_url + "/predict", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5.0) as response:
        answer = json.loads(response.read())
    if answer != EXPECTED:
        raise RuntimeError(f"{server.name} answered {answer!r}, expected {EXPECTED!r}")


def measure(
    name: str, concurrency: int, args: argparse.Namespace, cpus: Cpus, log_path: Path
) -> tuple[WrkResult, list[str]]:
    script = SERVERS[without_before(name)]
    with serving(
        name,
        lambda port: [sys.executable, str(script), str(port)],
        cpus[0],
        log_path,
        args.startup_timeout,
        args.before,
    ) as server:
        check_answer(server)
        result, output = warm_up_and_measure(
            server.base_url + "/predict", concurrency, args.warmup, args.duration, cpus[1]
        )
        if args.verbose:
            print(output)
    return result, server.log_problems()


def cell_json(cell: Cell) -> dict[str, Any]:
    return {
        "server": cell.server,
        "concurrency": cell.concurrency,
        **summary(cell.runs),
        "server_log_problems": cell.server_log_problems,
        "rounds": [asdict(run) for run in cell.runs],
    }


def table(cells: list[Cell]) -> str:
    columns = ["server", "concurrency", "req/s", "p50 ms", "p99 ms", "non-2xx", "socket errors"]
    rows = []
    for cell in cells:
        row = summary(cell.runs)
        rows.append(
            [cell.server, str(cell.concurrency), f"{row['rps']:.0f}", f"{row['p50_ms']:.3f}", f"{row['p99_ms']:.3f}"]
            + [str(row["non_2xx"]), str(sum(row["socket_errors"].values()))]
        )
    return markdown_table(columns, rows)


def ratios(cells: list[Cell]) -> dict[str, float | None]:
    by_key = {(cell.server, cell.concurrency): cell for cell in cells}
    rps_ratio = p50_overhead = None
    if ("ours", 16) in by_key and ("bare", 16) in by_key:
        rps_ratio = by_key["ours", 16].median("rps") / by_key["bare", 16].median("rps")
    if ("ours", 1) in by_key and ("bare", 1) in by_key:
        p50_overhead = by_key["ours", 1].median("p50_ms") - by_key["bare", 1].median("p50_ms")
    return {"ours_over_bare_rps_c16": rps_ratio, "ours_minus_bare_p50_ms_c1": p50_overhead}


def print_ratios(found: dict[str, float | None]) -> None:
    rps_ratio, p50_overhead = found["ours_over_bare_rps_c16"], found["ours_minus_bare_p50_ms_c1"]
    if rps_ratio is not None:
        print(
            f"ours/bare req/s at c=16: {rps_ratio:.3f} "
            f"(target >= {TARGET_RPS_RATIO_C16}: {verdict(rps_ratio >= TARGET_RPS_RATIO_C16)})"
        )
    if p50_overhead is not None:
        print(
            f"ours p50 - bare p50 at c=1: {p50_overhead:.3f} ms "
            f"(target <= {TARGET_P50_OVERHEAD_C1_MS}: {verdict(p50_overhead <= TARGET_P50_OVERHEAD_C1_MS)})"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(parser, duration_s=5.0, warmup_s=1.0, output="latest.json")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated connection counts")
    parser.add_argument("--servers", default="bare,ours", help="which servers to run (default bare,ours)")
    parser.add_argument("--verbose", action="store_true", help="print wrk's full output for every run")
    args = parser.parse_args(argv)
    args.concurrency_levels = int_list(parser, "--concurrency", args.concurrency)
    # "before", this script's name for ours@before until every script named its --before rows alike.
    args.servers = ",".join("ours@before" if s.strip() == "before" else s for s in args.servers.split(","))
    args.server_names = server_names(parser, args, lambda name: name == "ours")
    unknown = [s for s in args.server_names if without_before(s) not in SERVERS]
    if unknown:
        parser.error(f"unknown servers {unknown}; pick from {sorted(SERVERS)} (and ours@before with --before DIR)")
    if args.rounds < 1 or args.duration < 1 or not args.concurrency_levels:
        parser.error("--rounds and --duration must be >= 1 and --concurrency non-empty")
    return args


def run_cells(args: argparse.Namespace, cpus: Cpus) -> list[Cell]:
    """Every round, concurrency and server in ABBA order; the cells by server, then concurrency."""
    logs = logs_dir()
    cells = {(n, c): Cell(n, c) for c in args.concurrency_levels for n in args.server_names}
    for round_index, concurrency, name in interleaved(args.server_names, args.concurrency_levels, args.rounds):
        log_path = logs / f"{name}-c{concurrency}-r{round_index + 1}.log"
        result, problems = measure(name, concurrency, args, cpus, log_path)
        cells[name, concurrency].record(result, log_path, problems)
        print(
            f"round {round_index + 1} {name:>4} c={concurrency:<3} {result.rps:9.0f} req/s "
            f"p50 {result.p50_ms:7.3f} ms  p99 {result.p99_ms:7.3f} ms  "
            f"requests {result.requests}  non-2xx {result.non_2xx}  socket errors "
            + ", ".join(f"{k} {v}" for k, v in result.socket_errors.items()),
            flush=True,
        )
        for line in problems[:5]:
            print(f"    server log: {line}", flush=True)
    return [cells[n, c] for n in args.server_names for c in args.concurrency_levels]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not has_wrk():
        return 2
    git_at_start = git_state()
    say_if_busy()
    cpus = pick_cpus(args.pin)
    print(
        f"wrk: {args.duration:.0f} s per cell after {args.warmup:.0f} s warm-up, rounds={args.rounds}, "
        f"server cpu={cpus[0]}, wrk cpu={cpus[1]}"
    )
    ordered = run_cells(args, cpus)
    print()
    print(table(ordered))
    print()
    found = ratios(ordered)
    print_ratios(found)
    compared = before_after(ordered, lambda cell: f"c{cell.concurrency}", "rps", "p50_ms")
    print_before_after(compared)
    settings = {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "concurrency": args.concurrency_levels,
        "server_cpu": cpus[0],
        "wrk_cpu": cpus[1],
        "wrk_threads": "1 at c=1, else 2",
    }
    targets = {
        "ours_over_bare_rps_c16": f">= {TARGET_RPS_RATIO_C16}",
        "ours_minus_bare_p50_ms_c1": f"<= {TARGET_P50_OVERHEAD_C1_MS}",
    }
    table_json = [cell_json(cell) for cell in ordered]
    sections = {"table": table_json, "ratios": found, "targets": targets, "before_after": compared}
    write_report(args.output, settings, git_at_start, args.before, **sections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
