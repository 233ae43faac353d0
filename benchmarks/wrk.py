"""wrk, the HTTP load generator the benchmarks run: its command line, one run, and its parsed output.

wrk uses one thread at concurrency 1 and two otherwise, always with `--latency` (for the percentiles)
and a Lua script that sets the request (default `post.lua`: POST `{"input": 7}`).
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import HERE, pinned

POST_LUA = HERE / "post.lua"
SOCKET_ERRORS = ("connect", "read", "write", "timeout")

_UNIT_TO_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([0-9.]+)(us|ms|s|m|h)\b"


@dataclass
class WrkResult:
    """What one wrk run reported."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOCKET_ERRORS, 0))

    @property
    def socket_error_total(self) -> int:
        return sum(self.socket_errors.values())


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
        str(POST_LUA if script is None else script),
        url,
    ]
    return pinned(command, cpu)


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


def warm_up_and_measure(
    url: str, concurrency: int, warmup_s: float, duration_s: float, cpu: int | None, script: Path | None = None
) -> tuple[WrkResult, str]:
    """An unmeasured wrk run of `warmup_s` (none at 0), then the measured one."""
    if warmup_s > 0:
        run_wrk(url, concurrency, warmup_s, cpu, script)
    return run_wrk(url, concurrency, duration_s, cpu, script)


def has_wrk() -> bool:
    """Whether wrk is installed; says how to install it when it is not."""
    if shutil.which("wrk") is not None:
        return True
    print("wrk is not installed: run `bash benchmarks/setup.sh` first", file=sys.stderr)
    return False


def summary(runs: list[WrkResult]) -> dict[str, Any]:
    """The figures of a cell's rounds: medians of req/s, p50 and p99; error counts summed."""
    return {
        "rps": statistics.median(run.rps for run in runs),
        "p50_ms": statistics.median(run.p50_ms for run in runs),
        "p99_ms": statistics.median(run.p99_ms for run in runs),
        "requests": sum(run.requests for run in runs),
        "non_2xx": sum(run.non_2xx for run in runs),
        "socket_errors": {kind: sum(run.socket_errors[kind] for run in runs) for kind in SOCKET_ERRORS},
    }
