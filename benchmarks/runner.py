"""What every benchmark script shares to run: server subprocesses, pinning, ABBA rounds, the busy-core
check, the older checkout of `--before` and the common options. wrk is in wrk.py, reporting in report.py.

A server is a subprocess on 127.0.0.1 that answers GET /health once ready. It is stopped by PID:
SIGINT, then SIGTERM, then SIGKILL, each after a bounded wait. With pinning the server runs on the
first core (`taskset`) and the load generator on the second.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
SERVERS_DIR = HERE / "servers"
RESULTS_DIR = HERE / "results"
# Cores already busy before a run (another process) above which its figures are not worth comparing.
BUSY_CORES_LIMIT = 0.25
# A server NAME@before is server NAME importing litserve from the checkout given by --before DIR.
BEFORE_SUFFIX = "@before"

T = TypeVar("T")
Cpus = tuple[int | None, int | None]  # (the server's core, the load generator's core); None: unpinned


# --- cores ---------------------------------------------------------------------------------------


def pinned(command: list[str], cpu: int | None) -> list[str]:
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def pick_cpus(pin: bool) -> Cpus:
    if not pin:
        return None, None
    if shutil.which("taskset") is None:
        print("taskset not found: not pinning (server and load generator share the cores)", file=sys.stderr)
        return None, None
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        print(f"only {len(available)} core available: not pinning", file=sys.stderr)
        return None, None
    return available[0], available[1]


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


def wait_until_quiet(limit_cores: float = 0.1, longest_s: float = 15.0) -> float:
    """Wait until the machine uses less than `limit_cores` over a quarter second (what a stopped server
    leaves behind: its processes exiting, their memory being given back), at most `longest_s`; returns
    the seconds waited."""
    start_s = time.monotonic()
    while time.monotonic() - start_s < longest_s:
        busy = busy_cores(0.25)
        if busy is None or busy < limit_cores:
            break
    return time.monotonic() - start_s


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


def interleaved(names: list[T], groups: list[Any], rounds: int) -> Iterator[tuple[int, Any, T]]:
    """Every (round, group, server) to measure, alternating which server goes first (ABBA) so that
    drift of the machine during a run favours none of them. A group is a concurrency, or any key."""
    flip = False
    for round_index in range(rounds):
        for group in groups:
            order = list(reversed(names)) if flip else list(names)
            flip = not flip
            for name in order:
                yield round_index, group, name


# --- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _signal_group(group: int, signum: int) -> bool:
    """Send `signum` to the process group `group`; False when no process of it is left."""
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    return True


def _end_group(group: int, name: str) -> None:
    """The server ended: its group's leftovers (orphaned children) get SIGTERM, then SIGKILL, bounded."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if not _signal_group(group, signum):
            return
        deadline_s = time.monotonic() + 5.0
        while time.monotonic() < deadline_s:
            if not _signal_group(group, 0):  # signal 0: is any process of the group left?
                return
            time.sleep(0.05)
        print(f"{name}: processes of its group still up after {signum.name}", file=sys.stderr)


class ServerProcess:
    """A benchmark server subprocess, its log file, and a bounded stop by PID."""

    def __init__(
        self, name: str, port: int, command: list[str], cpu: int | None, log_path: Path, source: Path | None = None
    ) -> None:
        """Start `command` pinned to `cpu`, logging to `log_path`; `source`: a checkout whose litserve it imports."""
        self.name = name
        self.port = port
        self.log_path = log_path
        self.returncode: int | None = None
        self._log = log_path.open("wb")
        env = dict(os.environ)
        if source is not None:
            env["PYTHONPATH"] = str(source)
        # taskset execs the command, so the PID is the server's own. An older checkout's server runs from
        # inside it: a worker process (process mode, `python -m litserve...child`) puts the working
        # directory first on sys.path, ahead of PYTHONPATH.
        self.process = subprocess.Popen(
            pinned(command, cpu),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=source,
            start_new_session=True,  # its own process group: stop() ends the processes it forks too
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

    def raise_if_died(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} died under load (exit {self.process.returncode}); see {self.log_path}")

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGINT, wait; then SIGTERM, wait; then SIGKILL. Returns the exit code (None if it never ended).

        Each signal goes to the server's process group (its own session, made at start): a server that
        forks API-server or worker processes (LitServe does) leaves none of them running to eat the
        next cell's CPU. Whatever of the group outlives the server itself is killed.
        """
        process = self.process
        group = process.pid  # the session leader's PID is its group's ID
        try:
            for signum, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                if process.poll() is not None:
                    break
                _signal_group(group, signum)
                try:
                    process.wait(wait_s)
                except subprocess.TimeoutExpired:
                    note = f"{self.name} (pid {process.pid}) still up {wait_s:.0f} s after {signum.name}"
                    print(note, file=sys.stderr)
            _end_group(group, self.name)
            self.returncode = process.poll()
            return self.returncode
        finally:
            self._log.close()

    def log_problems(self) -> list[str]:
        """Lines of the server's log that suggest trouble under load, and an exit other than by SIGINT."""
        text = self.log_path.read_text(errors="replace")
        markers = ("Traceback", "ERROR", "Error", "Exception", "WARNING")
        problems = [line for line in text.splitlines() if any(marker in line for marker in markers)]
        if self.returncode not in (0, None) and self.returncode != -signal.SIGINT:
            problems.append(f"exit code {self.returncode}")
        return problems


@contextlib.contextmanager
def serving(
    name: str,
    command: Callable[[int], list[str]],
    cpu: int | None,
    log_path: Path,
    startup_timeout_s: float,
    before: Path | None = None,
) -> Iterator[ServerProcess]:
    """A fresh server `name` (`command(port)`), ready; stopped on the way out, after checking it is still up.

    A NAME@before server imports litserve from `before` (the --before DIR) and runs from inside it.
    """
    port = free_port()
    server = ServerProcess(name, port, command(port), cpu, log_path, source_of(name, before))
    try:
        server.wait_ready(startup_timeout_s)
        yield server
        server.raise_if_died()
    finally:
        server.stop()


def logs_dir() -> Path:
    path = RESULTS_DIR / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- an older checkout (--before DIR) ------------------------------------------------------------


def without_before(name: str) -> str:
    return name.removesuffix(BEFORE_SUFFIX)


def source_of(name: str, before: Path | None) -> Path | None:
    """The checkout whose litserve server `name` imports: `before` for NAME@before, else the installed one."""
    if not name.endswith(BEFORE_SUFFIX):
        return None
    if before is None:
        raise ValueError(f"server {name} needs --before DIR")
    return before


def resolve_before(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Path | None:
    """--before DIR, made absolute (None without it); an error unless DIR holds a litserve package."""
    if args.before is not None:
        args.before = args.before.resolve()
        if not (args.before / "litserve" / "__init__.py").is_file():
            parser.error(f"--before {args.before}: not a checkout with a litserve/ package")
    before: Path | None = args.before
    return before


def server_names(
    parser: argparse.ArgumentParser, args: argparse.Namespace, is_litserve: Callable[[str], bool]
) -> list[str]:
    """--servers as a list and, with --before DIR (made absolute here), NAME@before after it for each
    litserve server NAME, so that both checkouts are measured in the same rounds."""
    names = comma_list(args.servers)
    if resolve_before(parser, args) is not None:
        twins = [n + BEFORE_SUFFIX for n in names if not n.endswith(BEFORE_SUFFIX) and is_litserve(n)]
        names += [twin for twin in twins if twin not in names]
    elif any(n.endswith(BEFORE_SUFFIX) for n in names):
        parser.error(f"servers named NAME{BEFORE_SUFFIX} need --before DIR")
    return names


# --- options -------------------------------------------------------------------------------------


def add_run_options(
    parser: argparse.ArgumentParser, duration_s: float, warmup_s: float, output: str, load: str = "wrk"
) -> None:
    """The options every cell-by-cell script takes, with its own defaults; `load`: what generates it."""
    parser.add_argument(
        "--duration",
        type=float,
        default=duration_s,
        help=f"seconds of measured {load} per cell (default {duration_s:g})",
    )
    parser.add_argument("--warmup", type=float, default=warmup_s, help=f"seconds of {load} warm-up per cell (0: none)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything N times; report medians")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin the server to one core and the load generator to another with taskset (default on)",
    )
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="seconds to wait for GET /health")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / output, help="where to write JSON")
    add_before_option(parser)


def add_before_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        metavar="DIR",
        help="a checkout of an older commit: its litserve is measured too, in the same rounds",
    )


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def int_list(parser: argparse.ArgumentParser, option: str, text: str) -> list[int]:
    try:
        return [int(item) for item in comma_list(text)]
    except ValueError:
        parser.error(f"{option}: a comma-separated list of integers")
