"""How the request inspector looks: `server.requests` as a table (HTML in a notebook, text elsewhere), and
the compact "last requests" table of the status panel. Every cell is escaped: payloads and tracebacks
hold user text."""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, final, overload

from litserve.inspector import RequestLog, RequestRecord

__all__ = ["REQUEST_COLUMNS", "RequestsView", "recent_requests_html", "request_row"]

REQUEST_COLUMNS = (
    "id",
    "arrived",
    "endpoint",
    "status",
    "outcome",
    "total ms",
    "queue ms",
    "predict ms",
    "batch",
    "worker",
    "payload",
    "error",
)
_RECENT = 5  # rows in the status panel
_OFF = "the request inspector is off: LitServer(..., inspect_requests=100) keeps the last 100 requests"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def _payload(record: RequestRecord, is_kept: Callable[[int], bool]) -> str:
    payload = record.payload
    if payload is None:
        return "-"
    size = "?" if payload.size_bytes < 0 else f"{payload.size_bytes} B"
    state = "kept" if is_kept(record.id) else "summary"
    return f"{payload.type_name}, {size}, {state}: {payload.head}"


def request_row(record: RequestRecord, is_kept: Callable[[int], bool]) -> list[str]:
    """One record as formatted cells, in REQUEST_COLUMNS order."""
    batch = "-" if record.batch_size is None else f"{record.batch_id or '?'} ({record.batch_size})"
    return [
        str(record.id),
        _clock(record.arrived_at),
        record.path + (" (stream)" if record.is_stream else ""),
        str(record.status),
        record.outcome,
        _ms(record.elapsed_s),
        _ms(record.queue_wait_s),
        _ms(record.predict_s),
        batch,
        record.worker or "-",
        _payload(record, is_kept),
        "-" if record.error is None else record.error.summary,
    ]


def _html_rows(records: Sequence[RequestRecord], is_kept: Callable[[int], bool]) -> str:
    rows = []
    for record in records:
        cells = [html.escape(cell) for cell in request_row(record, is_kept)]
        if record.error is not None:
            cells[-1] = (
                f"<details><summary>{cells[-1]}</summary><pre>{html.escape(record.error.traceback)}</pre></details>"
            )
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return "".join(rows)


def _html_table(records: Sequence[RequestRecord], is_kept: Callable[[int], bool]) -> str:
    head = "".join(f"<th>{html.escape(column)}</th>" for column in REQUEST_COLUMNS)
    return f"<table><tr>{head}</tr>{_html_rows(records, is_kept)}</table>"


def recent_requests_html(log: RequestLog | None) -> str:
    """The status panel's "last requests" table (newest first); "" when the inspector is off or empty."""
    if log is None:
        return ""
    records = log.records()[-_RECENT:][::-1]
    if not records:
        return ""
    return "<div><b>last requests</b>" + _html_table(records, log.is_kept) + "</div>"


@final
class RequestsView(Sequence[RequestRecord]):
    """`server.requests`: the records the inspector keeps, oldest first, as they were when it was read.

    A sequence of `RequestRecord` (`server.requests[-1]` is the newest); a table in a notebook.

    Stability: beta.
    """

    def __init__(self, log: RequestLog | None) -> None:
        self._log = log
        self._records = () if log is None else log.records()

    @property
    def is_enabled(self) -> bool:
        return self._log is not None

    def _is_kept(self, request_id: int) -> bool:
        return self._log is not None and self._log.is_kept(request_id)

    @overload
    def __getitem__(self, index: int) -> RequestRecord: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[RequestRecord]: ...

    def __getitem__(self, index: int | slice) -> RequestRecord | Sequence[RequestRecord]:
        return self._records[index]

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self._records)

    def by_id(self, request_id: int) -> RequestRecord:
        """The record with this id; KeyError when it is not kept (any more)."""
        for record in self._records:
            if record.id == request_id:
                return record
        raise KeyError(f"request {request_id} is not among the last {len(self._records)} kept")

    def to_dict(self) -> dict[str, Any]:
        """Plain values for scripts: whether it is on, its bounds, and every record (`RequestRecord.to_dict`)."""
        log = self._log
        return {
            "enabled": log is not None,
            "max_requests": 0 if log is None else log.max_requests,
            "max_payload_bytes": 0 if log is None else log.max_payload_bytes,
            "kept_bytes": 0 if log is None else log.kept_bytes,
            "requests": [dict(record.to_dict(), payload_kept=self._is_kept(record.id)) for record in self._records],
        }

    def _repr_html_(self) -> str:
        if self._log is None:
            return f"<p>{html.escape(_OFF)}</p>"
        caption = f"<p>last {len(self)} of at most {self._log.max_requests} requests</p>"
        return caption + _html_table(self._records, self._is_kept)

    def __repr__(self) -> str:
        if self._log is None:
            return _OFF
        rows = [list(REQUEST_COLUMNS)] + [_short(request_row(r, self._is_kept)) for r in self._records]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def _short(row: list[str]) -> list[str]:
    return [*row[:-2], row[-2][:40], row[-1][:60]]
