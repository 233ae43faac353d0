"""MLP batching benchmark: litserve batched vs unbatched vs a plain FastAPI app, under wrk at c=64.

Every request is `POST /predict` with `{"input": [d_in floats]}` (one fixed, seeded vector) and the
answer is `{"output": [10 floats]}` from a CPU torch MLP (one torch thread). Two models: "heavy"
1024 -> 2048 -> 2048 -> 10, where the model dominates and batching should pay, and "light"
256 -> 1024 -> 1024 -> 10, where HTTP dominates.

Servers (each its own subprocess, pinned to core 0; wrk pinned to core 1):
  batched    litserve, LitAPI(max_batch_size=16, batch_timeout=0.005)
  unbatched  litserve, LitAPI(max_batch_size=1)
  fastapi    FastAPI + uvicorn (one worker), the model inline in a sync `def` handler
  litserve:B:T:W  extra litserve rows: max_batch_size B, batch_timeout T seconds, W workers_per_device

Each cell (round x model x server) starts a fresh server, polls GET /health, checks its answers
against a reference computed here (the fixed vector, then 16 distinct vectors sent at once), warms up
with wrk, measures with wrk --latency, and stops the server by PID. The order of the servers is
reversed every model/round so drift hits them alike. litserve servers log the sizes of the batches
predict received; the mean batch size is reported per row.

Usage: python benchmarks/mlp.py [--duration 10] [--rounds 1] [--models heavy,light]
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
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from run import ServerProcess, WrkResult, free_port, git_state, pick_cpus, run_wrk

HERE = Path(__file__).resolve().parent
SERVERS_DIR = HERE / "servers"
RESULTS_DIR = HERE / "results"
LITSERVE_SCRIPT = SERVERS_DIR / "litserve_mlp.py"
FASTAPI_SCRIPT = SERVERS_DIR / "fastapi_mlp.py"
MODELS = ("heavy", "light")
ALIASES = {"batched": "litserve:16:0.005:1", "unbatched": "litserve:1:0:1"}
DEFAULT_SERVERS = "batched,unbatched,fastapi"
TOLERANCE = 1e-4
CHECK_VECTORS = 16  # distinct inputs sent at once: a batched server must answer each with its own output

# The project's targets (heavy model only).
TARGET_BATCHED_OVER_FASTAPI = 1.5
TARGET_BATCHED_OVER_UNBATCHED = 2.0

_SOCKET_ERRORS = ("connect", "read", "write", "timeout")


@dataclass
class Cell:
    """One (model, server) cell over all rounds: wrk results, batch histograms, log problems."""

    model: str
    server: str
    runs: list[WrkResult] = field(default_factory=list)
    server_cpu_ms_per_request: list[float] = field(default_factory=list)
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
            "rps": self.median("rps"),
            "p50_ms": self.median("p50_ms"),
            "p99_ms": self.median("p99_ms"),
            "requests": sum(run.requests for run in self.runs),
            "non_2xx": sum(run.non_2xx for run in self.runs),
            "socket_errors": {kind: sum(run.socket_errors[kind] for run in self.runs) for kind in _SOCKET_ERRORS},
            "server_cpu_ms_per_request": statistics.median(self.server_cpu_ms_per_request)
            if self.server_cpu_ms_per_request
            else None,
            "model_cpu_ms_per_request": self.model_cpu_ms_per_request(),
            "mean_batch_size": self.mean_batch_size(),
            "batch_sizes": [{str(k): v for k, v in sorted(h.items())} for h in self.batch_sizes],
            "predict_time": self.predict_time,
            "server_log_problems": self.server_log_problems,
            "rounds": [asdict(run) for run in self.runs],
        }


# --- servers and requests --------------------------------------------------------------------------


def server_command(server: str, model: str, port: int) -> list[str]:
    """The command line of server `server` (a name or litserve:B:T:W) for `model` on `port`."""
    spec = ALIASES.get(server, server)
    if spec == "fastapi":
        return [sys.executable, str(FASTAPI_SCRIPT), str(port), model]
    parts = spec.split(":")
    if len(parts) != 4 or parts[0] != "litserve":
        raise ValueError(f"unknown server {server!r}: use batched, unbatched, fastapi or litserve:B:T:W")
    _, batch, timeout, workers = parts
    return [sys.executable, str(LITSERVE_SCRIPT), str(port), model, str(int(batch)), str(float(timeout)), workers]


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


def read_server_stats(log_path: Path) -> tuple[dict[int, int] | None, dict[str, float] | None]:
    text = log_path.read_text(errors="replace")
    batch = _BATCH_LINE.search(text)
    predict = _PREDICT_LINE.search(text)
    histogram = None if batch is None else {int(k): int(v) for k, v in json.loads(batch.group(1)).items()}
    return histogram, None if predict is None else json.loads(predict.group(1))


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    result: WrkResult
    server_cpu_s: float
    answer: list[float]
    problems: list[str]
    batch_sizes: dict[int, int] | None
    predict_time: dict[str, float] | None


def measure(
    server: str,
    model: str,
    args: argparse.Namespace,
    cpus: tuple[int | None, int | None],
    log_path: Path,
    lua: Path,
    check: tuple[list[list[float]], list[list[float]]],
) -> Measured:
    server_cpu, wrk_cpu = cpus
    port = free_port()
    process = ServerProcess(server, port, server_cpu, log_path, command=server_command(server, model, port))
    try:
        process.wait_ready(args.startup_timeout)
        url = process.base_url + "/predict"
        answer = check_answers(url, f"{server} ({model})", *check)
        if args.warmup > 0:
            run_wrk(url, args.concurrency, args.warmup, wrk_cpu, lua)
        cpu_before_s = process_cpu_s(process.process.pid)
        result, output = run_wrk(url, args.concurrency, args.duration, wrk_cpu, lua)
        server_cpu_s = process_cpu_s(process.process.pid) - cpu_before_s
        if args.verbose:
            print(output)
        if process.process.poll() is not None:
            raise RuntimeError(f"{server} died under load (exit {process.process.returncode}); see {log_path}")
    finally:
        code = process.stop()
    problems = process.log_problems()
    if code not in (0, None) and code != -signal.SIGINT:
        problems.append(f"exit code {code}")
    histogram, predict_time = read_server_stats(log_path)
    return Measured(result, server_cpu_s, answer, problems, histogram, predict_time)


# --- report ----------------------------------------------------------------------------------------


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(cells: list[Cell]) -> str:
    lines = [
        "| model | server | req/s | p50 ms | p99 ms | non-2xx | socket errors | mean batch "
        "| server CPU ms/req | model CPU ms/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:
        row = cell.as_json()
        mean_batch = row["mean_batch_size"]
        lines.append(
            f"| {cell.model} | {cell.server} | {row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['non_2xx']} | {sum(row['socket_errors'].values())} "
            f"| {_num(mean_batch, 2)} | {_num(row['server_cpu_ms_per_request'], 3)} "
            f"| {_num(row['model_cpu_ms_per_request'], 3)} |"
        )
    return "\n".join(lines)


def ratios(cells: list[Cell]) -> dict[str, float | None]:
    by_key = {(cell.model, cell.server): cell.median("rps") for cell in cells}
    found: dict[str, float | None] = {}
    for model in MODELS:
        batched = by_key.get((model, "batched"))
        for other in ("fastapi", "unbatched"):
            base = by_key.get((model, other))
            found[f"{model}_batched_over_{other}_rps"] = None if batched is None or not base else batched / base
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
        target = targets.get(name)
        note = "no target" if target is None else f"target >= {target}: {_verdict(value >= target)}"
        print(f"{name}: {value:.3f} ({note})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measured wrk per cell (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk warm-up per cell (0: none)")
    parser.add_argument("--concurrency", type=int, default=64, help="wrk connections (default 64, with -t2)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything N times; report medians")
    parser.add_argument("--models", default="heavy,light", help="which models (default heavy,light)")
    parser.add_argument(
        "--servers", default=DEFAULT_SERVERS, help=f"which servers (default {DEFAULT_SERVERS}; also litserve:B:T:W)"
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin the server to one core and wrk to another with taskset (default on)",
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
    if args.rounds < 1 or args.duration < 1 or args.concurrency < 1:
        parser.error("--rounds, --duration and --concurrency must be >= 1")
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
    logs_dir = RESULTS_DIR / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    checks: dict[str, tuple[list[list[float]], list[list[float]]]] = {}
    luas: dict[str, Path] = {}
    for model in args.model_names:
        vectors = [mlp_model.input_vector(model, mlp_model.INPUT_SEED + i) for i in range(CHECK_VECTORS)]
        checks[model] = (vectors, mlp_model.reference_output(model, vectors))
        luas[model] = write_lua(model, vectors[0])
    print(
        f"wrk -t2 -c{args.concurrency}: {args.duration:.0f} s per cell after {args.warmup:.0f} s warm-up, "
        f"rounds={args.rounds}, server cpu={cpus[0]}, wrk cpu={cpus[1]}"
    )
    for model in args.model_names:
        size = len(request_body(checks[model][0][0]))
        print(f"{model}: {mlp_model.MODELS[model]}, request body {size} bytes, reference {checks[model][1][0][:3]}...")
    cells = {(m, s): Cell(m, s) for m in args.model_names for s in args.server_names}
    answers: dict[tuple[str, str], list[float]] = {}
    flip = False
    for round_index in range(args.rounds):
        for model in args.model_names:
            names = list(reversed(args.server_names)) if flip else list(args.server_names)
            flip = not flip
            for name in names:
                safe = name.replace(":", "_")
                log_path = logs_dir / f"mlp-{model}-{safe}-r{round_index + 1}.log"
                got = measure(name, model, args, cpus, log_path, luas[model], checks[model])
                cell = cells[model, name]
                cell.runs.append(got.result)
                cpu_ms = 1e3 * got.server_cpu_s / max(1, got.result.requests)
                cell.server_cpu_ms_per_request.append(cpu_ms)
                answers.setdefault((model, name), got.answer)
                if got.batch_sizes is not None:
                    cell.batch_sizes.append(got.batch_sizes)
                if got.predict_time is not None:
                    cell.predict_time.append(got.predict_time)
                cell.server_log_problems.extend(f"{log_path.name}: {line}" for line in got.problems)
                result = got.result
                mean = Cell(model, name, batch_sizes=[got.batch_sizes] if got.batch_sizes else []).mean_batch_size()
                print(
                    f"round {round_index + 1} {model} {name:>10} {result.rps:8.0f} req/s "
                    f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  requests {result.requests}  "
                    f"non-2xx {result.non_2xx}  socket errors {result.socket_error_total}  "
                    f"server CPU {100 * got.server_cpu_s / args.duration:.0f}% = {cpu_ms:.3f} ms/request"
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
    ordered = [cells[m, s] for m in args.model_names for s in args.server_names]
    print()
    print(markdown_table(ordered))
    print()
    found = ratios(ordered)
    print_ratios(found)
    report = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "wrk_threads": 2,
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
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
