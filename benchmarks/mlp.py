"""MLP batching benchmark: litserve batched vs unbatched vs a plain FastAPI app, under wrk (default c=64).

Every request is `POST /predict` with `{"input": [d_in floats]}` (one fixed, seeded vector) and the
answer is `{"output": [10 floats]}` from a CPU torch MLP (one torch thread). Two models: "heavy"
1024 -> 2048 -> 2048 -> 10, where the model dominates and batching should pay, and "light"
256 -> 1024 -> 1024 -> 10, where HTTP dominates.

Servers (each its own subprocess, pinned to core 0; wrk pinned to core 1):
  batched    litserve, LitAPI(max_batch_size=16, batch_timeout=0.005)
  unbatched  litserve, LitAPI(max_batch_size=1)
  fastapi    FastAPI + uvicorn (one worker), the model inline in a sync `def` handler
  litserve:B:T:W[:MODE[:DEVICES]]  extra litserve rows: max_batch_size B, batch_timeout T seconds,
             W workers_per_device, worker_mode MODE (thread, the default, or process), DEVICES CPU
             devices (default 1; in process mode one worker process per device)
  NAME@before  litserve server NAME importing litserve from --before DIR (added for each with --before)

A process-mode row is paired with each thread-mode row of the same B and T and as many workers in
all (W x DEVICES), and the runner prints their req/s ratio and p50 difference per concurrency.

Each cell (round x model x server) starts a fresh server, polls GET /health, checks its answers
against a reference computed here (the fixed vector, then 16 distinct vectors sent at once), warms up
with wrk, measures with wrk --latency, and stops the server by PID. The order of the servers is
reversed every model/round so drift hits them alike. litserve servers log the sizes of the batches
predict received; the mean batch size is reported per row.

Usage: python benchmarks/mlp.py [--duration 10] [--rounds 1] [--models heavy,light] [--concurrency 1,64]
       [--before DIR]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlp_servers as ms
from mlp_report import MODELS, TARGETS, MlpCell, print_ratios, ratios, table
from report import before_after, git_state, print_before_after, write_report
from runner import (
    SERVERS_DIR,
    Cpus,
    add_run_options,
    comma_list,
    int_list,
    interleaved,
    logs_dir,
    pick_cpus,
    say_if_busy,
    server_names,
    serving,
)
from wrk import has_wrk

DEFAULT_SERVERS = "batched,unbatched,fastapi"
CHECK_VECTORS = 16  # distinct inputs sent at once: a batched server must answer each with its own output
# After the measured run, before stopping a process-mode server: its worker processes print their
# counters at most every mlp_stats.REPORT_INTERVAL_S (0.2 s), and cannot print them at exit.
CHILD_STATS_WAIT_S = 0.6

Check = tuple[list[list[float]], list[list[float]]]  # the vectors sent, and the reference answers


@dataclass
class Session:
    """One run of this script: its settings, the reference answers, and what it saw along the way."""

    args: argparse.Namespace
    cpus: Cpus
    checks: dict[str, Check] = field(default_factory=dict)  # per model
    luas: dict[str, Path] = field(default_factory=dict)  # per model: the wrk script posting the fixed vector
    leftovers: list[int] = field(default_factory=list)  # worker processes already running at the start
    new_leftovers: list[str] = field(default_factory=list)
    answers: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (model, server): the fixed answer


def measure(session: Session, server: str, model: str, concurrency: int, log_path: Path) -> ms.Measured:
    args, cpus = session.args, session.cpus
    spec = ms.parse_spec(server)
    in_children = spec is not None and spec.worker_mode == "process"
    command = functools.partial(ms.server_command, server, model)
    with serving(server, command, cpus[0], log_path, args.startup_timeout, args.before) as process:
        url = process.base_url + "/predict"
        answer = ms.check_answers(url, f"{server} ({model})", *session.checks[model])
        got = ms.load(url, process.process.pid, concurrency, args, cpus[1], session.luas[model])
        if in_children:
            time.sleep(CHILD_STATS_WAIT_S)  # let the worker processes print their last counters
    got.answer, got.problems = answer, process.log_problems()
    if spec is not None and in_children and len(got.children) != spec.devices:
        got.problems.append(f"expected {spec.devices} worker processes, found children {got.children}")
    # The server stopped: none of its worker processes may outlive it.
    time.sleep(0.2)
    for child in got.children:
        if ms.is_worker_process(child):
            pid = process.process.pid
            got.problems.append(f"worker process {child} still running after the server (pid {pid}) stopped")
    got.batch_sizes, got.predict_time = ms.read_server_stats(log_path)
    threads = [] if got.predict_time is None else got.predict_time.get("torch_threads", [])
    if any(n != 1 for n in threads):
        got.problems.append(f"torch threads in the worker processes: {threads} (expected 1)")
    return got


def record(cell: MlpCell, got: ms.Measured, round_index: int, duration_s: float, log_path: Path) -> None:
    """Add one round to its cell and print its line."""
    result, name = got.result, cell.server
    cpu_ms = 1e3 * got.server_cpu_s / max(1, result.requests)
    cell.record(result, log_path, got.problems)
    cell.server_cpu_ms_per_request.append(cpu_ms)
    cell.children_cpu_ms_per_request.append(1e3 * got.children_cpu_s / max(1, result.requests))
    if got.batch_sizes is not None:
        cell.batch_sizes.append(got.batch_sizes)
    if got.predict_time is not None:
        cell.predict_time.append(got.predict_time)
    mean = MlpCell(name, cell.concurrency, batch_sizes=[got.batch_sizes] if got.batch_sizes else []).mean_batch_size()
    print(
        f"round {round_index + 1} {cell.model} c={cell.concurrency} {name:>10} {result.rps:8.0f} req/s "
        f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  requests {result.requests}  "
        f"non-2xx {result.non_2xx}  socket errors {result.socket_error_total}  "
        f"server CPU {100 * got.server_cpu_s / duration_s:.0f}% = {cpu_ms:.3f} ms/request"
        + (f" (worker processes {got.children_cpu_s / duration_s:.0%})" if ms.is_process(name) else "")
        + ("" if mean is None else f"  mean batch {mean:.2f}")
        + ("" if got.predict_time is None else f"  predict {got.predict_time}"),
        flush=True,
    )
    for line in got.problems[:5]:
        print(f"    server log: {line}", flush=True)


def run_cells(session: Session) -> list[MlpCell]:
    """Every round, model, concurrency and server, in ABBA order; the cells by model, concurrency, server."""
    args = session.args
    keys = [(m, c, s) for m in args.model_names for c in args.concurrencies for s in args.server_names]
    cells = {(m, c, s): MlpCell(s, c, model=m) for m, c, s in keys}
    logs = logs_dir()
    groups = [(m, c) for m in args.model_names for c in args.concurrencies]
    for round_index, (model, concurrency), name in interleaved(args.server_names, groups, args.rounds):
        log_path = logs / f"mlp-{model}-c{concurrency}-{name.replace(':', '_')}-r{round_index + 1}.log"
        got = measure(session, name, model, concurrency, log_path)
        session.answers.setdefault((model, name), got.answer)
        stray = [pid for pid in ms.leftover_worker_processes() if pid not in session.leftovers]
        if stray:
            session.new_leftovers.append(f"after {log_path.name}: worker processes {stray} still running")
            got.problems.append(f"worker processes {stray} still running after the server stopped")
        record(cells[model, concurrency, name], got, round_index, args.duration, log_path)
    return [cells[key] for key in keys]


def agreement(session: Session) -> dict[str, float]:
    """Every server answered the fixed input within TOLERANCE of the reference; also compare them pairwise."""
    found: dict[str, float] = {}
    for model in session.args.model_names:
        outputs = [session.answers[model, name] for name in session.args.server_names]
        worst = max((ms.max_abs_diff(a, b) for a in outputs for b in outputs), default=0.0)
        found[model] = worst
        print(f"{model}: every server answered the fixed input; largest difference between servers {worst:.2e}")
        if worst > ms.TOLERANCE:
            print(f"{model}: servers DISAGREE by more than {ms.TOLERANCE}", file=sys.stderr)
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(parser, duration_s=10.0, warmup_s=2.0, output="mlp.json")
    parser.add_argument(
        "--concurrency",
        default="64",
        help="wrk connections, a comma-separated list run in the same rounds (default 64; wrk -t1 at 1, else -t2)",
    )
    parser.add_argument("--models", default="heavy,light", help="which models (default heavy,light)")
    parser.add_argument(
        "--servers",
        default=DEFAULT_SERVERS,
        help=f"which servers (default {DEFAULT_SERVERS}; also litserve:B:T:W[:MODE[:DEVICES]])",
    )
    parser.add_argument(
        "--pin-wrk-only",
        action="store_true",
        help="pin only wrk (to the second core) and leave the server and its worker processes unpinned",
    )
    parser.add_argument("--verbose", action="store_true", help="print wrk's full output for every run")
    args = parser.parse_args(argv)
    args.model_names = comma_list(args.models)
    if any(m not in MODELS for m in args.model_names) or not args.model_names:
        parser.error(f"--models: pick from {MODELS}")
    args.server_names = server_names(parser, args, ms.is_litserve)
    for server in args.server_names:
        try:
            ms.parse_spec(server)
        except ValueError as exc:
            parser.error(str(exc))
    args.concurrencies = int_list(parser, "--concurrency", args.concurrency)
    if args.rounds < 1 or args.duration < 1 or not args.concurrencies or min(args.concurrencies) < 1:
        parser.error("--rounds, --duration and --concurrency must be >= 1")
    if args.pin_wrk_only and not args.pin:
        parser.error("--pin-wrk-only and --no-pin: pick one")
    return args


def start_session(args: argparse.Namespace, mlp_model: Any) -> Session:
    """Pick the cores, say how busy the machine is, and compute each model's reference answers."""
    cpus = pick_cpus(args.pin)
    session = Session(args, (None, cpus[1]) if args.pin_wrk_only else cpus)
    say_if_busy()
    session.leftovers = ms.leftover_worker_processes()
    if session.leftovers:
        print(f"note: litserve worker processes already running before the benchmark: {session.leftovers}")
    for model in args.model_names:
        vectors = [mlp_model.input_vector(model, mlp_model.INPUT_SEED + i) for i in range(CHECK_VECTORS)]
        session.checks[model] = (vectors, mlp_model.reference_output(model, vectors))
        session.luas[model] = ms.write_lua(model, vectors[0])
    cpus = session.cpus
    print(
        f"wrk -c{args.concurrency} (-t1 at c=1, else -t2): {args.duration:.0f} s per cell after "
        f"{args.warmup:.0f} s warm-up, rounds={args.rounds}, server cpu={cpus[0]}, wrk cpu={cpus[1]}"
    )
    for model, (vectors, expected) in session.checks.items():
        size = len(ms.request_body(vectors[0]))
        print(f"{model}: {mlp_model.MODELS[model]}, request body {size} bytes, reference {expected[0][:3]}...")
    return session


def report_settings(session: Session, mlp_model: Any) -> dict[str, Any]:
    args, cpus = session.args, session.cpus
    return {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "concurrency": args.concurrencies,
        "wrk_threads": "1 at c=1, else 2",
        "pin_wrk_only": args.pin_wrk_only,
        "server_cpu": cpus[0],
        "wrk_cpu": cpus[1],
        "servers": {name: " ".join(ms.server_command(name, "MODEL", 0)[1:]) for name in args.server_names},
        "models": {m: mlp_model.MODELS[m] for m in args.model_names},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not has_wrk():
        return 2
    sys.path.insert(0, str(SERVERS_DIR))
    import mlp_model  # the servers' own module: same model, same vector

    git_at_start = git_state()  # litserve may change while a long run goes on: record both ends
    session = start_session(args, mlp_model)
    ordered = run_cells(session)
    agreed = agreement(session)
    print()
    print(table(ordered))
    print()
    found = ratios(ordered)
    print_ratios(found)
    compared = before_after(ordered, lambda cell: f"{cell.model}_c{cell.concurrency}", "rps", "p50_ms")
    print_before_after(compared)
    if session.new_leftovers:
        print("litserve worker processes outlived their server:", *session.new_leftovers, sep="\n  ")
    else:
        print("no litserve worker process outlived its server")
    write_report(
        args.output,
        report_settings(session, mlp_model),
        git_at_start,
        args.before,
        answers={f"{m}/{s}": answer for (m, s), answer in session.answers.items()},
        max_difference_between_servers=agreed,
        table=[cell.as_json() for cell in ordered],
        ratios=found,
        targets=TARGETS,
        before_after=compared,
        leftover_worker_processes=session.new_leftovers,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
