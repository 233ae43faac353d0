"""The parts of litserve.ray that need no Ray cluster: the shipped recipe, device choice, the handle's wait."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import types

import cloudpickle
import pytest
from pydantic import BaseModel

import litserve as ls
import litserve.ray
from litserve.ray.deploy import _as_server, _check_timeouts, _url_host
from litserve.ray.handle import RayAppStatus, _wait
from litserve.ray.replica import ServerRecipe, replica_devices


class Point(BaseModel):
    x: float


def test_a_replica_serves_on_the_gpus_ray_gave_it_else_the_cpu() -> None:
    assert replica_devices([], ["cpu", "cpu"]) == ["cpu", "cpu"]
    assert replica_devices([], ["cuda:0", "cuda:1"]) == ["cpu"]  # no GPU asked of Ray: the CPU
    assert replica_devices([], []) == ["cpu"]


def test_the_recipe_rebuilds_the_server_with_its_options_and_a_model_annotated_by_name() -> None:
    def make() -> ls.LitAPI:
        class PointAPI(ls.LitAPI):  # defined in a function: cloudpickle ships it by value, as Ray does
            def decode_request(self, request: Point) -> float:  # a string annotation here
                return request.x

            def predict(self, x: float) -> float:
                return 2 * x

            def encode_response(self, output: float) -> dict[str, float]:
                return {"output": output}

        return PointAPI()

    original = ls.LitServer(make(), accelerator="cpu", timeout=7, workers_per_device=2)
    recipe = cloudpickle.loads(cloudpickle.dumps(ServerRecipe.of(original)))
    assert recipe.body_models == (Point,)
    assert "_life" not in dict(recipe.attributes) and "_settings" in dict(recipe.attributes)
    server = recipe.build(["cpu"])
    assert server._settings.timeout_s == 7 and server._settings.workers_per_device == 2
    assert server.state is ls.ServerState.CREATED
    with server:
        assert server.predict({"x": 2}) == {"output": 4.0}
        with pytest.raises(ls.RequestFailedError) as refused:
            server.predict({"x": "two"})
        assert refused.value.status_code == 422
    assert original.state is ls.ServerState.CREATED  # the recipe never touches the server it came from


def test_the_status_counts_running_replicas() -> None:
    status = RayAppStatus("app", "RUNNING", types.MappingProxyType({"RUNNING": 2, "STARTING": 1}), "")
    assert status.running_replicas == 2


def test_waits_run_off_a_running_event_loop() -> None:
    def where() -> str:  # Ray refuses blocking waits on a thread with a running loop (a Jupyter cell's)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return "no loop"
        return "on a loop"

    async def inside_a_loop() -> str:
        return str(_wait(where))

    assert _wait(where) == "no loop"
    assert asyncio.run(inside_a_loop()) == "no loop"


def test_importing_litserve_ray_does_not_import_ray() -> None:
    code = "import litserve, litserve.ray, sys; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_the_ray_door_lists_its_names() -> None:
    public = {name for name in dir(litserve.ray) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(litserve.ray, name)).__name__ == "module"}
    assert sorted(litserve.ray.__all__) == litserve.ray.__all__
    assert set(litserve.ray.__all__) == public - modules


def test_deploy_takes_a_server_or_litapis_and_nothing_else() -> None:
    api = ls.test_examples.SimpleLitAPI()
    assert _as_server(api)._settings.devices == ("cpu",)  # the replica picks its devices, not the driver
    assert len(_as_server([api, ls.test_examples.SimpleLitAPI(api_path="/other")])._apis) == 2
    server = ls.LitServer(api, accelerator="cpu")
    assert _as_server(server) is server
    with pytest.raises(TypeError, match="takes a LitServer, a LitAPI or a list of LitAPIs; got int"):
        _as_server(42)  # type: ignore[arg-type]


def test_a_ray_timeout_at_or_below_ours_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    for ours, rays in ((30.0, None), (10.0, 30.0)):
        _check_timeouts(ours, rays)
    assert not caplog.records
    for ours, rays in ((30.0, 30.0), (None, 10.0)):
        _check_timeouts(ours, rays)
    assert len([r for r in caplog.records if "answers 408 before litserve's 504" in r.getMessage()]) == 2


def test_the_url_names_a_host_a_client_can_reach() -> None:
    assert _url_host("0.0.0.0") == "127.0.0.1"
    assert _url_host("::1") == "[::1]"
    assert _url_host("10.1.2.3") == "10.1.2.3"


def test_a_replica_given_a_gpu_serves_on_cuda_0() -> None:
    import torch

    if torch.cuda.is_available():
        assert replica_devices([3], ["cpu"]) == ["cuda:0"]  # Ray's CUDA_VISIBLE_DEVICES=3: torch's cuda:0
    else:
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            replica_devices([3], ["cpu"])
