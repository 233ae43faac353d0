"""What a status view shows, decided once: the notebook panel, the reprs and the `/status` page all read it.

`status_view` turns a `ServerStatus` into a plain, JSON-able view model: the state, a headline, two
tables (endpoints, workers) whose cells are already formatted strings, and the last error. The
renderers only lay it out: `status_html` here (the notebook panel and the HTML repr) and the page's
script (`litserve/web/status_page.html`), which fetches the very same model as JSON. A column added
here appears in both. `status_text` is the terminal's few lines.

Every cell is text: a renderer must escape it (`status_html` does; the page only ever sets
`textContent`). Tracebacks hold user text.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from litserve.status import EndpointStatus, ErrorRecord, ServerStatus, WorkerStatus

__all__ = ["ENDPOINT_COLUMNS", "WORKER_COLUMNS", "status_html", "status_text", "status_view"]

# (key, label): the key names the fact for code and tests, the label is what a reader sees.
ENDPOINT_COLUMNS = (
    ("endpoint", "endpoint"),
    ("ok", "ok"),
    ("client_errors", "4xx"),
    ("server_errors", "5xx"),
    ("timed_out", "timed out"),
    ("cancelled", "cancelled"),
    ("in_flight", "in flight"),
    ("queued", "queued"),
    ("latency_ms", "p50 / p95 / p99 ms"),
    ("batches", "batches"),
)
WORKER_COLUMNS = (
    ("worker", "worker"),
    ("device", "device"),
    ("state", "state"),
    ("served", "served"),
    ("errors", "errors"),
    ("pid", "pid"),
    ("restarts", "restarts"),
)
_STATE_COLOURS = {"running": "#1a7f37", "failed": "#cf222e", "stopped": "#57606a"}
_OTHER_STATE_COLOUR = "#9a6700"  # starting, stopping, created: on the way somewhere


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _endpoint_row(endpoint: EndpointStatus) -> list[str]:
    latency = endpoint.latency
    batches = ", ".join(f"{size}\u00d7{count}" for size, count in endpoint.batch_sizes) or "-"
    return [
        endpoint.path,
        str(endpoint.ok),
        str(endpoint.client_errors),
        str(endpoint.server_errors),
        str(endpoint.timed_out),
        str(endpoint.cancelled),
        str(endpoint.in_flight),
        str(endpoint.queue_depth),
        f"{_ms(latency.p50_s)} / {_ms(latency.p95_s)} / {_ms(latency.p99_s)}",
        batches,
    ]


def _worker_row(worker: WorkerStatus) -> list[str]:
    pid = "-" if worker.pid is None else str(worker.pid)
    return [
        worker.name,
        worker.device,
        worker.state.value,
        str(worker.served),
        str(worker.errors),
        pid,
        str(worker.restarts),
    ]


def _table(name: str, columns: Sequence[tuple[str, str]], rows: list[list[str]]) -> dict[str, Any]:
    return {"name": name, "columns": [{"key": key, "label": label} for key, label in columns], "rows": rows}


def _error(record: ErrorRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {"where": record.where, "summary": record.summary, "traceback": record.traceback, "at_s": record.at_s}


def status_view(status: ServerStatus) -> dict[str, Any]:
    """The view model of one snapshot: what every status view shows, as JSON-able values.

    Stability: beta. The page at `status_path` serves it as JSON (`GET /status?format=json`).

    Returns:
        A dict with `state` (e.g. "running"), `url` (or None), `uptime_s`, `requests`, `headline`
        (e.g. "up 12 s · 40 requests"), `tables` (each with `name`, `columns` of `key`/`label` and
        `rows` of formatted strings, in column order) and `last_error` (`where`, `summary`,
        `traceback`, `at_s`; or None).

    Example:
        >>> status_view(server.status)["tables"][0]["rows"]  # doctest: +SKIP
        [['/predict', '40', '0', '0', '0', '0', '0', '0', '0.4 / 0.9 / 1.2', '1×40']]
    """
    return {
        "state": status.state.value,
        "url": status.url,
        "uptime_s": status.uptime_s,
        "requests": status.requests,
        "headline": f"up {status.uptime_s:.0f} s \u00b7 {status.requests} requests",
        "tables": [
            _table("endpoints", ENDPOINT_COLUMNS, [_endpoint_row(e) for e in status.endpoints]),
            _table("workers", WORKER_COLUMNS, [_worker_row(w) for w in status.workers]),
        ],
        "last_error": _error(status.last_error),
    }


def _html_table(table: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(column['label'])}</th>" for column in table["columns"])
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in table["rows"])
    return f"<table><tr>{head}</tr>{rows}</table>"


def status_html(status: ServerStatus) -> str:
    """The status as an HTML fragment (every value escaped): the panel's body, and the notebook view
    without widgets."""
    view = status_view(status)
    state = view["state"]
    colour = _STATE_COLOURS.get(state, _OTHER_STATE_COLOUR)
    url = view["url"]
    where = f' on <a href="{html.escape(url)}" target="_blank">{html.escape(url)}</a>' if url else ""
    parts = [
        f'<div class="litserve-status"><b>litserve</b> <span style="color:{colour}"><b>{html.escape(state)}</b>'
        f"</span>{where} &middot; {html.escape(view['headline'])}",
        *(_html_table(table) for table in view["tables"]),
    ]
    error = view["last_error"]
    if error is not None:
        parts.append(
            f"<details><summary>last error: {html.escape(error['summary'])}</summary>"
            f"<pre>{html.escape(error['traceback'])}</pre></details>"
        )
    parts.append("</div>")
    return "".join(parts)


def status_text(status: ServerStatus) -> str:
    """A few plain lines: what a terminal or a notebook without widgets shows."""
    where = f" on {status.url}" if status.url else ""
    lines = [f"litserve {status.state.value}{where}, up {status.uptime_s:.0f} s"]
    for endpoint in status.endpoints:
        lines.append(
            f"  {endpoint.path}: {endpoint.ok} ok, {endpoint.client_errors} 4xx, {endpoint.server_errors} 5xx, "
            f"{endpoint.timed_out} timed out, {endpoint.cancelled} cancelled; {endpoint.in_flight} in flight, "
            f"{endpoint.queue_depth} queued; p50 {_ms(endpoint.latency.p50_s)} ms"
        )
        for worker in endpoint.workers:
            process = "" if worker.pid is None else f", pid {worker.pid}, {worker.restarts} restarts"
            lines.append(
                f"    {worker.name} ({worker.device}{process}): {worker.state.value}, "
                f"{worker.served} served, {worker.errors} errors"
            )
    if status.last_error is not None:
        lines.append(f"  last error: {status.last_error.summary}")
    return "\n".join(lines)
