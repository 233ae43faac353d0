from __future__ import annotations

import pytest

from litserve.engine.device_runtime import DeviceRuntime
from litserve.engine.devices import resolve_devices

torch = pytest.importorskip("torch")
has_cuda = torch.cuda.is_available()


def test_cpu_devices() -> None:
    assert resolve_devices("cpu", "auto") == ["cpu"]
    assert resolve_devices("cpu", 2) == ["cpu", "cpu"]
    assert resolve_devices("cpu", [0, 1]) == ["cpu", "cpu"]


@pytest.mark.skipif(has_cuda, reason="checks the behaviour of a machine without CUDA")
def test_auto_is_cpu_without_a_gpu() -> None:
    assert resolve_devices("auto", "auto") == ["cpu"]
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_devices("cuda", 1)
    with pytest.raises(ValueError, match="sees no GPU"):
        resolve_devices("gpu", 1)


@pytest.mark.parametrize(
    ("accelerator", "devices", "error"),
    [
        ("tpu", 1, ValueError),
        ("cpu", 0, ValueError),
        ("cpu", True, TypeError),
        ("cpu", "two", TypeError),
        ("cpu", [0, 0], ValueError),
        ("cpu", [], ValueError),
    ],
)
def test_bad_arguments_are_explained(accelerator: str, devices: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        resolve_devices(accelerator, devices)  # type: ignore[arg-type]


def test_cpu_runtime_has_no_stream() -> None:
    runtime = DeviceRuntime("cpu")
    runtime.bind_thread()
    assert runtime.stream is None
    with runtime.running():
        pass
    runtime.release()


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda, reason="needs CUDA")
def test_cuda_devices_and_worker_stream() -> None:
    count = torch.cuda.device_count()
    assert resolve_devices("auto", "auto") == [f"cuda:{i}" for i in range(count)]
    assert resolve_devices("cuda", [0]) == ["cuda:0"]
    with pytest.raises(ValueError, match="do not exist"):
        resolve_devices("cuda", [count])
    runtime = DeviceRuntime("cuda:0")
    runtime.bind_thread()
    assert runtime.stream is not None
    with runtime.running():
        assert torch.cuda.current_stream() == runtime.stream
        (torch.ones(8, device="cuda:0") * 2).sum().item()
    runtime.release()
