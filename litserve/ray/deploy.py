"""Deploy a LitServer's endpoints as a Ray Serve application: connect to Ray, start Serve, run the app.

Safe on a laptop: a Ray started here listens on 127.0.0.1 without its dashboard, and Serve's HTTP
proxy binds 127.0.0.1 unless `host=` says otherwise. A cluster the user started (`ray start`,
KubeRay) keeps its own settings; see litserve/ray/KUBERAY.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from litserve.api import LitAPI
from litserve.ray.handle import RayDeployment, ray_module
from litserve.ray.replica import LitServeReplica, ServerRecipe

if TYPE_CHECKING:
    from litserve.server import LitServer

__all__ = ["application", "deploy"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_ONGOING_REQUESTS = 5  # Ray Serve's own default


def deploy(
    api_or_server: LitAPI | Sequence[LitAPI] | LitServer,
    *,
    name: str = "litserve",
    num_replicas: int | str | None = None,
    ray_actor_options: Mapping[str, Any] | None = None,
    autoscaling_config: Mapping[str, Any] | None = None,
    max_ongoing_requests: int | None = None,
    max_queued_requests: int | None = None,
    retry_after_s: float = 1.0,
    host: str = "127.0.0.1",
    port: int = 8000,
    route_prefix: str = "/",
    address: str | None = None,
) -> RayDeployment:
    """Run every endpoint of a LitServer (or of LitAPIs) as one Ray Serve application; return when it is ready.

    Each replica is a Ray actor running litserve's own engine behind Ray's HTTP proxy, on the GPUs
    Ray gives it (`"num_gpus": 1` -> cuda:0); LitAPI classes from a notebook cell ship by value.
    Returns once every replica finished `setup()` (a failing setup raises), as `start()` does.

    Example:
        >>> deployment = litserve.ray.deploy(SimpleLitAPI(), num_replicas=2)
        >>> requests.post(deployment.url + "/predict", json={"input": 4.0}).json()
        {'output': 16.0}
        >>> deployment.shutdown()

    Args:
        api_or_server: a LitServer that is configured (its options apply to every replica; it need
            not be started) or a LitAPI / list of LitAPIs (served with LitServer's defaults).
        name: the Ray Serve application's name (deploying the same name again replaces it).
        num_replicas: replicas to run (Ray's default 1; "auto" or None with `autoscaling_config`).
        ray_actor_options: each replica's resources, e.g. {"num_cpus": 1, "num_gpus": 1}.
        autoscaling_config: Ray Serve's autoscaling settings (min_replicas, max_replicas, ...).
        max_ongoing_requests: requests one replica takes at once (default: every worker's largest batch, >= 5).
        max_queued_requests: requests waiting for a replica before more get 503 (default: no bound).
        retry_after_s: the `Retry-After` seconds on that 503.
        host, port: where Serve's HTTP proxy listens when this call starts Serve (127.0.0.1:8000);
            "0.0.0.0" exposes it. A running Serve keeps its own.
        route_prefix: where the application's paths start on the proxy ("/": `/predict` as usual).
        address: a Ray cluster to connect to (e.g. "auto" or "ray://head:10001"); default: the one
            `ray.init()` already connected to, else a new local Ray on 127.0.0.1.

    Returns:
        A `RayDeployment` with `url`, `predict()`, `status` and `shutdown()`.
    Raises:
        ImportError: Ray Serve is not installed (`pip install 'litserve[ray]'`).
        RuntimeError: Ray could not start the application (e.g. a replica's `setup()` failed).

    Stability: beta.
    """
    serve = ray_module("ray.serve")
    server = _as_server(api_or_server)
    owns_ray = _connect(address)
    actual_host, actual_port, ray_timeout_s = _start_serve(host, port)
    _check_timeouts(server._settings.timeout_s, ray_timeout_s)
    app = application(server, num_replicas=num_replicas, ray_actor_options=ray_actor_options,
                      autoscaling_config=autoscaling_config, max_ongoing_requests=max_ongoing_requests,
                      max_queued_requests=max_queued_requests, retry_after_s=retry_after_s)  # fmt: skip
    handle = serve.run(app, name=name, route_prefix=route_prefix)
    url = f"http://{_url_host(actual_host)}:{actual_port}{route_prefix.rstrip('/')}"
    logger.info("litserve on Ray Serve: application %r at %s", name, url)
    return RayDeployment(name, url, tuple(api.api_path for api in server._apis), handle, owns_ray)


def application(
    api_or_server: LitAPI | Sequence[LitAPI] | LitServer,
    *,
    num_replicas: int | str | None = None,
    ray_actor_options: Mapping[str, Any] | None = None,
    autoscaling_config: Mapping[str, Any] | None = None,
    max_ongoing_requests: int | None = None,
    max_queued_requests: int | None = None,
    retry_after_s: float = 1.0,
) -> Any:
    """The Ray Serve application for a LitServer, bound but not running: what `deploy` runs.

    For Ray's declarative side: a `RayService` (KubeRay) or `serve run module:app` names it by import
    path (see litserve/ray/KUBERAY.md). Needs no Ray connection. The options are `deploy`'s.

    Example:
        >>> app = litserve.ray.application(LitServer(MyLitAPI(), timeout=30), num_replicas=2)

    Stability: beta.
    """
    serve = ray_module("ray.serve")
    server = _as_server(api_or_server)
    options: dict[str, Any] = {
        "name": "LitServer",
        "max_ongoing_requests": max_ongoing_requests or _default_max_ongoing(server),
        "backpressure_config": {"status_code": 503, "retry_after_s": retry_after_s},
    }
    given = {
        "num_replicas": num_replicas,
        "ray_actor_options": None if ray_actor_options is None else dict(ray_actor_options),
        "autoscaling_config": None if autoscaling_config is None else dict(autoscaling_config),
        "max_queued_requests": max_queued_requests,
    }
    options.update({key: value for key, value in given.items() if value is not None})
    return serve.deployment(**options)(serve.ingress()(LitServeReplica)).bind(ServerRecipe.of(server))


def _as_server(api_or_server: LitAPI | Sequence[LitAPI] | LitServer) -> LitServer:
    from litserve.server import LitServer

    if isinstance(api_or_server, LitServer):
        return api_or_server
    if isinstance(api_or_server, LitAPI) or (
        isinstance(api_or_server, Sequence) and all(isinstance(api, LitAPI) for api in api_or_server)
    ):
        # The replica picks its devices (Ray's GPUs, else the CPU); nothing is detected here.
        return LitServer(api_or_server, accelerator="cpu")
    raise TypeError(f"deploy() takes a LitServer, a LitAPI or a list of LitAPIs; got {type(api_or_server).__name__}")


def _connect(address: str | None) -> bool:
    """Connect to Ray if not yet connected; True when this started a new local Ray (on loopback)."""
    ray = ray_module("ray")
    if ray.is_initialized():
        return False
    if address is not None:
        ray.init(address=address)
        return False
    # A new local Ray: its processes listen on 127.0.0.1, without the dashboard.
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
    return True


def _start_serve(host: str, port: int) -> tuple[str, int, float | None]:
    """Start Serve's proxies on `host:port` unless Serve runs already; the proxy's real host, port, timeout."""
    ray_module("ray.serve").start(http_options={"host": host, "port": port})
    try:
        config = ray_module("ray.serve.context")._get_global_client().http_config
        return str(config.host), int(config.port), config.request_timeout_s
    except Exception:  # a private accessor; without it, the asked-for values are right for a Serve started here
        return host, port, None


def _check_timeouts(timeout_s: float | None, ray_timeout_s: float | None) -> None:
    """Ray's proxy answers 408 at its own request timeout; ours (504) must come first."""
    if ray_timeout_s is not None and (timeout_s is None or ray_timeout_s <= timeout_s):
        logger.warning(
            "Ray Serve's request_timeout_s (%s s) is not above the server's timeout (%s s): Ray answers 408 "
            "before litserve's 504; start Serve with a larger http_options['request_timeout_s']",
            ray_timeout_s,
            timeout_s,
        )


def _default_max_ongoing(server: LitServer) -> int:
    workers = len(server._settings.devices) * server._settings.workers_per_device
    largest_batch = max(api.max_batch_size for api in server._apis)
    return max(DEFAULT_MAX_ONGOING_REQUESTS, workers * largest_batch)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
