"""Scale out on Ray Serve: the same LitServer (or LitAPI) as replicas on a Ray cluster.

Install with `pip install 'litserve[ray]'`. Importing this module does not import Ray; `deploy`
does. `LitServer.to_ray(...)` is the same call as `litserve.ray.deploy(server, ...)`.

Layout: `deploy` (connect to Ray, start Serve on loopback, run the application), `replica` (the
deployment class: each replica builds and runs a LitServer in-process behind Ray's HTTP proxy),
`handle` (`RayDeployment`, what `deploy` returns). Production on Kubernetes: KUBERAY.md beside this file.

Example:
    >>> from litserve.ray import deploy
    >>> deployment = deploy(SimpleLitAPI(), num_replicas=2)
    >>> deployment.predict({"input": 4.0})
    {'output': 16.0}
    >>> deployment.shutdown()
"""

from litserve.ray.deploy import application as application
from litserve.ray.deploy import deploy as deploy
from litserve.ray.handle import RayAppStatus as RayAppStatus
from litserve.ray.handle import RayDeployment as RayDeployment
from litserve.ray.replica import ReplicaInfo as ReplicaInfo

__all__ = ["RayAppStatus", "RayDeployment", "ReplicaInfo", "application", "deploy"]
