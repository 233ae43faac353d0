"""Benchmark litserve against a bare Quart app with wrk; print a markdown table and the target ratios.

Each measurement (server x concurrency x round) runs against a fresh server subprocess:
start it, poll GET /health until 200, check one answer, warm up with wrk, measure with wrk,
stop it (SIGINT, then SIGTERM, then SIGKILL, by PID). Servers run one at a time, alternating
bare and ours per concurrency level, so slow drift of a noisy machine hits both alike.
With --pin (default) the server runs on one core (taskset -c 0) and wrk on another (-c 1).

Usage: bash benchmarks/setup.sh && python benchmarks/run.py [--duration 5] [--rounds 1]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVERS: dict[str, Path] = {
    "bare": HERE / "servers" / "bare_quart.py",
    "ours": HERE / "servers" / "litserve_square.py",
    # Our server again, importing litserve from the checkout given by --before (e.g. a `git worktree`
    # of an older commit), so a change is measured before and after in one run.
    "before": HERE / "servers" / "litserve_square.py",
}
BEFORE_SOURCE: Path | None = None
LUA_SCRIPT = HERE / "post.lua"
RESULTS_DIR = HERE / "results"
EXPECTED = {"output": 49}

# The project's targets.
TARGET_RPS_RATIO_C16 = 0.9
TARGET_P50_OVERHEAD_C1_MS = 0.15

# Cores already busy before a run (another process) above which its figures are not worth comparing.
BUSY_CORES_LIMIT = 0.25

_UNIT_TO_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([0-9.]+)(us|ms|s|m|h)\b"
_SOCKET_ERRORS = ("connect", "read", "write", "timeout")


@dataclass
class WrkResult:
    """What one wrk run reported."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_SOCKET_ERRORS, 0))

    @property
    def socket_error_total(self) -> int:
        return sum(self.socket_errors.values())


@dataclass
class Cell:
    """One (server, concurrency) cell over all rounds; reports medians and summed error counts."""

    server: str
    concurrency: int
    runs: list[WrkResult] = field(default_factory=list)
    server_log_problems: list[str] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(run, name) for run in self.runs)

    def as_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "concurrency": self.concurrency,
            "rps": self.median("rps"),
            "p50_ms": self.median("p50_ms"),
            "p99_ms": self.median("p99_ms"),
            "requests": sum(run.requests for run in self.runs),
            "non_2xx": sum(run.non_2xx for run in self.runs),
            "socket_errors": {kind: sum(run.socket_errors[kind] for run in self.runs) for kind in _SOCKET_ERRORS},
            "server_log_problems": self.server_log_problems,
            "rounds": [asdict(run) for run in self.runs],
        }


# --- wrk -----------------------------------------------------------------------------------------


def _to_ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_TO_MS[unit]


def parse_wrk(output: str) -> WrkResult:
    """Parse wrk's text output (run with --latency) into req/s, p50/p99 in ms and error counts."""
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.M)
    p50 = re.search(r"^\s+50(?:\.0+)?%\s+" + _TIME, output, re.M)
    p99 = re.search(r"^\s+99(?:\.0+)?%\s+" + _TIME, output, re.M)
    requests = re.search(r"^\s+(\d+) requests in ", output, re.M)
    if rps is None or p50 is None or p99 is None or requests is None:
        raise ValueError(f"could not parse wrk's output:\n{output}")
    result = WrkResult(
        rps=float(rps.group(1)),
        p50_ms=_to_ms(p50.group(1), p50.group(2)),
        p99_ms=_to_ms(p99.group(1), p99.group(2)),
        requests=int(requests.group(1)),
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx is not None:
        result.non_2xx = int(non_2xx.group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if errors is not None:
        connect, read, write, timeout = (int(g) for g in errors.groups())
        result.socket_errors = {"connect": connect, "read": read, "write": write, "timeout": timeout}
    return result


def wrk_command(
    url: str, concurrency: int, duration_s: float, cpu: int | None, script: Path | None = None
) -> list[str]:
    threads = 1 if concurrency == 1 else 2
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        "-s",
        str(LUA_SCRIPT if script is None else script),
        url,
    ]
    return _pinned(command, cpu)


def run_wrk(
    url: str, concurrency: int, duration_s: float, cpu: int | None, script: Path | None = None
) -> tuple[WrkResult, str]:
    """Run wrk once (`script`: the Lua request script, default post.lua); raise if wrk fails."""
    command = wrk_command(url, concurrency, duration_s, cpu, script)
    # wrk stops by itself after -d; the timeout only guards against a wedged run.
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 30, check=False)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}:\n{output}")
    return parse_wrk(output), output


# --- servers -------------------------------------------------------------------------------------


def _pinned(command: list[str], cpu: int | None) -> list[str]:
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A benchmark server subprocess, its log file, and a bounded stop by PID."""

    def __init__(
        self,
        name: str,
        port: int,
        cpu: int | None,
        log_path: Path,
        command: list[str] | None = None,
        source: Path | None = None,
    ) -> None:
        """Start `command` (default: `python SERVERS[name] PORT`), pinned to `cpu`, logging to `log_path`.

        `source`: a checkout whose litserve the server imports (the "before" server uses --before DIR).
        """
        self.name = name
        self.port = port
        self.log_path = log_path
        self._log = log_path.open("wb")
        if command is None:
            command = [sys.executable, str(SERVERS[name]), str(port)]
        command = _pinned(command, cpu)
        env = dict(os.environ)
        if name == "before":
            assert BEFORE_SOURCE is not None, "--before DIR is required for the 'before' server"
            source = BEFORE_SOURCE
        if source is not None:
            env["PYTHONPATH"] = str(source)
        # taskset execs the command, so the PID is the server's own. An older checkout's server runs from
        # inside it: `python -m litserve.runtime.child` (process mode) puts the working directory first
        # on sys.path, ahead of PYTHONPATH.
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=source,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, deadline_s: float) -> None:
        """Poll GET /health until it answers 200; raise if the process exits or the deadline passes."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} was not ready within {deadline_s:.0f} s; see {self.log_path}")

    def check_answer(self) -> None:
        """One request by hand: the workload must really answer {"output": 49}."""
        body = json.dumps({"input": 7}).encode()
        request = urllib.request.Request(
            self.base_url + "/predict", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=5.0) as response:
            answer = json.loads(response.read())
        if answer != EXPECTED:
            raise RuntimeError(f"{self.name} answered {answer!r}, expected {EXPECTED!r}")

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGINT, wait; then SIGTERM, wait; then SIGKILL. Returns the exit code (None if it never ended)."""
        process = self.process
        try:
            for signum, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                if process.poll() is not None:
                    break
                os.kill(process.pid, signum)
                try:
                    process.wait(wait_s)
                except subprocess.TimeoutExpired:
                    note = f"{self.name} (pid {process.pid}) still up {wait_s:.0f} s after {signum.name}"
                    print(note, file=sys.stderr)
            return process.poll()
        finally:
            self._log.close()

    def log_problems(self) -> list[str]:
        """Lines of the server's log that suggest trouble under load."""
        text = self.log_path.read_text(errors="replace")
        markers = ("Traceback", "ERROR", "Error", "Exception", "WARNING")
        return [line for line in text.splitlines() if any(marker in line for marker in markers)]


def git_state() -> dict[str, Any]:
    """The commit measured, and whether litserve/ had uncommitted changes (they are measured too)."""

    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], cwd=HERE.parent, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "litserve_uncommitted": git("status", "--porcelain", "litserve")}


# --- the benchmark -------------------------------------------------------------------------------


def measure(
    name: str, concurrency: int, args: argparse.Namespace, cpus: tuple[int | None, int | None], log_path: Path
) -> tuple[WrkResult, list[str]]:
    server_cpu, wrk_cpu = cpus
    server = ServerProcess(name, free_port(), server_cpu, log_path)
    try:
        server.wait_ready(args.startup_timeout)
        server.check_answer()
        url = server.base_url + "/predict"
        if args.warmup > 0:
            run_wrk(url, concurrency, args.warmup, wrk_cpu)
        result, output = run_wrk(url, concurrency, args.duration, wrk_cpu)
        if args.verbose:
            print(output)
        if server.process.poll() is not None:
            raise RuntimeError(f"{name} died under load (exit {server.process.returncode}); see {log_path}")
    finally:
        code = server.stop()
    problems = server.log_problems()
    if code not in (0, None) and code != -signal.SIGINT:
        problems.append(f"exit code {code}")
    return result, problems


def busy_cores(seconds: float = 1.0) -> float | None:
    """How many cores' worth of CPU time the machine used over `seconds`, from /proc/stat (None elsewhere)."""

    def totals() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    try:
        all_before, idle_before = totals()
        time.sleep(seconds)
        all_after, idle_after = totals()
    except (OSError, ValueError, IndexError):
        return None
    spent = all_after - all_before
    return 0.0 if spent <= 0 else (os.cpu_count() or 1) * (spent - (idle_after - idle_before)) / spent


def say_if_busy() -> None:
    """Print how busy the machine is before a run, loudly when something else takes a share of it."""
    busy = busy_cores()
    if busy is None:
        return
    print(f"before the run: {busy:.2f} of {os.cpu_count()} cores busy", flush=True)
    if busy > BUSY_CORES_LIMIT:
        print(
            f"WARNING: {busy:.2f} cores were busy before the run started (limit {BUSY_CORES_LIMIT}): another "
            "process shares this machine, so these figures are off; compare only figures from one run",
            file=sys.stderr,
            flush=True,
        )


def pick_cpus(pin: bool) -> tuple[int | None, int | None]:
    if not pin:
        return None, None
    if shutil.which("taskset") is None:
        print("taskset not found: not pinning (server and wrk share the cores)", file=sys.stderr)
        return None, None
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        print(f"only {len(available)} core available: not pinning", file=sys.stderr)
        return None, None
    return available[0], available[1]


def markdown_table(cells: list[Cell]) -> str:
    lines = [
        "| server | concurrency | req/s | p50 ms | p99 ms | non-2xx | socket errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:
        row = cell.as_json()
        socket_errors = sum(row["socket_errors"].values())
        lines.append(
            f"| {cell.server} | {cell.concurrency} | {row['rps']:.0f} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} "
            f"| {row['non_2xx']} | {socket_errors} |"
        )
    return "\n".join(lines)


def ratios(cells: list[Cell]) -> dict[str, float | None]:
    by_key = {(cell.server, cell.concurrency): cell for cell in cells}
    rps_ratio = p50_overhead = None
    if ("ours", 16) in by_key and ("bare", 16) in by_key:
        rps_ratio = by_key["ours", 16].median("rps") / by_key["bare", 16].median("rps")
    if ("ours", 1) in by_key and ("bare", 1) in by_key:
        p50_overhead = by_key["ours", 1].median("p50_ms") - by_key["bare", 1].median("p50_ms")
    return {"ours_over_bare_rps_c16": rps_ratio, "ours_minus_bare_p50_ms_c1": p50_overhead}


def _verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of measured wrk per cell (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of wrk warm-up per cell (0: none)")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated connection counts")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything N times; report medians")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin the server to one core and wrk to another with taskset (default on)",
    )
    parser.add_argument("--servers", default="bare,ours", help="which servers to run (default bare,ours)")
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="seconds to wait for GET /health")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json", help="where to write JSON")
    parser.add_argument("--verbose", action="store_true", help="print wrk's full output for every run")
    parser.add_argument(
        "--before", type=Path, default=None, help="a checkout of an older commit, served as 'before' (adds it)"
    )
    args = parser.parse_args(argv)
    args.concurrency_levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.server_names = [s.strip() for s in args.servers.split(",") if s.strip()]
    if args.before is not None:
        global BEFORE_SOURCE
        BEFORE_SOURCE = args.before.resolve()
        if "before" not in args.server_names:
            args.server_names.append("before")
    unknown = [s for s in args.server_names if s not in SERVERS]
    if unknown:
        parser.error(f"unknown servers {unknown}; pick from {sorted(SERVERS)}")
    if args.rounds < 1 or args.duration < 1 or not args.concurrency_levels:
        parser.error("--rounds and --duration must be >= 1 and --concurrency non-empty")
    return args


def interleaved(names: list[str], groups: list[Any], rounds: int) -> Iterator[tuple[int, Any, str]]:
    """Every (round, group, server) to measure, alternating which server goes first (ABBA) so that
    drift of the machine during a run favours none of them. A group is a concurrency, or any key."""
    flip = False
    for round_index in range(rounds):
        for group in groups:
            order = list(reversed(names)) if flip else list(names)
            flip = not flip
            for name in order:
                yield round_index, group, name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: run `bash benchmarks/setup.sh` first", file=sys.stderr)
        return 2
    say_if_busy()
    cpus = pick_cpus(args.pin)
    logs_dir = RESULTS_DIR / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"wrk: {args.duration:.0f} s per cell after {args.warmup:.0f} s warm-up, rounds={args.rounds}, "
        f"server cpu={cpus[0]}, wrk cpu={cpus[1]}"
    )
    cells = {(n, c): Cell(n, c) for c in args.concurrency_levels for n in args.server_names}
    for round_index, concurrency, name in interleaved(args.server_names, args.concurrency_levels, args.rounds):
        log_path = logs_dir / f"{name}-c{concurrency}-r{round_index + 1}.log"
        result, problems = measure(name, concurrency, args, cpus, log_path)
        cell = cells[name, concurrency]
        cell.runs.append(result)
        cell.server_log_problems.extend(f"{log_path.name}: {line}" for line in problems)
        print(
            f"round {round_index + 1} {name:>4} c={concurrency:<3} {result.rps:9.0f} req/s "
            f"p50 {result.p50_ms:7.3f} ms  p99 {result.p99_ms:7.3f} ms  "
            f"requests {result.requests}  non-2xx {result.non_2xx}  socket errors "
            + ", ".join(f"{k} {v}" for k, v in result.socket_errors.items()),
            flush=True,
        )
        for line in problems[:5]:
            print(f"    server log: {line}", flush=True)
    ordered = [cells[n, c] for n in args.server_names for c in args.concurrency_levels]
    print()
    print(markdown_table(ordered))
    print()
    found = ratios(ordered)
    rps_ratio, p50_overhead = found["ours_over_bare_rps_c16"], found["ours_minus_bare_p50_ms_c1"]
    if rps_ratio is not None:
        print(
            f"ours/bare req/s at c=16: {rps_ratio:.3f} "
            f"(target >= {TARGET_RPS_RATIO_C16}: {_verdict(rps_ratio >= TARGET_RPS_RATIO_C16)})"
        )
    if p50_overhead is not None:
        print(
            f"ours p50 - bare p50 at c=1: {p50_overhead:.3f} ms "
            f"(target <= {TARGET_P50_OVERHEAD_C1_MS}: {_verdict(p50_overhead <= TARGET_P50_OVERHEAD_C1_MS)})"
        )
    report = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "concurrency": args.concurrency_levels,
            "server_cpu": cpus[0],
            "wrk_cpu": cpus[1],
            "wrk_threads": "1 at c=1, else 2",
        },
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "table": [cell.as_json() for cell in ordered],
        "ratios": found,
        "targets": {
            "ours_over_bare_rps_c16": f">= {TARGET_RPS_RATIO_C16}",
            "ours_minus_bare_p50_ms_c1": f"<= {TARGET_P50_OVERHEAD_C1_MS}",
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
