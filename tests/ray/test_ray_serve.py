"""LitServers on a simulated three-node Ray cluster on 127.0.0.1: placement, the request contract through
Ray's HTTP proxy, calls through the DeploymentHandle, backpressure, hang-ups, and a replica killed under load.

One cluster serves the whole module (a head with no CPU and two nodes of one CPU each, 100 MB object
stores, no dashboard): starting it takes seconds on two cores. Three applications share it:
`contract` (two replicas of one CPU: one per node), `saturated` (one replica, small queues, no timeout)
and `deadline` (one replica, 1 s timeout). Everything is torn down by the fixtures; no Ray process
outlives the module.

Cross-process order comes from two small Ray actors (`Gate`, `Recorder`) that the LitAPIs call, never
from sleeps. Where only a replica's own counters can tell that something happened (a queued request, a
cancelled one), the test asks for them until they say so, bounded (`wait_until`).
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import requests
from pydantic import BaseModel

import litserve as ls
from tests.helpers import free_port, raw_request, wait_until

serve = pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'litserve[ray]')")
import ray  # noqa: E402 - only once we know it is installed
from ray.cluster_utils import Cluster  # noqa: E402

from litserve.ray import RayDeployment, deploy  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(180)]

KEY = "ray-secret"
AUTH = {"X-API-Key": KEY}
OBJECT_STORE_BYTES = 100 * 1024 * 1024


class Item(BaseModel):
    input: float
    sleep_s: float = 0.0


@ray.remote(num_cpus=0)
class Gate:
    """A cross-process event: predicts wait on it, the test opens it."""

    def __init__(self) -> None:
        import asyncio

        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()

    def open(self) -> None:
        self._event.set()


@ray.remote(num_cpus=0)
class Recorder:
    """Which request ids started predict, on which replica (actor name); waiters block until enough did."""

    def __init__(self) -> None:
        import asyncio

        self._seen: dict[str, str] = {}
        self._changed = asyncio.Condition()

    async def record(self, request_id: str, replica: str) -> None:
        async with self._changed:
            self._seen[request_id] = replica
            self._changed.notify_all()

    async def wait_for_replicas(self, count: int, timeout_s: float) -> dict[str, str]:
        import asyncio

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(set(self._seen.values())) >= count), timeout_s)
            return dict(self._seen)

    async def wait_for(self, request_id: str, timeout_s: float) -> str:
        import asyncio

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: request_id in self._seen), timeout_s)
            return self._seen[request_id]

    def seen(self) -> dict[str, str]:
        return dict(self._seen)


def make_apis(gate: Any, recorder: Any) -> list[ls.LitAPI]:
    """The LitAPIs, defined inside a function as in a notebook cell: Ray ships these classes by value."""

    class SquareAPI(ls.LitAPI):
        def decode_request(self, request: Item) -> Item:
            return request

        def predict(self, item: Item) -> float:
            time.sleep(item.sleep_s)
            return item.input**2

        def encode_response(self, output: float) -> dict[str, float]:
            return {"output": output}

    class CountdownAPI(ls.LitAPI):
        def predict(self, x: Any) -> Iterator[dict[str, int]]:
            for n in range(int(x["input"]), 0, -1):
                yield {"n": n}

        def encode_response(self, outputs: Iterator[dict[str, int]]) -> Iterator[dict[str, int]]:
            yield from outputs

    class BatchSizeAPI(ls.LitAPI):
        def predict(self, xs: list[Any]) -> list[dict[str, Any]]:
            return [{"output": x["input"] * 2, "batch": len(xs)} for x in xs]

    class HeldAPI(ls.LitAPI):
        """Records that a request started (and where), then waits for the test to open the gate."""

        def predict(self, x: Any) -> dict[str, Any]:
            replica = ray.get_runtime_context().get_actor_name() or ""
            ray.get(recorder.record.remote(x["id"], replica))
            ray.get(gate.wait.remote())
            return {"id": x["id"], "replica": replica}

    return [
        SquareAPI(api_path="/predict"),
        CountdownAPI(api_path="/stream", stream=True),
        BatchSizeAPI(api_path="/batch", max_batch_size=4, batch_timeout=0.5),
        HeldAPI(api_path="/hold"),
    ]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head without CPUs and two one-CPU nodes, all on 127.0.0.1; gone (every Ray process) afterwards."""
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # set by conftest.py, before Ray was imported
    node = {"node_ip_address": "127.0.0.1", "object_store_memory": OBJECT_STORE_BYTES}
    started = Cluster(initialize_head=True, head_node_args={**node, "num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            started.add_node(**node, num_cpus=1)
        started.connect()
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        yield started
    finally:
        serve.shutdown()
        ray.shutdown()
        started.shutdown()
        assert wait_until(lambda: not ray_processes(), timeout_s=30), f"Ray processes left: {ray_processes()}"


def ray_processes() -> list[str]:
    """This test process's descendants that Ray started (GCS, raylets, workers, actors), still running."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            name = process.name()
            if process.status() != psutil.STATUS_ZOMBIE and ("ray" in name or "gcs_server" in name):
                found.append(name)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture(scope="module")
def actors(cluster: Cluster) -> tuple[Any, Any]:
    return Gate.remote(), Recorder.remote()


@pytest.fixture(scope="module")
def contract(cluster: Cluster, actors: tuple[Any, Any]) -> Iterator[RayDeployment]:
    server = ls.LitServer(make_apis(*actors), accelerator="cpu", api_key=KEY, timeout=30)
    deployment = server.to_ray(num_replicas=2, ray_actor_options={"num_cpus": 1}, name="contract")
    yield deployment
    deployment.shutdown()


def held_server(gate: Any, recorder: Any, **options: Any) -> ls.LitServer:
    return ls.LitServer(make_apis(gate, recorder)[3], accelerator="cpu", **options)


# --- placement -------------------------------------------------------------------------------------------


def test_replicas_run_on_distinct_nodes_with_this_projects_engine(contract: RayDeployment) -> None:
    replicas = {info.actor_name: info for info in contract.replicas()}
    assert len(replicas) == 2
    assert len({info.node_id for info in replicas.values()}) == 2
    assert ray.get_runtime_context().get_node_id() not in {info.node_id for info in replicas.values()}
    assert all(info.devices == ("cpu",) for info in replicas.values())
    status = contract.status
    assert (status.status, status.running_replicas) == ("RUNNING", 2)
    assert contract.url.startswith("http://127.0.0.1:")


# --- the request contract through Ray's HTTP proxy ---------------------------------------------------------


def test_valid_request(contract: RayDeployment) -> None:
    answer = requests.post(contract.url + "/predict", json={"input": 4}, headers=AUTH, timeout=30)
    assert (answer.status_code, answer.json()) == (200, {"output": 16.0})
    client = contract.client(api_key=KEY)
    assert client.predict({"input": 2}) == {"output": 4.0}
    assert list(client.stream({"input": 2}, path="/stream")) == [{"n": 2}, {"n": 1}]


def test_invalid_body_is_422_with_pydantics_errors(contract: RayDeployment) -> None:
    answer = requests.post(contract.url + "/predict", json={"input": "four"}, headers=AUTH, timeout=30)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["input"]


def test_missing_or_wrong_api_key_is_401(contract: RayDeployment) -> None:
    for headers in ({}, {"X-API-Key": "nope"}):
        answer = requests.post(contract.url + "/predict", json={"input": 4}, headers=headers, timeout=30)
        assert answer.status_code == 401
        assert "X-API-Key" in answer.json()["detail"]


def test_streaming_is_ndjson(contract: RayDeployment) -> None:
    with requests.post(contract.url + "/stream", json={"input": 3}, headers=AUTH, stream=True, timeout=30) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        lines = [line for line in answer.iter_lines() if line]
    assert lines == [b'{"n":3}', b'{"n":2}', b'{"n":1}']


def test_requests_are_batched_inside_a_replica(contract: RayDeployment) -> None:
    def one(i: int) -> dict[str, Any]:
        answer = requests.post(contract.url + "/batch", json={"input": i}, headers=AUTH, timeout=30)
        assert answer.status_code == 200
        return dict(answer.json())

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    assert [a["output"] for a in answers] == [2 * i for i in range(8)]
    # Eight requests on two replicas: at least four reach one of them inside its 0.5 s batch window.
    assert max(a["batch"] for a in answers) >= 2


def test_predict_through_the_deployment_handle(contract: RayDeployment) -> None:
    assert contract.predict({"input": 3}) == {"output": 9.0}
    assert contract.predict({"input": 2}, path="/batch") == {"output": 4, "batch": 1}
    with pytest.raises(ls.RequestFailedError) as failed:
        contract.predict({"input": "three"})
    assert failed.value.status_code == 422


def test_timeout_is_504_not_rays_408(cluster: Cluster) -> None:
    api = make_apis(None, None)[0]
    server = ls.LitServer(api, accelerator="cpu", timeout=1, workers_per_device=2)  # one sleeps, one answers
    with deploy(server, name="deadline", route_prefix="/deadline",
                ray_actor_options={"num_cpus": 0}) as deployment:  # fmt: skip
        assert deployment.url.endswith("/deadline")
        answer = requests.post(deployment.url + "/predict", json={"input": 2, "sleep_s": 3}, timeout=30)
        assert (answer.status_code, answer.json()) == (504, {"detail": "Request timed out"})
        assert requests.post(deployment.url + "/predict", json={"input": 2}, timeout=30).json() == {"output": 4.0}
    assert deployment.status.status == "NOT_STARTED"


# --- saturation and hang-ups (one replica: what is queued where is known) ------------------------------------


def held(url: str, request_id: str) -> requests.Response:
    return requests.post(url + "/hold", json={"id": request_id}, timeout=60)


def test_saturated_replicas_answer_503_with_retry_after(cluster: Cluster) -> None:
    gate, recorder = Gate.remote(), Recorder.remote()
    server = held_server(gate, recorder, timeout=None)
    options = {"max_ongoing_requests": 1, "max_queued_requests": 1, "retry_after_s": 2}
    with deploy(server, name="saturated", route_prefix="/saturated", ray_actor_options={"num_cpus": 0}, **options) as d:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            running = pool.submit(held, d.url, "running")
            ray.get(recorder.wait_for.remote("running", 30))
            # Ray queues the next ones (one per proxy: each node's proxy counts its own) and refuses the rest.
            waiting = [pool.submit(held, d.url, f"extra-{i}") for i in range(6)]
            done, _ = concurrent.futures.wait(waiting, timeout=60, return_when=concurrent.futures.FIRST_COMPLETED)
            refused = done.pop().result()
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "2"
            gate.open.remote()
            assert running.result(60).json()["id"] == "running"
            answers = [future.result(60) for future in waiting]
    assert {a.status_code for a in answers} <= {200, 503}
    assert any(a.status_code == 200 for a in answers)


def test_a_client_that_hangs_up_while_queued_is_never_predicted(cluster: Cluster) -> None:
    gate, recorder = Gate.remote(), Recorder.remote()
    server = held_server(gate, recorder, timeout=None)
    with deploy(server, name="hangup", route_prefix="/hangup", ray_actor_options={"num_cpus": 0}) as deployment:
        port = int(deployment.url.split(":")[2].split("/")[0])

        def endpoint() -> Any:
            return deployment.handle.server_status.remote().result(timeout_s=30).endpoints[0]

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            running = pool.submit(held, deployment.url, "running")
            ray.get(recorder.wait_for.remote("running", 30))
            sock = raw_request(port, "/hangup/hold", b'{"id": "gone"}')
            assert wait_until(lambda: endpoint().queue_depth == 1)  # queued behind "running" in our engine
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            assert wait_until(lambda: endpoint().cancelled == 1)
            gate.open.remote()
            assert running.result(60).json()["id"] == "running"
        assert wait_until(lambda: endpoint().dropped_cancelled == 1)
        assert "gone" not in ray.get(recorder.seen.remote())


# --- a replica dies under load ---------------------------------------------------------------------------


def test_a_killed_replica_fails_only_its_requests_and_ray_restarts_it(
    contract: RayDeployment, actors: tuple[Any, Any]
) -> None:
    gate, recorder = actors
    url = contract.url
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = {f"load-{i}": pool.submit(held_authorized, url, f"load-{i}") for i in range(6)}
        seen = ray.get(recorder.wait_for_replicas.remote(2, 60))
        victim = sorted(set(seen.values()))[0]
        replica = ray.get_actor(victim, namespace="serve")
        ray.kill(replica)
        with pytest.raises(ray.exceptions.RayActorError):  # dead before the gate opens: its request cannot finish
            ray.get(replica.__ray_ready__.remote(), timeout=30)
        gate.open.remote()
        answers = {request_id: future.result(60) for request_id, future in futures.items()}
    survivors = {rid for rid, replica in ray.get(recorder.seen.remote()).items() if replica != victim}
    for request_id, answer in answers.items():
        if answer.status_code == 200:
            assert answer.json()["replica"] != victim
        else:
            assert answer.status_code >= 500 and request_id not in survivors
    assert any(a.status_code != 200 for a in answers.values())  # the victim's own request failed

    def replaced() -> bool:  # Ray started a new replica in the victim's place
        names = {info.actor_name for info in contract.replicas()}
        return len(names) == 2 and victim not in names

    assert wait_until(replaced, timeout_s=120)
    after = requests.post(url + "/predict", json={"input": 5}, headers=AUTH, timeout=30)
    assert after.json() == {"output": 25.0}


def held_authorized(url: str, request_id: str) -> requests.Response:
    return requests.post(url + "/hold", json={"id": request_id}, headers=AUTH, timeout=60)
