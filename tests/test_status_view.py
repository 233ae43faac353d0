"""The one view model every status view renders: the notebook panel's HTML and the /status page's feed."""

from __future__ import annotations

import html
import json

from litserve.codec import encode_json
from litserve.status import EndpointStatus, ErrorRecord, Latency, ServerState, ServerStatus, WorkerState, WorkerStatus
from litserve.status_view import ENDPOINT_COLUMNS, WORKER_COLUMNS, status_html, status_text, status_view

HOSTILE = "<script>alert('x')</script> & \"quotes\""


def _status(error: ErrorRecord | None = None, url: str | None = "http://127.0.0.1:8000") -> ServerStatus:
    worker = WorkerStatus("litserve-worker-cpu-0", "cpu", WorkerState.BUSY, served=7, errors=1, pid=4242, restarts=2)
    endpoint = EndpointStatus(
        path="/predict",
        queue_depth=3,
        in_flight=2,
        ok=7,
        client_errors=1,
        server_errors=1,
        timed_out=4,
        cancelled=5,
        dropped_timed_out=0,
        dropped_cancelled=0,
        workers=(worker,),
        latency=Latency(0.0012, 0.002, 0.0105, 18),
        batch_sizes=((1, 5), (4, 2)),
    )
    return ServerStatus(ServerState.RUNNING, url, 12.4, (endpoint,), error)


def test_view_model_holds_every_fact_formatted_once() -> None:
    view = status_view(_status())
    assert (view["state"], view["url"], view["requests"], view["headline"]) == (
        "running",
        "http://127.0.0.1:8000",
        18,
        "up 12 s \u00b7 18 requests",
    )
    endpoints, workers = view["tables"]
    assert [c["key"] for c in endpoints["columns"]] == [key for key, _ in ENDPOINT_COLUMNS]
    assert endpoints["rows"] == [
        ["/predict", "7", "1", "1", "4", "5", "2", "3", "1.2 / 2.0 / 10.5", "1\u00d75, 4\u00d72"]
    ]
    assert [c["key"] for c in workers["columns"]] == [key for key, _ in WORKER_COLUMNS]
    assert workers["rows"] == [["litserve-worker-cpu-0", "cpu", "busy", "7", "1", "4242", "2"]]
    assert view["last_error"] is None
    assert json.loads(encode_json(view)) == view  # JSON-able as it is


def test_a_server_never_asked_shows_dashes() -> None:
    endpoint = EndpointStatus("/predict", 0, 0, 0, 0, 0, 0, 0, 0, 0, ())
    row = status_view(ServerStatus(ServerState.CREATED, None, 0.0, (endpoint,)))["tables"][0]["rows"][0]
    assert row[-2:] == ["- / - / -", "-"]


def test_the_notebook_html_shows_exactly_the_view_model() -> None:
    status = _status(ErrorRecord("litserve-worker-cpu-0", "RuntimeError: boom", "Traceback ...\nboom", 1.0))
    page, view = status_html(status), status_view(status)
    for table in view["tables"]:
        labels = "".join(f"<th>{html.escape(column['label'])}</th>" for column in table["columns"])
        assert labels in page
        for row in table["rows"]:
            assert "".join(f"<td>{html.escape(cell)}</td>" for cell in row) in page
    assert view["headline"] in page and "RuntimeError: boom" in page and "Traceback ...\nboom" in page
    assert status_text(status).endswith("\n  last error: RuntimeError: boom")


def test_the_notebook_html_escapes_user_text() -> None:
    error = ErrorRecord("litserve-worker-cpu-0", f"RuntimeError: {HOSTILE}", f"Traceback\n{HOSTILE}", 1.0)
    page = status_html(_status(error, url="http://x/?a=<b>"))
    assert "<script>" not in page and "?a=<b>" not in page and "?a=&lt;b&gt;" in page
    assert html.escape(HOSTILE) in page
    view = status_view(_status(error))
    assert view["last_error"]["traceback"] == f"Traceback\n{HOSTILE}"  # the model keeps text as it is
