"""What `litserve.ray.deploy` returns: the application's URL, calls through Ray, its status, and shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import importlib
import logging
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, final

from litserve.client import Client

if TYPE_CHECKING:
    from litserve.ray.replica import ReplicaInfo

__all__ = ["RayAppStatus", "RayDeployment", "ray_module"]

logger = logging.getLogger(__name__)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class RayAppStatus:
    """A snapshot of one Ray Serve application, as Ray's controller reports it.

    Attributes:
        name: the application's name.
        status: Ray's application status: "DEPLOYING", "RUNNING", "DEPLOY_FAILED", "UNHEALTHY",
            "DELETING" or "NOT_STARTED" (gone).
        replicas: replica counts by Ray's replica state, e.g. {"RUNNING": 2, "STARTING": 1}.
        message: Ray's explanation when something is wrong (a failing `setup()` shows here).

    Stability: beta.
    """

    name: str
    status: str
    replicas: Mapping[str, int]
    message: str

    @property
    def running_replicas(self) -> int:
        return self.replicas.get("RUNNING", 0)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class RayDeployment:
    """A LitServer's endpoints running as a Ray Serve application; made by `litserve.ray.deploy`.

    Example:
        >>> deployment = server.to_ray(num_replicas=2)
        >>> requests.post(deployment.url + "/predict", json={"input": 4.0}).json()
        {'output': 16.0}
        >>> deployment.predict({"input": 4.0})  # through Ray's DeploymentHandle, no HTTP
        {'output': 16.0}
        >>> deployment.shutdown()

    Attributes:
        name: the Ray Serve application's name.
        url: where Ray's HTTP proxy serves it, e.g. "http://127.0.0.1:8000" (endpoints follow it).
        paths: the endpoints' paths, the first one is `predict()`'s default.
        handle: Ray's `DeploymentHandle` to the ingress deployment (for `await handle.predict.remote(...)`).
        owns_ray: `deploy` started Ray itself; `shutdown()` then stops Serve and Ray when no other
            application is left.

    Stability: beta.
    """

    name: str
    url: str
    paths: tuple[str, ...]
    handle: Any
    owns_ray: bool = False
    result_timeout_s: float | None = None

    def predict(self, payload: Any, path: str | None = None) -> Any:
        """Run one request on a replica through Ray (no HTTP) and return its decoded JSON answer.

        The replica runs it through its engine like `LitServer.predict` (validation, batching,
        timeout). Raises `RequestFailedError` with the status and detail an HTTP client would get.
        Works in a notebook cell too (the wait happens off the cell's event loop).
        """
        response = self.handle.predict.remote(payload, path or self.paths[0])
        return _wait(lambda: response.result(timeout_s=self.result_timeout_s))

    def client(self, api_key: str | None = None, path: str | None = None) -> Client:
        """A `litserve.Client` for the application's URL (first endpoint unless `path` is given)."""
        return Client(self.url, api_key=api_key, path=path or self.paths[0])

    def replicas(self, max_calls: int = 200) -> tuple[ReplicaInfo, ...]:
        """Where the running replicas are (node, actor, process, devices), sorted by actor name.

        Ray's handle picks a replica per call, so this asks until every running replica has
        answered, at most `max_calls` times.
        """
        expected = self.status.running_replicas
        found: dict[str, ReplicaInfo] = {}
        for _ in range(max_calls):
            info = _wait(lambda: self.handle.describe.remote().result(timeout_s=self.result_timeout_s))
            found[info.actor_name] = info
            if len(found) >= expected:
                break
        return tuple(found[name] for name in sorted(found))

    @property
    def status(self) -> RayAppStatus:
        """The application's state and replica counts, asked of Ray's controller now."""
        serve = ray_module("ray.serve")
        app = serve.status().applications.get(self.name)
        if app is None:
            return RayAppStatus(self.name, "NOT_STARTED", types.MappingProxyType({}), "")
        counts: dict[str, int] = {}
        for deployment in app.deployments.values():
            for state, count in deployment.replica_states.items():
                counts[str(state)] = counts.get(str(state), 0) + count
        message = app.message or "; ".join(d.message for d in app.deployments.values() if d.message)
        return RayAppStatus(self.name, str(app.status.value), types.MappingProxyType(counts), message)

    def shutdown(self) -> None:
        """Delete the application (its replicas stop their servers); idempotent.

        When `deploy` started Ray itself and no other Serve application is left, Serve and Ray stop
        too, so nothing keeps running after the notebook is done.
        """
        ray, serve = ray_module("ray"), ray_module("ray.serve")
        if not ray.is_initialized():
            return
        serve.delete(self.name)
        if self.owns_ray and not serve.status().applications:
            serve.shutdown()
            ray.shutdown()
        logger.info("litserve Ray application %r shut down", self.name)

    def __enter__(self) -> RayDeployment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<RayDeployment {self.name!r} {self.url} paths={list(self.paths)}>"


def ray_module(name: str) -> Any:
    """`ray` or one of its modules, imported now (never when litserve is imported), typed loosely.

    Raises ImportError with the install hint when Ray Serve is missing.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError("Ray Serve is not installed; install it with: pip install 'litserve[ray]'") from exc


def _wait(call: Any) -> Any:
    """`call()`, on a helper thread when this thread runs an event loop (a Jupyter cell does).

    Ray refuses blocking waits inside a running loop; the helper thread has none.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="litserve-ray-wait") as pool:
        return pool.submit(call).result()
