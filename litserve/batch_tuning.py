"""`server.tune_batching`: sweep `max_batch_size` x `batch_timeout` on a running server and pick the best.

Each setting is tried on the live server through a hot swap (`server.swap`, no restart, the port and open
connections stay): a copy of the endpoint's LitAPI with that setting is swapped in, the built-in load test
(`litserve.load_test`) drives it at one concurrency for a few seconds, and its throughput and p99 latency
are kept. The recommendation is the setting with the highest throughput among those that answered every
request and whose p99 stays within the bound the user gives (every setting qualifies without a bound).
At the end the server serves the recommended setting (`apply=True`, the default) or its original LitAPI
again. `max_batch_size=1` runs unbatched, so it is tried once, whatever the timeouts.
"""

from __future__ import annotations

import copy
import html
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, final

from litserve.api import LitAPI, validate_api_settings
from litserve.load_test import BenchmarkResult, LevelResult

__all__ = ["BatchingTrial", "TuningResult", "batching_settings", "tune"]

logger = logging.getLogger("litserve")

DEFAULT_BATCH_SIZES = (1, 4, 8, 16, 32)
DEFAULT_BATCH_TIMEOUTS = (0.001, 0.005, 0.01)


@final
@dataclass(frozen=True, slots=True)
class BatchingTrial:
    """One setting and what the load test measured with it. Stability: beta."""

    max_batch_size: int
    batch_timeout: float
    level: LevelResult

    def to_dict(self) -> dict[str, Any]:
        return {"max_batch_size": self.max_batch_size, "batch_timeout": self.batch_timeout, **self.level.to_dict()}


@final
@dataclass(frozen=True, slots=True)
class TuningResult:
    """Every setting tried, in order, and the recommended one; a table in a notebook.

    Stability: beta.

    Attributes:
        trials: one `BatchingTrial` per setting.
        best: the recommendation (highest req/s with no errors and p99 within `p99_bound_s`); None if no
            setting qualified.
        p99_bound_s: the bound the user gave (None: no bound).
        applied: whether the server now serves `best` (else it serves its original LitAPI again).
    """

    trials: tuple[BatchingTrial, ...]
    best: BatchingTrial | None
    p99_bound_s: float | None
    applied: bool

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "trials": [trial.to_dict() for trial in self.trials],
            "best": None
            if best is None
            else {"max_batch_size": best.max_batch_size, "batch_timeout": best.batch_timeout},
            "p99_bound_s": self.p99_bound_s,
            "applied": self.applied,
        }

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{name}</th>" for name in _COLUMNS)
        rows = []
        for trial in self.trials:
            style = ' style="font-weight:bold;background:#e8f4e8"' if trial is self.best else ""
            rows.append(f"<tr{style}>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in _cells(trial)) + "</tr>")
        return f"<table><tr>{head}</tr>{''.join(rows)}</table><p>{html.escape(self._verdict())}</p>"

    def __repr__(self) -> str:
        rows = [list(_COLUMNS)] + [_cells(trial) for trial in self.trials]
        widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
        return "TuningResult\n" + "\n".join(lines) + "\n" + self._verdict()

    def _verdict(self) -> str:
        bound = "" if self.p99_bound_s is None else f" with p99 <= {self.p99_bound_s * 1000:g} ms"
        if self.best is None:
            return f"no setting answered every request{bound}; the server serves its original LitAPI"
        now = "the server now serves it" if self.applied else "the server serves its original LitAPI"
        return (
            f"best{bound}: max_batch_size={self.best.max_batch_size}, batch_timeout={self.best.batch_timeout:g} "
            f"({self.best.level.requests_per_s:.1f} req/s); {now}"
        )


_COLUMNS = ("max_batch_size", "batch_timeout s", "req/s", "p50 ms", "p99 ms", "errors")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _cells(trial: BatchingTrial) -> list[str]:
    level = trial.level
    timeout = "-" if trial.max_batch_size == 1 else f"{trial.batch_timeout:g}"
    return [
        str(trial.max_batch_size),
        timeout,
        f"{level.requests_per_s:.1f}",
        _ms(level.p50_s),
        _ms(level.p99_s),
        str(level.errors),
    ]


def batching_settings(batch_sizes: Sequence[int], batch_timeouts: Sequence[float]) -> list[tuple[int, float]]:
    """The settings to try, in order: each size with each timeout, size 1 (no batching) once."""
    if not batch_sizes or not batch_timeouts:
        raise ValueError("tune_batching needs at least one max_batch_size and one batch_timeout")
    settings: list[tuple[int, float]] = []
    for size in batch_sizes:
        for timeout in [0.0] if size == 1 else [float(t) for t in batch_timeouts]:
            if (size, timeout) not in settings:
                settings.append((size, timeout))
    return settings


def _with_batching(api: LitAPI, max_batch_size: int, batch_timeout: float) -> LitAPI:
    """A copy of `api` (not set up: each worker copies it again) with another batching setting."""
    variant = copy.copy(api)
    variant.max_batch_size, variant.batch_timeout = max_batch_size, batch_timeout
    return variant


def _recommend(trials: Sequence[BatchingTrial], p99_bound_s: float | None) -> BatchingTrial | None:
    fit = [
        trial
        for trial in trials
        if trial.level.errors == 0
        and trial.level.p99_s is not None
        and (p99_bound_s is None or trial.level.p99_s <= p99_bound_s)
    ]
    return max(fit, key=lambda trial: trial.level.requests_per_s, default=None)


def tune(
    apis: Sequence[LitAPI],
    target: LitAPI,
    swap: Callable[[list[LitAPI]], object],
    measure: Callable[[], BenchmarkResult],
    settings: Sequence[tuple[int, float]],
    p99_bound_s: float | None,
    apply: bool,
) -> TuningResult:
    """Try each setting on `target` (one of the server's `apis`) by swapping it in and calling `measure`.

    Whatever happens (a setup() that fails, an interrupt), the server ends serving the recommendation or
    its original LitAPIs, never a half-tried setting (unless stop() ended it meanwhile).
    """
    position = list(apis).index(target)
    for size, timeout in settings:  # every setting is checked before the first swap
        validate_api_settings(_with_batching(target, size, timeout))
    trials: list[BatchingTrial] = []
    best: BatchingTrial | None = None
    try:
        for size, timeout in settings:
            variant = _with_batching(target, size, timeout)
            swap([*apis[:position], variant, *apis[position + 1 :]])
            level = measure().levels[0]
            trials.append(BatchingTrial(size, timeout, level))
            logger.info(
                "tune_batching: max_batch_size=%d batch_timeout=%g: %.1f req/s, p99 %s ms",
                size,
                timeout,
                level.requests_per_s,
                _ms(level.p99_s),
            )
        best = _recommend(trials, p99_bound_s)
    except BaseException:  # serve the original again; the error the user sees is the first one
        try:
            swap(list(apis))
        except Exception:
            logger.exception("tune_batching could not serve the original LitAPI again")
        raise
    final = list(apis)
    if apply and best is not None:
        final[position] = _with_batching(target, best.max_batch_size, best.batch_timeout)
    swap(final)
    return TuningResult(tuple(trials), best, p99_bound_s, apply and best is not None)
