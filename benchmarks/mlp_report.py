"""The MLP benchmark's cells, table and ratios, with the project's targets for them."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from mlp_servers import is_process, parse_spec
from report import Cell, markdown_table, verdict
from runner import BEFORE_SUFFIX
from wrk import summary

MODELS = ("heavy", "light")

# The project's targets (heavy model only).
TARGET_BATCHED_OVER_FASTAPI = 1.5
TARGET_BATCHED_OVER_UNBATCHED = 2.0
# Process mode: p50(process) - p50(thread) at concurrency 1, the per-request IPC cost.
TARGET_PROCESS_IPC_MS = 0.3
TARGETS = {
    "heavy_batched_over_fastapi_rps": f">= {TARGET_BATCHED_OVER_FASTAPI}",
    "heavy_batched_over_unbatched_rps": f">= {TARGET_BATCHED_OVER_UNBATCHED}",
    "*_c1_*_p50_diff_ms (process - thread)": f"< {TARGET_PROCESS_IPC_MS}",
}


@dataclass
class MlpCell(Cell):
    """One (model, server, concurrency) cell over all rounds: wrk results, batch histograms, CPU, log problems."""

    model: str = ""
    server_cpu_ms_per_request: list[float] = field(default_factory=list)
    children_cpu_ms_per_request: list[float] = field(default_factory=list)
    batch_sizes: list[dict[int, int]] = field(default_factory=list)
    predict_time: list[dict[str, Any]] = field(default_factory=list)

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
        cpu_s = float(sum(stats.get("predict_cpu_s", 0.0) for stats in self.predict_time))
        served = sum(size * count for histogram in self.batch_sizes for size, count in histogram.items())
        served = served or int(sum(stats.get("calls", 0) for stats in self.predict_time))
        return None if not served or not cpu_s else 1e3 * cpu_s / served

    def as_json(self) -> dict[str, Any]:
        def median_or_none(values: list[float]) -> float | None:
            return statistics.median(values) if values else None

        return {
            "model": self.model,
            "server": self.server,
            "concurrency": self.concurrency,
            **summary(self.runs),
            "server_cpu_ms_per_request": median_or_none(self.server_cpu_ms_per_request),
            "children_cpu_ms_per_request": median_or_none(self.children_cpu_ms_per_request),
            "model_cpu_ms_per_request": self.model_cpu_ms_per_request(),
            "mean_batch_size": self.mean_batch_size(),
            "batch_sizes": [{str(k): v for k, v in sorted(h.items())} for h in self.batch_sizes],
            "predict_time": self.predict_time,
            "server_log_problems": self.server_log_problems,
            "rounds": [asdict(run) for run in self.runs],
        }


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(cells: list[MlpCell]) -> str:
    columns = ["model", "c", "server", "req/s", "p50 ms", "p99 ms", "non-2xx", "socket errors", "mean batch"]
    columns += ["server CPU ms/req", "of which worker processes", "model CPU ms/req"]
    rows = []
    for cell in cells:
        row = cell.as_json()
        in_children = row["children_cpu_ms_per_request"] if is_process(cell.server) else None
        rows.append(
            [cell.model, str(cell.concurrency), cell.server, f"{row['rps']:.0f}", f"{row['p50_ms']:.2f}"]
            + [f"{row['p99_ms']:.2f}", str(row["non_2xx"]), str(sum(row["socket_errors"].values()))]
            + [_num(row["mean_batch_size"], 2), _num(row["server_cpu_ms_per_request"], 3), _num(in_children, 3)]
            + [_num(row["model_cpu_ms_per_request"], 3)]
        )
    return markdown_table(columns, rows, align="lrl" + "r" * 9)


def process_pairs(servers: list[str]) -> list[tuple[str, str]]:
    """(process row, thread row) pairs of one checkout: same max_batch_size and batch_timeout, as many
    workers in all."""
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
                and thread.endswith(BEFORE_SUFFIX) == process.endswith(BEFORE_SUFFIX)
                and (other.max_batch_size, other.batch_timeout, other.total_workers)
                == (spec.max_batch_size, spec.batch_timeout, spec.total_workers)
            ):
                pairs.append((process, thread))
    return pairs


def ratios(cells: list[MlpCell]) -> dict[str, float | None]:
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
                note = f"{what} at c=1, target < {TARGET_PROCESS_IPC_MS} ms: {verdict(ok)}"
            else:
                note = f"{what}, no target"
            print(f"{name}: {value:+.3f} ms ({note})")
            continue
        if name.endswith("_rps_ratio"):
            note = "process / thread req/s, no target"
        else:
            note = "no target" if target is None else f"target >= {target}: {verdict(value >= target)}"
        print(f"{name}: {value:.3f} ({note})")
