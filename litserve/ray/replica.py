"""One Ray Serve replica: this project's own engine, built from a shipped recipe, behind Ray's HTTP proxy.

The driver turns a LitServer (not started) into a `ServerRecipe`; Ray pickles it with cloudpickle, so
LitAPI classes defined in a notebook cell travel by value. Each replica rebuilds the LitServer from
it, picks the devices Ray gave it, starts it without a socket (`_start_in_process`, as
`litserve.utils.wrap_litserve_start` does), and hands `server.app` to Ray Serve's ASGI ingress. Ray's
proxy then forwards every HTTP request as an ASGI call into our app, on the replica's event loop: our
routes, validation, auth, batching, streaming and timeouts answer it exactly as on our own socket.

`ray` is imported only inside functions that run in a replica or while deploying.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, final

from pydantic import BaseModel

from litserve.api import LitAPI
from litserve.engine.devices import resolve_devices
from litserve.hooks import find_body_model
from litserve.ray.handle import ray_module
from litserve.web.guard import ConnectionGuard, HostPolicy

if TYPE_CHECKING:
    from litserve.server import LitServer
    from litserve.status import ServerStatus
    from litserve.web.stack import ASGIApp

__all__ = ["LitServeReplica", "ReplicaInfo", "ServerRecipe", "pin_body_model", "replica_devices"]

logger = logging.getLogger(__name__)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class ServerRecipe:
    """What a replica needs to build its own LitServer: the server's construction-time attributes.

    These are the LitAPIs, the checked settings and extensions: plain values that cloudpickle ships
    by value. A run's state (lifecycle, threads, panels) is left behind and made fresh in the replica.
    """

    attributes: tuple[tuple[str, Any], ...]
    body_models: tuple[type[BaseModel] | None, ...]  # each LitAPI's, resolved here (see `pin_body_model`)

    @classmethod
    def of(cls, server: LitServer) -> ServerRecipe:
        # What `_init_lifecycle` makes is a run's state (locks, events, panels): found by making it afresh
        # on a scratch copy, so whatever that method comes to hold is never shipped.
        scratch = type(server).__new__(type(server))
        vars(scratch).update(vars(server))
        scratch._init_lifecycle()
        run_state = {name for name, value in vars(scratch).items() if vars(server).get(name) is not value}
        kept = tuple((name, value) for name, value in vars(server).items() if name not in run_state)
        return cls(kept, tuple(find_body_model(api) for api in server._apis))

    def build(self, devices: Sequence[str]) -> LitServer:
        """A new, unstarted LitServer like the one the recipe was taken from, on `devices`."""
        from litserve.server import LitServer

        server = LitServer.__new__(LitServer)
        for name, value in self.attributes:
            setattr(server, name, value)
        server._settings = dataclasses.replace(server._settings, devices=tuple(devices))
        for api, model in zip(server._apis, self.body_models, strict=True):
            pin_body_model(api, model)
        server._init_lifecycle()
        return server


def pin_body_model(api: LitAPI, model: type[BaseModel] | None) -> None:
    """Give `api.decode_request`'s request parameter the model the driver resolved, as a class.

    A LitAPI class shipped by value cannot resolve a string annotation (`from __future__ import
    annotations`, or a model defined beside it in a notebook) where it lands; the replica's server
    finds the class itself there. Only the replica's copy of the hook changes.
    """
    hook = getattr(type(api), "decode_request", None)
    parameters = list(inspect.signature(api.decode_request).parameters)
    if model is None or hook is None or not parameters or not hasattr(hook, "__annotations__"):
        return
    hook.__annotations__ = {**hook.__annotations__, parameters[0]: model}


@final
@dataclasses.dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """Where one replica runs: Ray's node id and actor name, its process id and its devices.

    Stability: beta.
    """

    node_id: str
    actor_name: str
    pid: int
    devices: tuple[str, ...]
    cuda_visible_devices: str | None


def replica_devices(gpu_ids: Sequence[Any], driver_devices: Sequence[str]) -> list[str]:
    """The devices a replica serves on: each GPU Ray gave it, else the CPU.

    Ray sets CUDA_VISIBLE_DEVICES to the GPUs it assigned (`num_gpus` in `ray_actor_options`), so
    torch numbers them from 0 inside the replica: n GPUs -> cuda:0..cuda:n-1. Without GPUs the
    replica runs on the CPU, keeping the driver's CPU device count (each gets its own workers).
    """
    if gpu_ids:
        return resolve_devices("cuda", len(gpu_ids))
    if driver_devices and all(device == "cpu" for device in driver_devices):
        return list(driver_devices)
    return ["cpu"]


class LitServeReplica:
    """The Ray Serve deployment class: one running LitServer per replica (wrapped by `serve.ingress()`).

    Ray calls `__serve_build_asgi_app__` after the constructor and serves what it returns; the
    DeploymentHandle reaches `predict` and `describe` by name.
    """

    def __init__(self, recipe: ServerRecipe) -> None:
        self._devices = replica_devices(ray_module("ray").get_gpu_ids(), dict(recipe.attributes)["_settings"].devices)
        self._server = recipe.build(self._devices)
        # Blocks until every worker finished setup(); a failing setup() fails the replica, and Ray
        # reports the deployment as failed (serve.run raises with the error).
        self._server._start_in_process()
        logger.info("litserve replica serving on %s", self._devices)

    def __serve_build_asgi_app__(self) -> ASGIApp:
        # The connection guard, as in front of our own socket: it sees the `http.disconnect` Ray's proxy
        # delivers when a client hangs up and cancels the request's route (a cancel of the ASGI call
        # alone can be swallowed while Quart reads the body, and the queued request would run).
        # Any well-formed Host is served: Ray's proxy decides who reaches it.
        running = self._server._life.serving("a Ray replica")
        return ConnectionGuard(self._server.app, HostPolicy(loopback_only=False), running.endpoints)

    async def predict(self, payload: Any, path: str | None = None) -> Any:
        """`LitServer.predict` on this replica (from a DeploymentHandle), off the replica's event loop."""
        server: Any = self._server  # LitServer's tools are typed by a protocol with a looser `_apis`
        return await asyncio.to_thread(server.predict, payload, path=path)

    def server_status(self) -> ServerStatus:
        """This replica's `LitServer.status` (counts, queue depth, workers, last error)."""
        return self._server.status

    def describe(self) -> ReplicaInfo:
        """Where this replica runs (tests and `RayDeployment.replicas()` read it)."""
        context = ray_module("ray").get_runtime_context()
        return ReplicaInfo(
            node_id=context.get_node_id(),
            actor_name=context.get_actor_name() or "",
            pid=os.getpid(),
            devices=tuple(self._devices),
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        )

    def __del__(self) -> None:
        # Ray runs this when it stops the replica (after the app's lifespan shutdown).
        server = getattr(self, "_server", None)
        if server is not None:
            server.stop()
