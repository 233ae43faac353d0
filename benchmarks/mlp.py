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

A process-mode row is paired with each thread-mode row of the same B and T and as many workers in
all (W x DEVICES), and the runner prints their req/s ratio and p50 difference per concurrency.

Each cell (round x model x server) starts a fresh server, polls GET /health, checks its answers
against a reference computed here (the fixed vector, then 16 distinct vectors sent at once), warms up
with wrk, measures with wrk --latency, and stops the server by PID. The order of the servers is
reversed every model/round so drift hits them alike. litserve servers log the sizes of the batches
predict received; the mean batch size is reported per row.

Usage: python benchmarks/mlp.py [--duration 10] [--rounds 1] [--models heavy,light] [--concurrency 1,64]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from run import ServerProcess, WrkResult, free_port, git_state, interleaved, pick_cpus, run_wrk, say_if_busy

HERE = Path(__file__).resolve().parent
SERVERS_DIR = HERE / "servers"
RESULTS_DIR = HERE / "results"
LITSERVE_SCRIPT = SERVERS_DIR / "litserve_mlp.py"
FASTAPI_SCRIPT = SERVERS_DIR / "fastapi_mlp.py"
MODELS = ("heavy", "light")
ALIASES = {"batched": "litserve:16:0.005:1", "unbatched": "litserve:1:0:1"}
DEFAULT_SERVERS = "batched,unbatched,fastapi"
WORKER_MODES = ("thread", "process")
TOLERANCE = 1e-4
CHECK_VECTORS = 16  # distinct inputs sent at once: a batched server must answer each with its own output

# The project's targets (heavy model only).
TARGET_BATCHED_OVER_FASTAPI = 1.5
TARGET_BATCHED_OVER_UNBATCHED = 2.0
# Process mode: p50(process) - p50(thread) at concurrency 1, the per-request IPC cost.
TARGET_PROCESS_IPC_MS = 0.3
# After the measured run, before stopping a process-mode server: its worker processes print their
# counters at most every mlp_stats.REPORT_INTERVAL_S (0.2 s), and cannot print them at exit.
CHILD_STATS_WAIT_S = 0.6

_SOCKET_ERRORS = ("connect", "read", "write", "timeout")


@dataclass
class Cell:
    """One (model, server) cell over all rounds: wrk results, batch histograms, log problems."""

    model: str
    server: str
    concurrency: int = 64
    runs: list[WrkResult] = field(default_factory=list)
    server_cpu_ms_per_request: list[float] = field(default_factory=list)
    children_cpu_ms_per_request: list[float] = field(default_factory=list)
    batch_sizes: list[dict[int, int]] = field(default_factory=list)
    predict_time: list[dict[str, float]] = field(default_factory=list)
    server_log_problems: list[str] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(run, name) for run in self.runs)

    def mean_batch_size(self) -> float | None:
        """Requests per predict call, over every round (warm-up and checks included)."""
        total: dict[int, int] = {}
        for histogram in self.batch_sizes:
            for size, count in histogram.items():
                total[size] = total.get(size, 0) + count
        calls = sum(total.values())
        return None if calls == 0 else sum(size * count for size, count in total.items()) / calls

    def model_cpu_ms_per_request(self) -> float | None:
        """Worker-thread CPU ms inside the model per request served (from the servers' own accounting)."""
        cpu_s = sum(stats.get("predict_cpu_s", 0.0) for stats in self.predict_time)
        served = sum(size * count for histogram in self.batch_sizes for size, count in histogram.items())
        served = served or int(sum(stats.get("calls", 0) for stats in self.predict_time))
        return None if not served or not cpu_s else 1e3 * cpu_s / served

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "server": self.server,
            "concurrency": self.concurrency,
            "rps": self.median("rps"),
            "p50_ms": self.median("p50_ms"),
            "p99_ms": self.median("p99_ms"),
            "requests": sum(run.requests for run in self.runs),
            "non_2xx": sum(run.non_2xx for run in self.runs),
            "socket_errors": {kind: sum(run.socket_errors[kind] for run in self.runs) for kind in _SOCKET_ERRORS},
            "server_cpu_ms_per_request": statistics.median(self.server_cpu_ms_per_request)
            if self.server_cpu_ms_per_request
            else None,
            "children_cpu_ms_per_request": statistics.median(self.children_cpu_ms_per_request)
            if self.children_cpu_ms_per_request
            else None,
            "model_cpu_ms_per_request": self.model_cpu_ms_per_request(),
            "mean_batch_size": self.mean_batch_size(),
            "batch_sizes": [{str(k): v for k, v in sorted(h.items())} for h in self.batch_sizes],
            "predict_time": self.predict_time,
            "server_log_problems": self.server_log_problems,
            "rounds": [asdict(run) for run in self.runs],
        }


# --- servers and requests --------------------------------------------------------------------------


@dataclass(frozen=True)
class LitSpec:
    """A litserve row: litserve:B:T:W[:MODE[:DEVICES]]."""

    max_batch_size: int
    batch_timeout: float
    workers_per_device: int
    worker_mode: str = "thread"
    devices: int = 1

    @property
    def total_workers(self) -> int:
        return self.workers_per_device * self.devices


def parse_spec(server: str) -> LitSpec | None:
    """The litserve settings of server `server` (None for fastapi); ValueError if it is unknown."""
    spec = ALIASES.get(server, server)
    if spec == "fastapi":
        return None
    parts = spec.split(":")
    usage = "use batched, unbatched, fastapi or litserve:B:T:W[:MODE[:DEVICES]] (MODE thread|process)"
    if not 4 <= len(parts) <= 6 or parts[0] != "litserve":
        raise ValueError(f"unknown server {server!r}: {usage}")
    try:
        found = LitSpec(
            max_batch_size=int(parts[1]),
            batch_timeout=float(parts[2]),
            workers_per_device=int(parts[3]),
            worker_mode=parts[4] if len(parts) > 4 else "thread",
            devices=int(parts[5]) if len(parts) > 5 else 1,
        )
    except ValueError:
        raise ValueError(f"bad server {server!r}: {usage}") from None
    if found.worker_mode not in WORKER_MODES or found.max_batch_size < 1 or found.total_workers < 1:
        raise ValueError(f"bad server {server!r}: {usage}")
    return found


def server_command(server: str, model: str, port: int) -> list[str]:
    """The command line of server `server` (a name or litserve:B:T:W[:MODE[:DEVICES]]) for `model` on `port`."""
    spec = parse_spec(server)
    if spec is None:
        return [sys.executable, str(FASTAPI_SCRIPT), str(port), model]
    command = [sys.executable, str(LITSERVE_SCRIPT), str(port), model]
    command += [str(spec.max_batch_size), str(spec.batch_timeout), str(spec.workers_per_device)]
    if (spec.worker_mode, spec.devices) != ("thread", 1):  # the old command line otherwise
        command += [spec.worker_mode, str(spec.devices)]
    return command


def request_body(vector: list[float]) -> str:
    return json.dumps({"input": vector}, separators=(",", ":"))


def write_lua(model: str, vector: list[float]) -> Path:
    """A wrk script whose every request posts the fixed vector (generated, under results/)."""
    path = RESULTS_DIR / f"mlp_{model}.lua"
    path.write_text(
        f"-- generated by benchmarks/mlp.py: POST the fixed {model} input vector\n"
        'wrk.method = "POST"\n'
        f"wrk.body = '{request_body(vector)}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return path


def post(url: str, vector: list[float]) -> list[float]:
    data = request_body(vector).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30.0) as response:
        answer = json.loads(response.read())
    output = answer.get("output") if isinstance(answer, dict) else None
    if not isinstance(output, list) or len(output) != 10 or not all(isinstance(v, float) for v in output):
        raise RuntimeError(f"{url} answered {answer!r}: expected {{'output': [10 floats]}}")
    return output


def max_abs_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def check_answers(url: str, name: str, vectors: list[list[float]], expected: list[list[float]]) -> list[float]:
    """The fixed vector alone, then every vector at once; return the answer for the fixed vector."""
    first = post(url, vectors[0])
    if max_abs_diff(first, expected[0]) > TOLERANCE:
        raise RuntimeError(f"{name} answered {first} for the fixed input, expected {expected[0]}")
    with concurrent.futures.ThreadPoolExecutor(len(vectors)) as pool:
        answers = list(pool.map(lambda v: post(url, v), vectors))
    for i, (got, want) in enumerate(zip(answers, expected, strict=True)):
        if max_abs_diff(got, want) > TOLERANCE:
            raise RuntimeError(f"{name} answered input #{i} (sent concurrently) with {got}, expected {want}")
    return first


_BATCH_LINE = re.compile(r"^batch sizes: (\{.*\})$", re.M)
_PREDICT_LINE = re.compile(r"^predict time: (\{.*\})$", re.M)
_CHILD_LINE = re.compile(r"^child stats: (\{.*\})$", re.M)
_PREDICT_KEYS = ("predict_s", "predict_cpu_s", "calls")


def read_server_stats(log_path: Path) -> tuple[dict[int, int] | None, dict[str, float] | None]:
    """The batch histogram and predict time from the log: the server process's own lines (printed at
    exit) plus, in process mode, the last `child stats` line of every worker process, added up."""
    text = log_path.read_text(errors="replace")
    batch = _BATCH_LINE.search(text)
    predict = _PREDICT_LINE.search(text)
    histogram = None if batch is None else {int(k): int(v) for k, v in json.loads(batch.group(1)).items()}
    predict_time = None if predict is None else json.loads(predict.group(1))
    last_by_pid: dict[int, dict[str, Any]] = {}
    for match in _CHILD_LINE.finditer(text):
        try:
            stats = json.loads(match.group(1))
        except ValueError:  # a line cut short by the process's end
            continue
        last_by_pid[int(stats["pid"])] = stats
    if last_by_pid:
        histogram = dict(histogram or {})
        predict_time = dict(predict_time or {})
        predict_time["worker_processes"] = len(last_by_pid)
        for stats in last_by_pid.values():
            for size, count in stats.get("batch_sizes", {}).items():
                histogram[int(size)] = histogram.get(int(size), 0) + int(count)
            for key in _PREDICT_KEYS:
                if key in stats:
                    predict_time[key] = round(predict_time.get(key, 0.0) + stats[key], 4)
            # the span of the busiest worker process (they run side by side)
            predict_time["span_s"] = max(predict_time.get("span_s", 0.0), stats.get("span_s", 0.0))
            if "torch_threads" in stats:  # setup()'s torch.set_num_threads(1), seen from the worker process
                threads = predict_time.setdefault("torch_threads", [])
                threads.append(stats["torch_threads"])
    return histogram, predict_time


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds so far of each live child process of `pid` (process mode: the worker processes)."""
    found: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def is_worker_process(pid: int) -> bool:
    """Whether `pid` is a running (not zombie) `python -m litserve.runtime.child` process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return state != "Z" and b"litserve.runtime.child" in argv


def leftover_worker_processes() -> list[int]:
    """`litserve.runtime.child` processes still running (there should be none between cells)."""
    return sorted(pid for pid in (int(p.name) for p in Path("/proc").glob("[0-9]*")) if is_worker_process(pid))


@dataclass
class Measured:
    result: WrkResult
    server_cpu_s: float  # the server process and its children (process mode: the worker processes)
    children_cpu_s: float  # of which the children
    answer: list[float]
    problems: list[str]
    batch_sizes: dict[int, int] | None
    predict_time: dict[str, float] | None


def measure(
    server: str,
    model: str,
    concurrency: int,
    args: argparse.Namespace,
    cpus: tuple[int | None, int | None],
    log_path: Path,
    lua: Path,
    check: tuple[list[list[float]], list[list[float]]],
) -> Measured:
    server_cpu, wrk_cpu = cpus
    spec = parse_spec(server)
    in_children = spec is not None and spec.worker_mode == "process"
    port = free_port()
    process = ServerProcess(server, port, server_cpu, log_path, command=server_command(server, model, port))
    pid = process.process.pid
    children: list[int] = []
    try:
        process.wait_ready(args.startup_timeout)
        url = process.base_url + "/predict"
        answer = check_answers(url, f"{server} ({model})", *check)
        if args.warmup > 0:
            run_wrk(url, concurrency, args.warmup, wrk_cpu, lua)
        cpu_before_s, children_before_s = process_cpu_s(pid), children_cpu_s(pid)
        result, output = run_wrk(url, concurrency, args.duration, wrk_cpu, lua)
        children_after_s = children_cpu_s(pid)
        own_cpu_s = process_cpu_s(pid) - cpu_before_s
        children_s = sum(cpu - children_before_s.get(child, 0.0) for child, cpu in children_after_s.items())
        children = sorted(children_after_s)
        if args.verbose:
            print(output)
        if process.process.poll() is not None:
            raise RuntimeError(f"{server} died under load (exit {process.process.returncode}); see {log_path}")
        if in_children:
            time.sleep(CHILD_STATS_WAIT_S)  # let the worker processes print their last counters
    finally:
        code = process.stop()
    problems = process.log_problems()
    if code not in (0, None) and code != -signal.SIGINT:
        problems.append(f"exit code {code}")
    if in_children and len(children) != spec.devices:
        problems.append(f"expected {spec.devices} worker processes, found children {children}")
    # The server stopped: none of its worker processes may outlive it.
    time.sleep(0.2)
    for child in children:
        if is_worker_process(child):
            problems.append(f"worker process {child} still running after the server (pid {pid}) stopped")
    histogram, predict_time = read_server_stats(log_path)
    if predict_time is not None and any(n != 1 for n in predict_time.get("torch_threads", [])):
        problems.append(f"torch threads in the worker processes: {predict_time['torch_threads']} (expected 1)")
    return Measured(result, own_cpu_s + children_s, children_s, answer, problems, histogram, predict_time)


# --- report ----------------------------------------------------------------------------------------


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(cells: list[Cell]) -> str:
    lines = [
        "| model | c | server | req/s | p50 ms | p99 ms | non-2xx | socket errors | mean batch "
        "| server CPU ms/req | of which worker processes | model CPU ms/req |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:
        row = cell.as_json()
        mean_batch = row["mean_batch_size"]
        in_children = row["children_cpu_ms_per_request"] if _is_process(cell.server) else None
        lines.append(
            f"| {cell.model} | {cell.concurrency} | {cell.server} | {row['rps']:.0f} | {row['p50_ms']:.2f} "
            f"| {row['p99_ms']:.2f} | {row['non_2xx']} | {sum(row['socket_errors'].values())} "
            f"| {_num(mean_batch, 2)} | {_num(row['server_cpu_ms_per_request'], 3)} | {_num(in_children, 3)} "
            f"| {_num(row['model_cpu_ms_per_request'], 3)} |"
        )
    return "\n".join(lines)


def _is_process(server: str) -> bool:
    spec = parse_spec(server)
    return spec is not None and spec.worker_mode == "process"


def process_pairs(servers: list[str]) -> list[tuple[str, str]]:
    """(process row, thread row) pairs: same max_batch_size and batch_timeout, as many workers in all."""
    pairs = []
    for process in servers:
        spec = parse_spec(process)
        if spec is None or spec.worker_mode != "process":
            continue
        for thread in servers:
            other = parse_spec(thread)
            if (
                other is not None
                and other.worker_mode == "thread"
                and (other.max_batch_size, other.batch_timeout, other.total_workers)
                == (spec.max_batch_size, spec.batch_timeout, spec.total_workers)
            ):
                pairs.append((process, thread))
    return pairs


def ratios(cells: list[Cell]) -> dict[str, float | None]:
    """batched/fastapi and batched/unbatched req/s per model (and concurrency, when there are several);
    for each process/thread pair, their req/s ratio and p50 difference (ms) per model and concurrency."""
    by_key = {(cell.model, cell.server, cell.concurrency): cell for cell in cells}
    concurrencies = sorted({cell.concurrency for cell in cells})
    servers = list(dict.fromkeys(cell.server for cell in cells))
    found: dict[str, float | None] = {}
    for model in MODELS:
        for concurrency in concurrencies:
            suffix = "" if len(concurrencies) == 1 else f"_c{concurrency}"
            batched = by_key.get((model, "batched", concurrency))
            for other in ("fastapi", "unbatched"):
                base = by_key.get((model, other, concurrency))
                if batched is None or base is None:
                    continue
                found[f"{model}_batched_over_{other}_rps{suffix}"] = batched.median("rps") / base.median("rps")
            for process, thread in process_pairs(servers):
                p, t = by_key.get((model, process, concurrency)), by_key.get((model, thread, concurrency))
                if p is None or t is None:
                    continue
                pair = f"{model}_c{concurrency}_{process}_vs_{thread}"
                found[f"{pair}_rps_ratio"] = p.median("rps") / t.median("rps")
                found[f"{pair}_p50_diff_ms"] = p.median("p50_ms") - t.median("p50_ms")
                # The two ran side by side in every round: the median of the per-round differences
                # shrugs off a round where the machine was busy.
                paired = [a.p50_ms - b.p50_ms for a, b in zip(p.runs, t.runs, strict=False)]
                found[f"{pair}_p50_diff_ms_paired"] = statistics.median(paired)
    return found


def _verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def print_ratios(found: dict[str, float | None]) -> None:
    targets = {
        "heavy_batched_over_fastapi_rps": TARGET_BATCHED_OVER_FASTAPI,
        "heavy_batched_over_unbatched_rps": TARGET_BATCHED_OVER_UNBATCHED,
    }
    for name, value in found.items():
        if value is None:
            continue
        # The batching targets are for c=64: with several concurrencies, only the _c64 figures are judged.
        target = targets.get(name.removesuffix("_c64"))
        if name.endswith(("_p50_diff_ms", "_p50_diff_ms_paired")):
            what = "median of per-round p50 differences" if name.endswith("_paired") else "p50(process) - p50(thread)"
            if "_c1_" in name:
                ok = value < TARGET_PROCESS_IPC_MS
                note = f"{what} at c=1, target < {TARGET_PROCESS_IPC_MS} ms: {_verdict(ok)}"
            else:
                note = f"{what}, no target"
            print(f"{name}: {value:+.3f} ms ({note})")
            continue
        if name.endswith("_rps_ratio"):
            note = "process / thread req/s, no target"
        else:
            note = "no target" if target is None else f"target >= {target}: {_verdict(value >= target)}"
        print(f"{name}: {value:.3f} ({note})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measured wrk per cell (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk warm-up per cell (0: none)")
    parser.add_argument(
        "--concurrency",
        default="64",
        help="wrk connections, a comma-separated list run in the same rounds (default 64; wrk -t1 at 1, else -t2)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything N times; report medians")
    parser.add_argument("--models", default="heavy,light", help="which models (default heavy,light)")
    parser.add_argument(
        "--servers",
        default=DEFAULT_SERVERS,
        help=f"which servers (default {DEFAULT_SERVERS}; also litserve:B:T:W[:MODE[:DEVICES]])",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin the server to one core and wrk to another with taskset (default on)",
    )
    parser.add_argument(
        "--pin-wrk-only",
        action="store_true",
        help="pin only wrk (to the second core) and leave the server and its worker processes unpinned",
    )
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="seconds to wait for GET /health")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "mlp.json", help="where to write JSON")
    parser.add_argument("--verbose", action="store_true", help="print wrk's full output for every run")
    args = parser.parse_args(argv)
    args.model_names = [m.strip() for m in args.models.split(",") if m.strip()]
    args.server_names = [s.strip() for s in args.servers.split(",") if s.strip()]
    if any(m not in MODELS for m in args.model_names) or not args.model_names:
        parser.error(f"--models: pick from {MODELS}")
    for server in args.server_names:
        try:
            server_command(server, "heavy", 0)
        except ValueError as exc:
            parser.error(str(exc))
    try:
        args.concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error("--concurrency: a comma-separated list of integers")
    if args.rounds < 1 or args.duration < 1 or not args.concurrencies or min(args.concurrencies) < 1:
        parser.error("--rounds, --duration and --concurrency must be >= 1")
    if args.pin_wrk_only and not args.pin:
        parser.error("--pin-wrk-only and --no-pin: pick one")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: run `bash benchmarks/setup.sh` first", file=sys.stderr)
        return 2
    sys.path.insert(0, str(SERVERS_DIR))
    import mlp_model  # the servers' own module: same model, same vector

    git_at_start = git_state()  # litserve may change while a long run goes on: record both ends
    cpus = pick_cpus(args.pin)
    if args.pin_wrk_only:
        cpus = (None, cpus[1])
    say_if_busy()
    leftovers = leftover_worker_processes()
    if leftovers:
        print(f"note: litserve worker processes already running before the benchmark: {leftovers}")
    logs_dir = RESULTS_DIR / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    checks: dict[str, tuple[list[list[float]], list[list[float]]]] = {}
    luas: dict[str, Path] = {}
    for model in args.model_names:
        vectors = [mlp_model.input_vector(model, mlp_model.INPUT_SEED + i) for i in range(CHECK_VECTORS)]
        checks[model] = (vectors, mlp_model.reference_output(model, vectors))
        luas[model] = write_lua(model, vectors[0])
    print(
        f"wrk -c{args.concurrency} (-t1 at c=1, else -t2): {args.duration:.0f} s per cell after "
        f"{args.warmup:.0f} s warm-up, rounds={args.rounds}, server cpu={cpus[0]}, wrk cpu={cpus[1]}"
    )
    for model in args.model_names:
        size = len(request_body(checks[model][0][0]))
        print(f"{model}: {mlp_model.MODELS[model]}, request body {size} bytes, reference {checks[model][1][0][:3]}...")
    cells = {(m, s, c): Cell(m, s, c) for m in args.model_names for c in args.concurrencies for s in args.server_names}
    answers: dict[tuple[str, str], list[float]] = {}
    new_leftovers: list[str] = []
    groups = [(m, c) for m in args.model_names for c in args.concurrencies]
    for round_index, (model, concurrency), name in interleaved(args.server_names, groups, args.rounds):
        safe = name.replace(":", "_")
        log_path = logs_dir / f"mlp-{model}-c{concurrency}-{safe}-r{round_index + 1}.log"
        got = measure(name, model, concurrency, args, cpus, log_path, luas[model], checks[model])
        cell = cells[model, name, concurrency]
        cell.runs.append(got.result)
        cpu_ms = 1e3 * got.server_cpu_s / max(1, got.result.requests)
        cell.server_cpu_ms_per_request.append(cpu_ms)
        cell.children_cpu_ms_per_request.append(1e3 * got.children_cpu_s / max(1, got.result.requests))
        answers.setdefault((model, name), got.answer)
        stray = [pid for pid in leftover_worker_processes() if pid not in leftovers]
        if stray:
            new_leftovers.append(f"after {log_path.name}: worker processes {stray} still running")
            got.problems.append(f"worker processes {stray} still running after the server stopped")
        if got.batch_sizes is not None:
            cell.batch_sizes.append(got.batch_sizes)
        if got.predict_time is not None:
            cell.predict_time.append(got.predict_time)
        cell.server_log_problems.extend(f"{log_path.name}: {line}" for line in got.problems)
        result = got.result
        mean = Cell(model, name, batch_sizes=[got.batch_sizes] if got.batch_sizes else []).mean_batch_size()
        print(
            f"round {round_index + 1} {model} c={concurrency} {name:>10} {result.rps:8.0f} req/s "
            f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  requests {result.requests}  "
            f"non-2xx {result.non_2xx}  socket errors {result.socket_error_total}  "
            f"server CPU {100 * got.server_cpu_s / args.duration:.0f}% = {cpu_ms:.3f} ms/request"
            + (f" (worker processes {got.children_cpu_s / args.duration:.0%})" if _is_process(name) else "")
            + ("" if mean is None else f"  mean batch {mean:.2f}")
            + ("" if got.predict_time is None else f"  predict {got.predict_time}"),
            flush=True,
        )
        for line in got.problems[:5]:
            print(f"    server log: {line}", flush=True)
    # Every server answered the fixed input within TOLERANCE of the reference; also compare them pairwise.
    agreement: dict[str, float] = {}
    for model in args.model_names:
        outputs = [(name, answers[model, name]) for name in args.server_names]
        worst = max((max_abs_diff(a, b) for _, a in outputs for _, b in outputs), default=0.0)
        agreement[model] = worst
        print(f"{model}: every server answered the fixed input; largest difference between servers {worst:.2e}")
        if worst > TOLERANCE:
            print(f"{model}: servers DISAGREE by more than {TOLERANCE}", file=sys.stderr)
    ordered = [cells[m, s, c] for m in args.model_names for c in args.concurrencies for s in args.server_names]
    print()
    print(markdown_table(ordered))
    print()
    found = ratios(ordered)
    print_ratios(found)
    if new_leftovers:
        print("litserve worker processes outlived their server:", *new_leftovers, sep="\n  ")
    else:
        print("no litserve worker process outlived its server")
    report = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "concurrency": args.concurrencies,
            "wrk_threads": "1 at c=1, else 2",
            "pin_wrk_only": args.pin_wrk_only,
            "server_cpu": cpus[0],
            "wrk_cpu": cpus[1],
            "servers": {name: " ".join(server_command(name, "MODEL", 0)[1:]) for name in args.server_names},
            "models": {m: mlp_model.MODELS[m] for m in args.model_names},
        },
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "git": {"at_start": git_at_start, "at_end": git_state()},
        "answers": {f"{m}/{s}": answers[m, s] for m, s in answers},
        "max_difference_between_servers": agreement,
        "table": [cell.as_json() for cell in ordered],
        "ratios": found,
        "targets": {
            "heavy_batched_over_fastapi_rps": f">= {TARGET_BATCHED_OVER_FASTAPI}",
            "heavy_batched_over_unbatched_rps": f">= {TARGET_BATCHED_OVER_UNBATCHED}",
            "*_c1_*_p50_diff_ms (process - thread)": f"< {TARGET_PROCESS_IPC_MS}",
        },
        "leftover_worker_processes": new_leftovers,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
