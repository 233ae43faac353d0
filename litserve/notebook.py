"""The notebook face of a server: a live ipywidgets panel, and HTML/text views of the status.

ipywidgets is imported only inside `status_panel`, so importing litserve never loads it. Every view
reads the same `ServerStatus` snapshot, and what it shows is decided once, in `litserve.status_view`
(which the `/status` page reads too); `status_html` and `status_text` are re-exported from there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, final

from litserve.status import ServerState, ServerStatus
from litserve.status_view import status_html, status_text

__all__ = ["PanelSet", "PanelTimer", "status_bundle", "status_html", "status_panel", "status_text"]

logger = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 1.0


@final
class PanelTimer:
    """Refreshes one panel about once a second while its server runs, on a thread named `litserve-panel`.

    It waits on the server's stopped event (never sleeps blindly), refreshes one last time when the
    server stops, and ends; `LitServer.stop()` joins it.
    """

    def __init__(self, refresh: Callable[[], None], stopped: threading.Event) -> None:
        self._refresh = refresh
        self._stopped = stopped
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="litserve-panel", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop refreshing (the widget was closed); the thread ends at its next tick."""
        self._closed.set()

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopped.wait(REFRESH_INTERVAL_S) and not self._closed.is_set():
            self._safe_refresh()
        self._safe_refresh()

    def _safe_refresh(self) -> None:
        try:
            self._refresh()
        except Exception:  # a panel must never take anything down with it
            logger.exception("refreshing the litserve panel failed")


def status_panel(
    read_status: Callable[[], ServerStatus],
    stop: Callable[[], None],
    stopped: threading.Event,
    read_recent: Callable[[], str] = str,
) -> tuple[Any, PanelTimer | None]:
    """Build the ipywidgets panel and, when the server runs, the timer that keeps it current.

    `read_recent` gives the "last requests" table (HTML) of the request inspector ("" when it is off).
    Returns the widget and its timer (None when the server is not running: the panel shows one snapshot).
    """
    try:
        import ipywidgets as widgets
    except ImportError as exc:  # pragma: no cover - ipywidgets is a dependency; this guards broken installs
        raise ImportError("the status panel needs ipywidgets: pip install ipywidgets") from exc

    body = widgets.HTML()
    button = widgets.Button(description="Stop server", button_style="danger", icon="stop")
    panel = widgets.VBox([body, button])

    def refresh() -> None:
        status = read_status()
        body.value = status_html(status) + read_recent()
        is_running = status.state is ServerState.RUNNING
        button.disabled = not is_running
        button.description = "Stop server" if is_running else status.state.value.capitalize()

    def on_click(_: Any) -> None:
        button.disabled = True
        stop()

    button.on_click(on_click)
    refresh()
    if read_status().state is not ServerState.RUNNING:
        return panel, None
    timer = PanelTimer(refresh, stopped)
    timer.start()
    return panel, timer


@final
class PanelSet:
    """A server's panels: the one live panel, shown again however often the server is displayed, and
    every timer still refreshing, which `LitServer.stop()` joins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.timers: list[PanelTimer] = []
        self._shown: tuple[Any, PanelTimer | None] | None = None

    def widget(
        self,
        read_status: Callable[[], ServerStatus],
        stop: Callable[[], None],
        stopped: threading.Event,
        read_recent: Callable[[], str] = str,
    ) -> Any:
        """The live panel, or a new one (see `status_panel`) when there is none."""
        with self._lock:
            shown = self._shown
        if shown is not None and shown[1] is not None and shown[1].is_alive:
            return shown[0]
        panel, timer = status_panel(read_status, stop, stopped, read_recent)
        with self._lock:
            self._shown = (panel, timer)
            if timer is not None:
                self.timers = [t for t in self.timers if t.is_alive] + [timer]
        return panel

    def join(self, timeout_s: float) -> None:
        """Wait for the timers (they refresh once more to show "stopped", then end) and forget them."""
        with self._lock:
            timers, self.timers = self.timers, []
        for timer in timers:
            timer.join(timeout_s)


def status_bundle(
    status: ServerStatus, widget: Callable[[], Any], include: Any, exclude: Any, recent_html: str = ""
) -> dict[str, Any]:
    """What Jupyter shows for a server: the live widget where it can, else HTML; plain text always."""
    bundle: dict[str, Any] = {"text/html": status_html(status) + recent_html}
    try:
        bundle.update(widget()._repr_mimebundle_(include=include, exclude=exclude) or {})
    except Exception:  # no widget support here (e.g. a console): the HTML and text views remain
        logger.debug("showing the status without a widget", exc_info=True)
    bundle["text/plain"] = status_text(status)
    return bundle
