"""What a worker process sees of the GPUs: its environment and the device name its setup() gets."""

from __future__ import annotations

import os
from typing import Any

import pytest

from litserve import LitAPI, LitServer
from litserve.process.devices import child_device, child_environment
from tests.helpers import post

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("device", "environ", "visible"),
    [
        ("cuda:0", {}, "0"),
        ("cuda:3", {"PATH": "/bin"}, "3"),
        ("cuda:1", {"CUDA_VISIBLE_DEVICES": "4,6"}, "6"),
        ("cuda:0", {"CUDA_VISIBLE_DEVICES": "GPU-8d5e, GPU-11aa"}, "GPU-8d5e"),
        ("cuda:1", {"CUDA_VISIBLE_DEVICES": "MIG-a,MIG-b"}, "MIG-b"),
    ],
)
def test_a_gpu_worker_process_sees_only_its_own_gpu(device: str, environ: dict[str, str], visible: str) -> None:
    env = child_environment(device, environ)
    assert env["CUDA_VISIBLE_DEVICES"] == visible
    assert {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"} == {
        k: v for k, v in environ.items() if k != "CUDA_VISIBLE_DEVICES"
    }
    assert child_device(device) == "cuda:0"


def test_a_device_missing_from_the_servers_visible_list_is_refused() -> None:
    with pytest.raises(ValueError, match="not among"):
        child_environment("cuda:2", {"CUDA_VISIBLE_DEVICES": "0,1"})


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_other_worker_processes_keep_the_servers_environment(device: str) -> None:
    environ = {"CUDA_VISIBLE_DEVICES": "1", "HOME": "/root"}
    assert child_environment(device, environ) == environ
    assert child_device(device) == device


class EnvironmentAPI(LitAPI):
    def setup(self, device: str) -> None:
        self.setup_device = device

    def predict(self, x: Any) -> Any:
        return {"device": self.setup_device, "visible": os.environ.get("CUDA_VISIBLE_DEVICES", "unset")}


def test_a_cpu_worker_process_gets_the_servers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # what the server's own environment says, passed on as is
    with LitServer(EnvironmentAPI(), accelerator="cpu", worker_mode="process").start(port=0) as server:
        assert post(server, {}).json() == {"device": "cpu", "visible": ""}
