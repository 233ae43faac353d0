"""Side by side, in one run: litserve against LitServe 0.2.19 (default and best CPU configuration) and bare Quart.

Workloads (the performance issue's table), each at its concurrency levels:

  json            POST {"input": 7}, answer {"output": 49}                      c = 1, 16, 64  (wrk)
  mlp-batched     the MLP benchmark's light model, max_batch_size=16, 5 ms       c = 1, 16, 64  (wrk)
  mlp-unbatched   the same model, one request per predict                        c = 1, 16, 64  (wrk)
  stream          32 NDJSON lines per request                                    c = 16         (stream_client.py)

Servers (each its own subprocess, started fresh for every cell, stopped by PID):

  ours        this checkout, in the configuration the README recommends for the workload (ROWS below)
  ls-default  LitServe 0.2.19 as installed from the package index, default arguments
  ls-best     LitServe 0.2.19 with `fast_queue=True, workers_per_device=2`, its best documented CPU setting
  bare        Quart on Hypercorn answering inline (json and stream only): the framework's floor, on
              Hypercorn's default asyncio loop
  bare-uv     the same on uvloop (LitServe's uvicorn runs on uvloop; ours can, with LITSERVE_EVENT_LOOP=uvloop)

and, only when named in --servers, ours-uvloop: this checkout with LITSERVE_EVENT_LOOP=uvloop, for what uvloop
is worth to ours (`--servers ours,ours-uvloop --workloads json,stream --concurrency 16 --rounds 6`).

LitServe runs from a virtual environment of its own (`upstream_env.py`, made on first use under
~/.cache/litserve-bench, or `--venv DIR`). The load generator is pinned to the second core; the servers
are not pinned, so multi-process servers may use both cores, as they would in use. Rounds interleave the
servers (the order flips every cell) and the table gives medians: on a shared machine, prefer
`--rounds 3` and read the ratios, not the absolute figures.

Usage: python benchmarks/side_by_side.py [--rounds 2] [--duration 4] [--workloads json,stream] [--concurrency 16]
       [--venv DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import upstream_env
from mlp_servers import write_lua
from report import git_state, markdown_table, write_report
from runner import (
    HERE,
    RESULTS_DIR,
    SERVERS_DIR,
    ServerProcess,
    free_port,
    logs_dir,
    pick_cpus,
    say_if_busy,
    wait_until_quiet,
)
from wrk import run_wrk

SIDE_SERVER = SERVERS_DIR / "side_server.py"
BARE = {"json": SERVERS_DIR / "bare_quart.py", "stream": SERVERS_DIR / "bare_quart_stream.py"}
CONCURRENCY = {"json": [1, 16, 64], "mlp-batched": [1, 16, 64], "mlp-unbatched": [1, 16, 64], "stream": [16]}
BATCHED = {"max_batch_size": 16, "batch_timeout": 0.005}
BEST = {"fast_queue": True, "workers_per_device": 2}
# Ours as the README's performance section recommends for each workload (LitServer and LitAPI arguments).
OURS = {
    "json": {},
    "mlp-batched": {"api": BATCHED},
    "mlp-unbatched": {"server": {"worker_mode": "process"}},  # unbatched CPU-bound hooks: processes (README)
    "stream": {},
}
SERVERS = ["ours", "ls-default", "ls-best", "bare", "bare-uv"]
OTHERS = [*SERVERS[1:], "ours-uvloop"]  # what ours is compared with, where measured


def config(server: str, workload: str) -> dict[str, Any]:
    api = BATCHED if workload == "mlp-batched" else {}
    if server.startswith("ours"):
        return OURS[workload]
    return {"api": api, "server": BEST if server == "ls-best" else {}}


def command(server: str, workload: str, port: int, upstream_python: Path) -> list[str]:
    if server.startswith("bare"):
        return [sys.executable, str(BARE[workload]), str(port), *(["--uvloop"] if server == "bare-uv" else [])]
    kind = workload.split("-")[0]
    conf = json.dumps(config(server, workload))
    if server == "ours":
        return [sys.executable, str(SIDE_SERVER), kind, str(port), conf]
    if server == "ours-uvloop":
        return ["env", "LITSERVE_EVENT_LOOP=uvloop", sys.executable, str(SIDE_SERVER), kind, str(port), conf]
    # -E: no PYTHONPATH, so LitServe is the environment's own even when this checkout's is on the path.
    return [str(upstream_python), "-E", str(SIDE_SERVER), kind, str(port), conf]


def measure(
    server: ServerProcess, workload: str, concurrency: int, args: argparse.Namespace, cpu: int | None, lua: Path | None
) -> dict[str, Any]:
    if workload == "stream":
        client = [
            sys.executable,
            str(HERE / "stream_client.py"),
            str(server.port),
            f"--concurrency={concurrency}",
            f"--duration={args.duration}",
            f"--warmup={args.warmup}",
            "--tokens=32",
        ]
        if server.name.startswith("ls-"):
            client.append("--format=token-untyped")  # LitServe's stream answers carry no Content-Type
        if cpu is not None:
            client.append(f"--cpu={cpu}")
        done = subprocess.run(
            client, capture_output=True, text=True, timeout=args.duration + args.warmup + 60, check=False
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        p50_ms = result["ttft_p50_ms"]
        return {
            "rate": result["requests_per_s"],
            "p50_ms": float("nan") if p50_ms is None else p50_ms,
            "errors": result["errors"],
        }
    url = server.base_url + "/predict"
    if args.warmup > 0:
        run_wrk(url, concurrency, args.warmup, cpu, lua)
    result, _ = run_wrk(url, concurrency, args.duration, cpu, lua)
    return {"rate": result.rps, "p50_ms": result.p50_ms, "errors": result.non_2xx + result.socket_error_total}


def cells(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    order = []
    for workload in args.workloads:
        for concurrency in CONCURRENCY[workload]:
            if args.concurrency and concurrency not in args.concurrency:
                continue
            names = [s for s in args.servers if not s.startswith("bare") or workload in BARE]
            order.append((workload, concurrency, names))
    # Each cell's order flips from one round to the next. (Flipping after every cell, as before, gave a
    # cell the same order in every round whenever a round had an even number of cells: ours always ran
    # the streams last, right after LitServe's two servers.)
    runs = []
    for round_index in range(args.rounds):
        for cell_index, (workload, concurrency, names) in enumerate(order):
            flip = (round_index + cell_index) % 2 == 1
            for name in reversed(names) if flip else names:
                runs.append((workload, concurrency, name))
    return runs


def run_all(args: argparse.Namespace, upstream_python: Path) -> dict[tuple[str, int, str], list[dict[str, Any]]]:
    _, load_cpu = pick_cpus(args.pin)  # the servers are not pinned: multi-process servers may use both cores
    lua = write_lua("light", _light_vector())
    results: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for workload, concurrency, name in cells(args):
        waited_s = wait_until_quiet()  # the previous cell's server may still be going away
        if waited_s > 1.0:
            print(f"(waited {waited_s:.1f} s for the machine to go quiet)", flush=True)
        port = free_port()
        log = logs_dir() / f"side-{workload}-{name}-c{concurrency}.log"
        server = ServerProcess(name, port, command(name, workload, port, upstream_python), None, log)
        try:
            server.wait_ready(args.startup_timeout)
            run = measure(server, workload, concurrency, args, load_cpu, lua if workload.startswith("mlp") else None)
            server.raise_if_died()
        finally:
            server.stop()
        results.setdefault((workload, concurrency, name), []).append(run)
        print(
            f"{workload:14} c={concurrency:<3} {name:10} {run['rate']:9.0f}/s  p50 {run['p50_ms']:8.3f} ms  "
            f"errors {run['errors']}",
            flush=True,
        )
    return results


def _light_vector() -> list[float]:
    sys.path.insert(0, str(SERVERS_DIR))
    import mlp_model

    return mlp_model.input_vector("light")


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def table(results: dict[tuple[str, int, str], list[dict[str, Any]]], args: argparse.Namespace) -> str:
    rows = []
    columns = [name for name in ["ours", *OTHERS] if any(key[2] == name for key in results)]
    for workload in args.workloads:
        for concurrency in CONCURRENCY[workload]:
            if args.concurrency and concurrency not in args.concurrency:
                continue
            row = [workload, str(concurrency)]
            for name in columns:
                runs = results.get((workload, concurrency, name))
                row.append("—" if not runs else f"{median_of(runs, 'rate'):,.0f} ({median_of(runs, 'p50_ms'):.2f})")
            rows.append(row)
    unit = "req/s or streams/s (p50 ms; streams: time to first token)"
    return markdown_table(["workload", "c", *columns], rows) + f"\n\nfigures: {unit}, medians of {args.rounds} rounds"


def ratios(results: dict[tuple[str, int, str], list[dict[str, Any]]]) -> dict[str, float]:
    def rate(workload: str, concurrency: int, name: str) -> float | None:
        runs = results.get((workload, concurrency, name))
        return median_of(runs, "rate") if runs else None

    found: dict[str, float] = {}
    for (workload, concurrency, name), _ in sorted(results.items()):
        if name != "ours":
            continue
        ours = rate(workload, concurrency, "ours")
        for other in OTHERS:
            theirs = rate(workload, concurrency, other)
            if ours is not None and theirs:
                found[f"{workload} c={concurrency}: ours/{other}"] = ours / theirs
    batched = results.get(("mlp-batched", 1, "ours"))
    unbatched = results.get(("mlp-unbatched", 1, "ours"))
    if batched and unbatched:
        found["mlp c=1: p50 batched - p50 unbatched (ms)"] = median_of(batched, "p50_ms") - median_of(
            unbatched, "p50_ms"
        )
    return found


def paired_ratios(results: dict[tuple[str, int, str], list[dict[str, Any]]]) -> dict[str, tuple[float, float, float]]:
    """ours/other within each round (the two ran minutes apart at most): median, lowest and highest.

    Rounds interleave the servers, so pairing them cancels the machine's drift between rounds, which a
    ratio of medians over few rounds does not."""
    found: dict[str, tuple[float, float, float]] = {}
    for (workload, concurrency, name), runs in sorted(results.items()):
        if name != "ours":
            continue
        for other in OTHERS:
            theirs = results.get((workload, concurrency, other))
            if not theirs:
                continue
            pairs = [a["rate"] / b["rate"] for a, b in zip(runs, theirs, strict=False) if b["rate"]]
            if pairs:
                found[f"{workload} c={concurrency}: ours/{other}"] = (statistics.median(pairs), min(pairs), max(pairs))
    return found


TARGETS = {
    "ours/ls-best": 1.0,
    "json c=16: ours/ls-default": 3.0,
    "json c=16: ours/bare": 1.3,
    "stream c=16: ours/ls-default": 5.0,
    "stream c=16: ours/bare": 1.0,
}


def verdict(name: str, value: float) -> str:
    if name.endswith("(ms)"):
        return "meets" if value <= 0.15 else "MISSES"
    for key, target in TARGETS.items():
        if name.endswith(key) if key.startswith("ours") else name == key:
            return f"{'meets' if value >= target else 'MISSES'} >= {target}"
    return ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of measured load per cell")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--workloads", type=lambda t: t.split(","), default=list(CONCURRENCY))
    parser.add_argument("--servers", type=lambda t: t.split(","), default=SERVERS)
    parser.add_argument(
        "--concurrency",
        type=lambda t: [int(c) for c in t.split(",")],
        default=[],
        help="only these concurrencies, e.g. 16 (default: each workload's)",
    )
    parser.add_argument("--venv", type=Path, default=None, help="LitServe's environment (default: the cache)")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True, help="load on core 2")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "side_by_side.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    upstream_python = upstream_env.ensure_upstream(args.venv or upstream_env.default_dir())
    say_if_busy()
    git_at_start = git_state()
    results = run_all(args, upstream_python)
    print("\n" + table(results, args) + "\n")
    found = ratios(results)
    per_round = paired_ratios(results)
    for name, value in found.items():
        spread = per_round.get(name)
        rounds = "" if spread is None else f"  (per round: median {spread[0]:.3f}, {spread[1]:.3f} to {spread[2]:.3f})"
        print(f"{name}: {value:.3f}  {verdict(name, value)}{rounds}")
    cells_json = [{"workload": w, "concurrency": c, "server": s, "runs": r} for (w, c, s), r in results.items()]
    write_report(
        args.output,
        vars(args) | {"venv": str(args.venv), "output": str(args.output)},
        git_at_start,
        None,
        cells=cells_json,
        ratios=found,
    )


if __name__ == "__main__":
    main()
