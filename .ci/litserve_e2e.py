"""CI: LitServe 0.2.19's own black-box tests, run unchanged against this package.

Downloads LitServe's source distribution by name from the package index (`pip download`, the only
network access), extracts its `tests/` and `pytest.ini` into a temporary directory, and from there runs
`python tests/minimal_run.py` and `python -m pytest tests/e2e/test_e2e.py` with the Python running this
script, in whose environment our package is installed as `litserve` (CI: `.venv/bin/python
.ci/litserve_e2e.py`, after the main test run). Their harness starts servers with `python ...` and
`python client.py`, so this interpreter's directory goes first on PATH. Nothing of LitServe's code is
kept in this repository.

It prints the pass/fail counts and fails unless `tests/minimal_run.py` succeeds and every test in
MUST_PASS passes. Tests outside MUST_PASS may fail (they are listed); one that passes is pointed out
so the list can grow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

LITSERVE = "litserve==0.2.19"

# Every test of tests/e2e/test_e2e.py must pass but test_mcp_server, which is skipped unless `mcp` is
# installed (MCP is not served here).
MUST_PASS = frozenset(
    {
        "test_run",
        "test_run_with_port",
        "test_e2e_default_api",
        "test_e2e_default_spec",
        "test_e2e_default_batching",
        "test_e2e_batched_streaming",
        "test_openai_parity",
        "test_openai_parity_with_image_input",
        "test_openai_parity_with_audio_input",
        "test_openai_parity_with_tools",
        "test_e2e_openai_with_batching",
        "test_openai_parity_with_response_format",
        "test_e2e_single_streaming",
        "test_openai_embedding_parity",
        "test_e2e_default_async_streaming",
        "test_e2e_openai_embedding_with_batching",
    }
)

TEST_TIMEOUT_S = 180  # per test (pytest-timeout): their harness waits for a startup line without a bound
E2E_RUN_TIMEOUT_S = 1800  # the whole e2e run, should a test hang past pytest-timeout
MINIMAL_RUN_TIMEOUT_S = 120  # it sleeps 10 s, then makes one request
DOWNLOAD_TIMEOUT_S = 600


def say(line: str) -> None:
    print(f"[litserve-e2e] {line}", flush=True)  # noqa: T201 - a CI script reports on stdout


def download(work: Path) -> Path:
    """LitServe's sdist, by name, from the configured index."""
    target = work / "download"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", LITSERVE, "-d", target]
    subprocess.run([str(part) for part in command], check=True, timeout=DOWNLOAD_TIMEOUT_S)
    (sdist,) = target.glob("litserve-*.tar.gz")
    return sdist


def extract(sdist: Path, work: Path) -> Path:
    """Only `tests/` and `pytest.ini`: no LitServe source may shadow the installed package."""
    with tarfile.open(sdist) as archive:
        root = archive.getnames()[0].split("/")[0]
        wanted = [
            m for m in archive.getmembers() if m.name.startswith(f"{root}/tests/") or m.name == f"{root}/pytest.ini"
        ]
        if hasattr(tarfile, "data_filter"):
            archive.extractall(work, members=wanted, filter="data")
        else:  # Pythons before the extraction filters (3.10.11 and older)
            archive.extractall(work, members=wanted)
    return work / root


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_group(command: list[str], root: Path, env: dict[str, str], timeout_s: float) -> int | None:
    """Run `command` in its own process group; on timeout kill the whole group (servers it started too)."""
    process = subprocess.Popen(command, cwd=root, env=env, start_new_session=True)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        say(f"{' '.join(command[1:])} did not finish within {timeout_s:.0f} s: stopping it and its children")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return None


def run_minimal(root: Path, env: dict[str, str]) -> bool:
    say("python tests/minimal_run.py")
    return run_group([sys.executable, "tests/minimal_run.py"], root, env, MINIMAL_RUN_TIMEOUT_S) == 0


def run_e2e(root: Path, env: dict[str, str], junit: Path) -> dict[str, str]:
    """Each test's outcome ("passed", "failed", "skipped"), from pytest's JUnit report."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/e2e/test_e2e.py",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:litserve",  # our own pytest plugin (an entry point of the installed package) stays out of their run
        f"--timeout={TEST_TIMEOUT_S}",
        f"--junitxml={junit}",
        "-rA",
    ]
    say(" ".join(command[1:]))
    run_group(command, root, env, E2E_RUN_TIMEOUT_S)
    if not junit.exists():
        return {}
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        outcome = "failed" if tags & {"failure", "error"} else "skipped" if "skipped" in tags else "passed"
        outcomes[case.get("name", "?")] = outcome
    return outcomes


def verdict(minimal_ok: bool, outcomes: dict[str, str]) -> int:
    counts = {kind: sorted(n for n, o in outcomes.items() if o == kind) for kind in ("passed", "failed", "skipped")}
    say(f"tests/minimal_run.py: {'passed' if minimal_ok else 'FAILED'}")
    say(
        f"tests/e2e/test_e2e.py: {len(counts['passed'])} passed, {len(counts['failed'])} failed, "
        f"{len(counts['skipped'])} skipped of {len(outcomes)}"
    )
    for kind in ("passed", "failed", "skipped"):
        for name in counts[kind]:
            say(f"  {kind:7} {name}{'  (must pass)' if name in MUST_PASS else ''}")
    missing = sorted(n for n in MUST_PASS if outcomes.get(n) != "passed")
    extra = sorted(set(counts["passed"]) - MUST_PASS)
    if extra:
        say(f"passing but not yet in MUST_PASS (add them to .ci/litserve_e2e.py): {', '.join(extra)}")
    if missing:
        say(f"FAILED: these must pass: {', '.join(missing)}")
    return 0 if minimal_ok and not missing else 1


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="litserve-e2e-") as tmp:
        work = Path(tmp)
        root = extract(download(work), work)
        env = environment()
        minimal_ok = run_minimal(root, env)
        outcomes = run_e2e(root, env, work / "e2e.xml")
    return verdict(minimal_ok, outcomes)


if __name__ == "__main__":
    sys.exit(main())
