"""The per-request cost of process mode: p50 at concurrency 1, process mode minus thread mode.

Both servers (and, with --before DIR, the same two from an older checkout) run side by side for the
whole benchmark, serving the MLP benchmark's model (without batching unless --batch): thread mode with
2 workers, and process mode with 2 CPU devices of 1 worker each (with --one-device: 1 worker against
1 device of 1 worker). Each round gives every server `--seconds` of `wrk -c1` with the fixed input, in
an order that reverses every round, so drift hits them alike.
The reported gap is the median over rounds of each round's p50(process) - p50(thread): pairing the
two runs of a round cancels most of this machine's drift, which moves both alike.

With `--batch 16:0.005` both servers batch as the MLP benchmark's batched server does; every request
then also waits out the batch timer, which makes the difference noisier.

wrk runs on the second core; with `--pin-servers` the servers and their worker processes share the first.

The figures also go to a JSON report (--output, default benchmarks/results/process_gap.json).

Usage: python benchmarks/process_gap.py [--model light] [--rounds 10] [--seconds 2] [--before DIR] [--batch B:T]
       [--one-device] [--pin-servers] [--output PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from mlp_report import TARGET_PROCESS_IPC_MS
from mlp_servers import LITSERVE_SCRIPT, write_lua
from report import git_state, write_report
from runner import (
    BEFORE_SUFFIX,
    RESULTS_DIR,
    SERVERS_DIR,
    ServerProcess,
    add_before_option,
    free_port,
    interleaved,
    logs_dir,
    pick_cpus,
    resolve_before,
    say_if_busy,
    source_of,
)
from wrk import run_wrk

# After the batch settings: workers per device, worker mode, devices.
MODES = {"thread": ["2", "thread", "1"], "process": ["1", "process", "2"]}
# --one-device: one worker thread against one worker process on one device (the performance issue's
# comparison: "process mode with one device carries no penalty against thread mode at c=1").
ONE_DEVICE_MODES = {"thread": ["1", "thread", "1"], "process": ["1", "process", "1"]}
TARGET_ONE_DEVICE_MS = 0.1

Key = tuple[str, str]  # (tree: "now" or "before", mode: "thread" or "process")


def parse_args(argv: list[str] | None, models: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="light", choices=models)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0, help="wrk -c1 duration per server per round")
    add_before_option(parser)
    parser.add_argument(
        "--batch",
        default="1:0",
        help="MAX_BATCH_SIZE:BATCH_TIMEOUT_S of both servers (default 1:0: no batching; mlp.py batches 16:0.005)",
    )
    parser.add_argument(
        "--one-device",
        action="store_true",
        help=f"one worker thread against one worker process on one device (target < {TARGET_ONE_DEVICE_MS} ms)",
    )
    parser.add_argument(
        "--pin-servers",
        action="store_true",
        help="pin every server, with its worker processes, to the first core (default: wrk alone is pinned)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "process_gap.json", help="where to write JSON")
    args = parser.parse_args(argv)
    resolve_before(parser, args)
    max_batch_size, _, batch_timeout_s = args.batch.partition(":")
    args.batch_settings = [str(int(max_batch_size)), str(float(batch_timeout_s or 0))]
    return args


def start_servers(args: argparse.Namespace, cpu: int | None, servers: dict[Key, ServerProcess]) -> None:
    """Thread and process mode, of this checkout and of --before DIR's, into `servers` as each starts
    (so that the caller stops those that started when a later one fails to)."""
    trees = ["now"] if args.before is None else ["now", "before"]
    logs = logs_dir()
    for tree in trees:
        for mode, settings in (ONE_DEVICE_MODES if args.one_device else MODES).items():
            name = mode + (BEFORE_SUFFIX if tree == "before" else "")
            port = free_port()
            command = [sys.executable, str(LITSERVE_SCRIPT), str(port), args.model, *args.batch_settings, *settings]
            log = logs / f"process_gap-{tree}-{mode}.log"
            servers[tree, mode] = ServerProcess(name, port, command, cpu, log, source_of(name, args.before))


def measure_rounds(
    servers: dict[Key, ServerProcess], args: argparse.Namespace, wrk_cpu: int | None, lua: Path
) -> dict[Key, list[float]]:
    """Each server's p50 per round: `--seconds` of wrk -c1 each, the order reversed every round."""
    p50s: dict[Key, list[float]] = {key: [] for key in servers}
    for _, _, key in interleaved(list(servers), [None], args.rounds):
        result, _ = run_wrk(servers[key].base_url + "/predict", 1, args.seconds, wrk_cpu, lua)
        if result.non_2xx or result.socket_error_total:
            raise RuntimeError(f"{key} answered errors under load: {result}")
        p50s[key].append(result.p50_ms)
    return p50s


def print_gaps(args: argparse.Namespace, p50s: dict[Key, list[float]]) -> dict[str, float]:
    print(f"model {args.model}, batch {args.batch}, {args.rounds} rounds of {args.seconds:.1f} s of wrk -c1 per server")
    for (tree, mode), values in p50s.items():
        print(f"{tree:>6} {mode:>7}: p50 median {statistics.median(values):.3f} ms  rounds {values}")
    gaps: dict[str, float] = {}
    for tree in dict.fromkeys(tree for tree, _ in p50s):
        differences = [p - t for p, t in zip(p50s[(tree, "process")], p50s[(tree, "thread")], strict=True)]
        gaps[tree] = gap = statistics.median(differences)
        target = target_ms(args)
        verdict = "meets" if gap < target else "MISSES"
        print(
            f"{tree}: p50(process) - p50(thread) = {gap:+.3f} ms (median of per-round differences; "
            f"target < {target} ms: {verdict} target)"
        )
    return gaps


def target_ms(args: argparse.Namespace) -> float:
    return TARGET_ONE_DEVICE_MS if args.one_device else TARGET_PROCESS_IPC_MS


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(SERVERS_DIR))
    import mlp_model  # the servers' own module: same model, same vector
    import mlp_stats

    args = parse_args(argv, sorted(mlp_model.MODELS))
    git_at_start = git_state()
    say_if_busy()
    # No counters are read here: the worker processes' reporting thread, which thread mode has no
    # counterpart of, stays off (every server, the --before ones too, runs this checkout's server script).
    os.environ[mlp_stats.CHILD_STATS_ENV] = "0"
    server_cpu, wrk_cpu = pick_cpus(True)  # wrk on the second core
    if not args.pin_servers:
        server_cpu = None  # the servers and their worker processes may use every core
    lua = write_lua(args.model, mlp_model.input_vector(args.model, mlp_model.INPUT_SEED))
    servers: dict[Key, ServerProcess] = {}
    try:
        start_servers(args, server_cpu, servers)
        for server in servers.values():
            server.wait_ready(120.0)
        p50s = measure_rounds(servers, args, wrk_cpu, lua)
    finally:
        for server in servers.values():
            server.stop()
    gaps = print_gaps(args, p50s)
    settings = {
        "model": args.model,
        "batch": args.batch,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "pin_servers": args.pin_servers,
        "one_device": args.one_device,
        "server_cpu": server_cpu,
        "wrk_cpu": wrk_cpu,
    }
    p50_rounds = {f"{tree}/{mode}": values for (tree, mode), values in p50s.items()}
    targets = {"p50(process) - p50(thread)": f"< {target_ms(args)} ms"}
    write_report(args.output, settings, git_at_start, args.before, p50_ms=p50_rounds, gap_ms=gaps, targets=targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
