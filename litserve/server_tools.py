"""The server's notebook and in-process face: a client, calls without HTTP, the live panel.

`LitServer` inherits these methods; they reach the server only through `ServerParts` (what a running
server exposes to its tools), so each tool lives in its own module and the facade stays a facade.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from litserve.api import LitAPI
from litserve.client import Client
from litserve.config import ServerSettings
from litserve.engine.direct_call import call_directly, pick_endpoint
from litserve.exceptions import ReplayError
from litserve.inspector import RequestLog
from litserve.inspector_view import RequestsView, recent_requests_html
from litserve.load_test import BenchmarkResult, run_benchmark
from litserve.notebook import PanelSet, status_bundle
from litserve.replay import Replayer
from litserve.runtime.lifecycle import Lifecycle
from litserve.status import ServerStatus

__all__ = ["ServerParts", "ServerTools"]


class ServerParts(Protocol):
    """What a LitServer gives its tools."""

    _apis: Sequence[LitAPI]
    _settings: ServerSettings
    _life: Lifecycle
    _panels: PanelSet
    _inspector: RequestLog | None
    _replays: Replayer

    @property
    def status(self) -> ServerStatus: ...

    @property
    def url(self) -> str: ...

    def stop(self) -> None: ...

    def widget(self) -> Any: ...


class ServerTools:
    """LitServer's notebook and in-process methods (a mixin; `self` is a LitServer)."""

    def client(self: ServerParts) -> Client:
        """A `litserve.Client` bound to this server's URL, first endpoint and API key.

        Example:
            >>> server.client().predict({"input": 4.0})
            {'output': 16.0}
        """
        running = self._life.serving("client()")
        return Client(self.url, api_key=running.api_key, path=self._apis[0].api_path)

    def predict(self: ServerParts, payload: Any, *, path: str | None = None) -> Any:
        """Run one request through the queue, batching, validation and workers, without HTTP.

        Returns what a client would get as decoded JSON; raises RequestFailedError with the status
        and detail a client would see. Handy for quick checks in a notebook cell. Streaming endpoints
        are called with `server.client().stream(...)`.
        """
        running = self._life.serving("predict()")
        return call_directly(pick_endpoint(running.endpoints, path), payload, self._settings.timeout_s)

    def widget(self: ServerParts) -> Any:
        """A live ipywidgets panel: state, counts, latency, workers, last error, and a stop button.

        It refreshes about once a second while the server runs (from a `litserve-panel` thread that
        stop() ends) and shows "stopped" afterwards. Displaying the server as a cell's last expression
        shows the same panel.
        """
        inspector = self._inspector
        recent = lambda: recent_requests_html(inspector)  # noqa: E731 - the panel's "last requests" table
        return self._panels.widget(lambda: self.status, self.stop, self._life.stopped, recent)

    def _repr_mimebundle_(self: ServerParts, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return status_bundle(self.status, self.widget, include, exclude, recent_requests_html(self._inspector))

    @property
    def requests(self: ServerParts) -> RequestsView:
        """The last requests the server answered, oldest first (the request inspector); a table in a notebook.

        Each `RequestRecord` has its id, endpoint, arrival, status, queue wait, batch and size, worker,
        predict time, error with traceback, and its payload's summary. On by default in a notebook
        (100 kept), off in a script: `LitServer(..., inspect_requests=N)`. `.to_dict()` for scripts.
        Stability: beta.

        Example:
            >>> failed = [r for r in server.requests if r.error is not None]
            >>> print(failed[-1].error.traceback)  # doctest: +SKIP
        """
        return RequestsView(self._inspector)

    def replay(self: ServerParts, request_id: int) -> Any:
        """Run a kept request's payload through the same hooks again, in the calling thread.

        decode_request -> (batch) -> predict -> (unbatch) -> encode_response run as a worker runs them, on a
        private copy of the LitAPI set up once on the server's first device (kept for later replays), so
        live traffic is not touched; in process mode too the copy lives in this (the calling) process. A
        hook that raises raises here with its own traceback, so `%debug` lands in the hook and `breakpoint()`
        stops in this thread. Stability: beta.

        Returns:
            What an HTTP client got, as decoded JSON; for a streaming endpoint, the list of its chunks.

        Raises:
            ReplayError: the inspector is off, the request is not kept (any more), its payload was only
                summarised (larger than `inspect_payload_bytes`), or its endpoint speaks a spec.
        """
        if self._inspector is None:
            raise ReplayError("the request inspector is off: start the server with inspect_requests=N to replay")
        record, payload = self._inspector.find(request_id)
        if record is None:
            raise ReplayError(f"request {request_id} is not among the last {self._inspector.max_requests} kept")
        if payload is None:
            size = "not read" if record.payload is None else f"{record.payload.size_bytes} bytes"
            raise ReplayError(
                f"request {request_id}'s payload was not kept ({size}; payloads up to "
                f"{self._inspector.max_payload_bytes} bytes are kept: raise inspect_payload_bytes)"
            )
        api = next((api for api in self._apis if api.api_path == record.path), None)
        if api is None:
            raise ReplayError(f"this server has no endpoint at {record.path} any more")
        return self._replays.replay(api, payload)

    def benchmark(
        self: ServerParts,
        payload: Any,
        concurrency: Sequence[int] = (1, 8, 32),
        duration: float = 5.0,
        *,
        path: str | None = None,
        warmup: float = 1.0,
        timeout: float = 30.0,
        clients: str = "process",
    ) -> BenchmarkResult:
        """Load-test this running server over real HTTP: req/s and p50/p90/p99 latency per concurrency.

        Each level runs `concurrency` client threads (in a child process by default, so they do not take
        the GIL from this server), each on its own keep-alive connection, sending `payload` back to back
        for `duration` seconds (requests then in flight are waited for). The result is a table and a plot
        in a notebook, `.to_dict()` in a script. See `litserve.load_test.run_benchmark`. Stability: beta.

        Args:
            payload: the JSON body of every request.
            concurrency: the levels, in order.
            duration: seconds per level.
            path: which endpoint, on a server with several.
            warmup: seconds of load at the first level before measuring.
            timeout: seconds a client waits for an answer before counting it failed.
            clients: "process" (default) or "thread" (the clients run in this process).
        """
        running = self._life.serving("benchmark()")
        endpoint = pick_endpoint(running.endpoints, path)
        return run_benchmark(
            self.url + endpoint.path,
            payload,
            concurrency,
            duration,
            api_key=running.api_key,
            warmup_s=warmup,
            timeout_s=timeout,
            clients=clients,
        )
