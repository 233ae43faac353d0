"""What the benchmark scripts report: cells over rounds and their medians, markdown tables, the JSON file."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from runner import BEFORE_SUFFIX, HERE, without_before


def median(values: Iterable[float | None]) -> float:
    """The median of the values that are not None (NaN when there are none)."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else math.nan


@dataclass
class Cell:
    """One (server, concurrency) cell over all rounds: each round's result and the server's log problems.

    A result is an object whose figures are attributes (a WrkResult) or a dict of them (the stream client's).
    """

    server: str
    concurrency: int
    runs: list[Any] = field(default_factory=list)
    server_log_problems: list[str] = field(default_factory=list)

    def median(self, name: str) -> float:
        return median(figure(run, name) for run in self.runs)

    def record(self, result: Any, log_path: Path, problems: list[str]) -> None:
        self.runs.append(result)
        self.server_log_problems.extend(f"{log_path.name}: {line}" for line in problems)


C = TypeVar("C", bound=Cell)


def figure(run: Any, name: str) -> float | None:
    """Figure `name` of one round's result: an attribute (a WrkResult) or a key (the stream client's dict)."""
    value: float | None = run[name] if isinstance(run, dict) else getattr(run, name)
    return value


def before_after(cells: Sequence[C], group: Callable[[C], str], ratio_of: str, difference_of: str) -> dict[str, float]:
    """Each server NAME against NAME@before (--before DIR) in the same group, e.g. `c16`: the ratio of the
    medians of `ratio_of`, and the median of the per-round differences of `difference_of` (the two ran
    side by side in every round, so pairing them cancels most of the machine's drift)."""
    by_key = {(group(cell), cell.server): cell for cell in cells}
    found: dict[str, float] = {}
    for (key, server), before in by_key.items():
        now = by_key.get((key, without_before(server)))
        if not server.endswith(BEFORE_SUFFIX) or now is None:
            continue
        name = f"{key}_{now.server}_now"
        found[f"{name}_over_before_{ratio_of}"] = now.median(ratio_of) / before.median(ratio_of)
        pairs = [
            (figure(a, difference_of), figure(b, difference_of)) for a, b in zip(now.runs, before.runs, strict=True)
        ]
        differences = [a - b for a, b in pairs if a is not None and b is not None]
        found[f"{name}_minus_before_{difference_of}"] = median(differences)
    return found


def print_before_after(found: dict[str, float]) -> None:
    for name, value in found.items():
        if "_minus_before_" in name:
            unit = " ms" if name.endswith("_ms") else ""
            print(f"{name}: {value:+.3f}{unit} (median of per-round differences, this checkout - --before; no target)")
        else:
            print(f"{name}: {value:.3f} (this checkout / --before; no target)")


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def markdown_table(columns: list[str], rows: Iterable[list[str]], align: str = "") -> str:
    """A markdown table; `align` has one letter per column, l or r (default: the first left, the rest right)."""
    align = align or "l" + "r" * (len(columns) - 1)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def git_state(tree: Path = HERE.parent) -> dict[str, Any]:
    """The commit measured, and whether litserve/ had uncommitted changes (they are measured too)."""

    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], cwd=tree, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "litserve_uncommitted": git("status", "--porcelain", "litserve")}


def write_report(
    path: Path, settings: dict[str, Any], git_at_start: dict[str, Any], before: Path | None, **sections: Any
) -> None:
    """Write the JSON report: when, the settings, the machine, the commits measured, then `sections`."""
    git = {"at_start": git_at_start, "at_end": git_state()}
    if before is not None:
        git["before"] = {"path": str(before), **git_state(before)}
    report = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "git": git,
        **sections,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")
