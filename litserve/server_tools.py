"""The server's notebook and in-process face: a client, calls without HTTP, the live panel.

`LitServer` inherits these methods; they reach the server only through `ServerParts` (what a running
server exposes to its tools), so each tool lives in its own module and the facade stays a facade.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from litserve.api import LitAPI
from litserve.client import Client
from litserve.config import ServerSettings, check_apis
from litserve.engine.direct_call import call_directly, pick_endpoint
from litserve.extensions import Extensions, check_api_paths
from litserve.notebook import PanelSet, status_bundle
from litserve.runtime.lifecycle import Lifecycle
from litserve.runtime.swap import Recipe, swap_apis
from litserve.status import ServerStatus

__all__ = ["ServerParts", "ServerTools"]

S = TypeVar("S", bound="ServerParts")


class ServerParts(Protocol):
    """What a LitServer gives its tools."""

    _apis: Sequence[LitAPI]
    _settings: ServerSettings
    _ext: Extensions
    _life: Lifecycle
    _panels: PanelSet

    def _recipe(self, apis: Sequence[LitAPI] | None = None) -> Recipe: ...

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

    def swap(self: S, lit_api: LitAPI | Sequence[LitAPI]) -> S:
        """Serve `lit_api` instead of the current LitAPIs without a restart (hot swap).

        The new LitAPIs' workers run `setup()` while the old ones keep serving; then new requests go to
        the new version, also on open keep-alive connections, while those already queued or running finish
        on the old one. The old workers are then stopped (worker threads drop their LitAPI copies; worker
        processes exit). The port, the socket and the server's settings stay; the paths may change (a
        path the new LitAPIs no longer have answers 404). An endpoint whose path stays counts on in the
        status and `/metrics`. Re-running a cell's `LitServer(...).start(port=...)` does the same.

        Example:
            >>> server = LitServer(ModelV1(), accelerator="cpu").start(port=8000)
            >>> server.swap(ModelV2())  # the same server, now answering with ModelV2
            <LitServer running on http://127.0.0.1:8000 apis=['ModelV2']>

        Args:
            lit_api: a LitAPI, or a list of them each on its own `api_path`; the server's `timeout` applies.

        Returns:
            The server itself.

        Raises:
            WorkerSetupError: a new worker's `setup()` raised (the user's exception is its cause); the old
                LitAPIs keep serving.
            ServerStateError: the server is not running on a socket, or stop() was called before the switch.
            TypeError, ValueError: `lit_api` is not a valid LitAPI, or a path clashes with the server's routes.

        Stability: beta.
        """
        apis = check_apis(lit_api, self._settings.timeout_s)
        check_api_paths(self._ext, apis)
        swap_apis(self._life, self._recipe(apis))
        self._apis = apis
        return self

    def widget(self: ServerParts) -> Any:
        """A live ipywidgets panel: state, counts, latency, workers, last error, and a stop button.

        It refreshes about once a second while the server runs (from a `litserve-panel` thread that
        stop() ends) and shows "stopped" afterwards. Displaying the server as a cell's last expression
        shows the same panel.
        """
        return self._panels.widget(lambda: self.status, self.stop, self._life.stopped)

    def _repr_mimebundle_(self: ServerParts, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return status_bundle(self.status, self.widget, include, exclude)
