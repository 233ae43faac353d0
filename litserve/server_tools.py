"""The server's notebook and in-process face: a client, calls without HTTP, the live panel.

`LitServer` inherits these methods; they reach the server only through `ServerParts` (what a running
server exposes to its tools), so each tool lives in its own module and the facade stays a facade.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from litserve.api import LitAPI
from litserve.client import Client
from litserve.config import ServerSettings
from litserve.engine.direct_call import call_directly, pick_endpoint
from litserve.notebook import PanelSet, status_bundle
from litserve.runtime.lifecycle import Lifecycle
from litserve.status import ServerStatus

if TYPE_CHECKING:
    from litserve.ray import RayDeployment

__all__ = ["ServerParts", "ServerTools"]


class ServerParts(Protocol):
    """What a LitServer gives its tools."""

    _apis: Sequence[LitAPI]
    _settings: ServerSettings
    _life: Lifecycle
    _panels: PanelSet

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

    def to_ray(
        self: ServerParts,
        num_replicas: int | str | None = None,
        ray_actor_options: Mapping[str, Any] | None = None,
        autoscaling_config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> RayDeployment:
        """Deploy this server's endpoints as a Ray Serve application (`litserve.ray.deploy(self, ...)`).

        Each replica runs its own copy of this server (not this running one: it need not be started).
        Returns once every replica is ready; see `litserve.ray.deploy` for every option.

        Example:
            >>> deployment = server.to_ray(num_replicas=2, ray_actor_options={"num_gpus": 1})
            >>> deployment.predict({"input": 4.0})
            {'output': 16.0}
            >>> deployment.shutdown()

        Stability: beta (needs `pip install 'litserve[ray]'`).
        """
        from litserve.ray import deploy

        return deploy(
            self,  # type: ignore[arg-type]  # self is the LitServer these tools are mixed into
            num_replicas=num_replicas,
            ray_actor_options=ray_actor_options,
            autoscaling_config=autoscaling_config,
            **options,
        )

    def widget(self: ServerParts) -> Any:
        """A live ipywidgets panel: state, counts, latency, workers, last error, and a stop button.

        It refreshes about once a second while the server runs (from a `litserve-panel` thread that
        stop() ends) and shows "stopped" afterwards. Displaying the server as a cell's last expression
        shows the same panel.
        """
        return self._panels.widget(lambda: self.status, self.stop, self._life.stopped)

    def _repr_mimebundle_(self: ServerParts, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return status_bundle(self.status, self.widget, include, exclude)
