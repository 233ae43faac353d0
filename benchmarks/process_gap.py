"""The per-request cost of process mode: p50 at concurrency 1, process mode minus thread mode.

Both servers (and, with --before DIR, the same two from an older checkout) run side by side for the
whole benchmark, serving the MLP benchmark's model (without batching unless --batch): thread mode with 2 workers, and
process mode with 2 CPU devices of 1 worker each. Each round gives every server `--seconds` of
`wrk -c1` with the fixed input, in an order that reverses every round, so drift hits them alike.
The reported gap is the median over rounds of each round's p50(process) - p50(thread): pairing the
two runs of a round cancels most of this machine's drift, which moves both alike.

With `--batch 16:0.005` both servers batch as the MLP benchmark's batched server does; every request
then also waits out the batch timer, which makes the difference noisier.

wrk runs on the second core; with `--pin-servers` the servers and their worker processes share the first.

Usage: python benchmarks/process_gap.py [--model light] [--rounds 10] [--seconds 2] [--before DIR] [--batch B:T]
       [--pin-servers]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from mlp import LITSERVE_SCRIPT, SERVERS_DIR, TARGET_PROCESS_IPC_MS, write_lua
from run import RESULTS_DIR, ServerProcess, free_port, pick_cpus, run_wrk, say_if_busy

# After the batch settings: workers per device, worker mode, devices.
MODES = {"thread": ["2", "thread", "1"], "process": ["1", "process", "2"]}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(SERVERS_DIR))
    import mlp_model  # the servers' own module: same model, same vector
    import mlp_stats

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="light", choices=sorted(mlp_model.MODELS))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0, help="wrk -c1 duration per server per round")
    parser.add_argument("--before", type=Path, help="an older checkout to measure in the same run")
    parser.add_argument(
        "--batch",
        default="1:0",
        help="MAX_BATCH_SIZE:BATCH_TIMEOUT_S of both servers (default 1:0: no batching; mlp.py batches 16:0.005)",
    )
    parser.add_argument(
        "--pin-servers",
        action="store_true",
        help="pin every server, with its worker processes, to the first core (default: wrk alone is pinned)",
    )
    args = parser.parse_args(argv)
    max_batch_size, _, batch_timeout_s = args.batch.partition(":")
    batch_settings = [str(int(max_batch_size)), str(float(batch_timeout_s or 0))]
    say_if_busy()
    # No counters are read here: the worker processes' reporting thread, which thread mode has no
    # counterpart of, stays off (every server, the --before ones too, runs this checkout's server script).
    os.environ[mlp_stats.CHILD_STATS_ENV] = "0"
    server_cpu, wrk_cpu = pick_cpus(True)  # wrk on the second core
    if not args.pin_servers:
        server_cpu = None  # the servers and their worker processes may use every core
    vector = mlp_model.input_vector(args.model, mlp_model.INPUT_SEED)
    lua = write_lua(args.model, vector)
    trees: dict[str, Path | None] = {"now": None}
    if args.before is not None:
        trees["before"] = args.before.resolve()
    logs = RESULTS_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    servers: dict[tuple[str, str], ServerProcess] = {}
    try:
        for tree, source in trees.items():
            for mode, settings in MODES.items():
                port = free_port()
                command = [sys.executable, str(LITSERVE_SCRIPT), str(port), args.model, *batch_settings, *settings]
                log = logs / f"process_gap-{tree}-{mode}.log"
                servers[(tree, mode)] = ServerProcess(f"{tree}-{mode}", port, server_cpu, log, command, source)
        for server in servers.values():
            server.wait_ready(120.0)
        p50s: dict[tuple[str, str], list[float]] = {key: [] for key in servers}
        keys = list(servers)
        for round_index in range(args.rounds):
            for key in keys if round_index % 2 == 0 else keys[::-1]:
                result, _ = run_wrk(servers[key].base_url + "/predict", 1, args.seconds, wrk_cpu, lua)
                if result.non_2xx or result.socket_error_total:
                    raise RuntimeError(f"{key} answered errors under load: {result}")
                p50s[key].append(result.p50_ms)
    finally:
        for server in servers.values():
            server.stop()
    print(f"model {args.model}, batch {args.batch}, {args.rounds} rounds of {args.seconds:.1f} s of wrk -c1 per server")
    for (tree, mode), values in p50s.items():
        print(f"{tree:>6} {mode:>7}: p50 median {statistics.median(values):.3f} ms  rounds {values}")
    for tree in trees:
        gaps = [p - t for p, t in zip(p50s[(tree, "process")], p50s[(tree, "thread")], strict=True)]
        gap = statistics.median(gaps)
        verdict = "meets" if gap < TARGET_PROCESS_IPC_MS else "MISSES"
        print(
            f"{tree}: p50(process) - p50(thread) = {gap:+.3f} ms (median of per-round differences; "
            f"target < {TARGET_PROCESS_IPC_MS} ms: {verdict} target)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
