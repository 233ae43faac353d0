"""What the metrics cost per request: W1 (trivial JSON) with /metrics on, off, and (with --before) an older checkout.

The request path keeps its counters whether the route is on or off, so "off" (`metrics_path=None`) shows
the route's own cost and `--before DIR` (a checkout without metrics) the counters' and timing's. Besides
wrk's req/s and p50, each cell records the server's CPU time per request (from /proc, over the measured
run): on a shared machine that figure moves far less than req/s, which follows whatever else runs.
Each round also times scrapes of a running server's /metrics (not under load).

Usage: python benchmarks/metrics_cost.py [--concurrency 1,16] [--rounds 3] [--before DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from mlp_servers import process_cpu_s
from report import git_state, markdown_table, write_report
from run import SERVERS, check_answer
from runner import (
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
from wrk import has_wrk, run_wrk

NAMES = ("ours", "ours-nometrics")
SCRAPES = 200


def measure(name: str, concurrency: int, args: argparse.Namespace, cpus: Cpus, log_path: Path) -> dict[str, float]:
    script = SERVERS[without_before(name)]
    command = lambda port: [sys.executable, str(script), str(port)]  # noqa: E731 - one line, used once
    with serving(name, command, cpus[0], log_path, args.startup_timeout, args.before) as server:
        check_answer(server)
        url = server.base_url + "/predict"
        if args.warmup > 0:
            run_wrk(url, concurrency, args.warmup, cpus[1])
        cpu_before_s = process_cpu_s(server.process.pid)
        result, _ = run_wrk(url, concurrency, args.duration, cpus[1])
        cpu_ms = (process_cpu_s(server.process.pid) - cpu_before_s) * 1000 / max(1, result.requests)
        cell = {"rps": result.rps, "p50_ms": result.p50_ms, "cpu_ms_per_request": cpu_ms}
        if name == "ours":
            cell["scrape_ms"] = _scrape_ms(server.base_url + "/metrics")
        return cell


def _scrape_ms(url: str) -> float:
    """Median wall time of one GET /metrics (after the load: the counters are full)."""
    times = []
    for _ in range(SCRAPES):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=5.0) as response:
            response.read()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _median(cells: list[dict[str, float]], key: str) -> float:
    return statistics.median(cell[key] for cell in cells if key in cell)


def _differences(found: dict[tuple[str, int], list[dict[str, float]]], other: str, c: int) -> dict[str, float]:
    """ours against `other` at concurrency c: req/s ratio and per-round differences of p50 and CPU/request."""
    ours, them = found["ours", c], found[other, c]
    return {
        "rps_ratio": _median(ours, "rps") / _median(them, "rps"),
        "p50_diff_ms": statistics.median(a["p50_ms"] - b["p50_ms"] for a, b in zip(ours, them, strict=True)),
        "cpu_diff_ms": statistics.median(
            a["cpu_ms_per_request"] - b["cpu_ms_per_request"] for a, b in zip(ours, them, strict=True)
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(parser, duration_s=5.0, warmup_s=1.0, output="metrics_cost.json")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated connection counts")
    args = parser.parse_args(argv)
    args.servers = ",".join(NAMES)
    levels = int_list(parser, "--concurrency", args.concurrency)
    names = server_names(parser, args, lambda name: name == "ours")
    if not has_wrk():
        return 2
    git_at_start = git_state()
    say_if_busy()
    cpus = pick_cpus(args.pin)
    found: dict[tuple[str, int], list[dict[str, float]]] = {(n, c): [] for n in names for c in levels}
    for round_index, c, name in interleaved(names, levels, args.rounds):
        log_path = logs_dir() / f"metrics-{name}-c{c}-r{round_index + 1}.log"
        cell = measure(name, c, args, cpus, log_path)
        found[name, c].append(cell)
        print(f"round {round_index + 1} {name:>16} c={c:<3} " + "  ".join(f"{k} {v:.4f}" for k, v in cell.items()))
    rows = []
    for (name, c), cells in found.items():
        figures = [f"{_median(cells, k):.4f}" for k in ("rps", "p50_ms", "cpu_ms_per_request")]
        rows.append([name, str(c), *figures])
    print()
    print(markdown_table(["server", "c", "req/s", "p50 ms", "server CPU ms/request"], rows))
    compared: dict[str, Any] = {}
    for other in names[1:]:
        for c in levels:
            compared[f"ours_vs_{other}_c{c}"] = figures = _differences(found, other, c)
            print(f"ours vs {other} c={c}: " + ", ".join(f"{k} {v:+.4f}" for k, v in figures.items()))
    print(f"GET /metrics: median {_median(found['ours', levels[0]], 'scrape_ms'):.3f} ms per scrape")
    settings = {"duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds, "concurrency": levels}
    cells_json = {f"{n}@c{c}": cells for (n, c), cells in found.items()}
    write_report(args.output, settings, git_at_start, args.before, cells=cells_json, compared=compared)
    return 0


if __name__ == "__main__":
    sys.exit(main())
