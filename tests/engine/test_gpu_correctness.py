"""Correct on GPUs by construction, checked on a GPU: skipped without CUDA.

setup() is done before the first request; outputs copied without blocking have landed before they are
encoded; every place a hook runs (the async worker's loop and its `to_thread` threads, `health()` on the
server's loop) uses the worker's device and stream; `server.predict` with the caller's CUDA tensors;
a worker on a device other than 0; a worker process sees only its own GPU; memory is given back by
`stop()` and by a failed setup(); a device-side assert restarts its worker process.

A device-side assert is only ever raised in a worker process here: in a worker thread it would break
the CUDA context of the test process itself, and every later test with it.
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any

import pytest
import requests

from litserve import LitAPI, LitServer, WorkerSetupError
from litserve.status import WorkerState
from tests.helpers import post, wait_until

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.timeout(300),
]
two_gpus = pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.device_count() < 2, reason="needs two GPUs")

BIG = 1 << 26  # 64 Mi elements: long enough on any GPU that a missing wait shows


def _where() -> dict[str, Any]:
    """The device and stream current on the calling thread."""
    stream = torch.cuda.current_stream()
    return {
        "device": torch.cuda.current_device(),
        "stream": int(stream.cuda_stream),
        "default": stream == torch.cuda.default_stream(),
    }


class SetupOnSideStreamAPI(LitAPI):
    """setup() fills a large tensor on a stream of its own and returns without waiting for it."""

    def setup(self, device: str) -> None:
        side = torch.cuda.Stream(device)
        with torch.cuda.stream(side):
            self.weights = torch.zeros(BIG, device=device)
            for _ in range(20):
                self.weights.add_(0.25)

    def predict(self, x: Any) -> Any:
        return bool((self.weights == 5.0).all())


def test_setup_work_is_done_before_the_first_request() -> None:
    with LitServer(SetupOnSideStreamAPI(), accelerator="cuda", devices=1).start(port=0) as server:
        assert post(server, {}).json() is True


class NonBlockingCopyAPI(LitAPI):
    """predict copies its output to the host with non_blocking=True; encode_response reads the host copy."""

    def setup(self, device: str) -> None:
        self.device = device

    def predict(self, x: Any) -> Any:
        values = torch.arange(BIG, device=self.device, dtype=torch.int64)
        for _ in range(10):
            values = values * 1  # queue work ahead of the copy
        return (values * 2).to("cpu", non_blocking=True)

    def encode_response(self, output: Any) -> Any:
        return {"sum": int(output.sum())}


def test_outputs_copied_without_blocking_have_landed_before_they_are_encoded() -> None:
    with LitServer(NonBlockingCopyAPI(), accelerator="cuda", devices=1).start(port=0) as server:
        for _ in range(3):
            assert post(server, {}).json() == {"sum": BIG * (BIG - 1)}


class WhereAPI(LitAPI):
    """Answers where setup(), predict, a `to_thread` call and health() ran."""

    def setup(self, device: str) -> None:
        self.setup_device = device
        self.at_setup = _where()

    def predict(self, x: Any) -> Any:
        return {"setup_device": self.setup_device, "setup": self.at_setup, "predict": _where()}

    def health(self) -> bool:
        return _where() == self.at_setup


class AsyncWhereAPI(WhereAPI):
    def __init__(self) -> None:
        super().__init__(enable_async=True)

    async def predict(self, x: Any) -> Any:
        answer = WhereAPI.predict(self, x)
        answer["to_thread"] = await asyncio.to_thread(_where)
        return answer

    async def health(self) -> bool:  # type: ignore[override]
        await asyncio.sleep(0)
        return _where() == self.at_setup


def _check_where(server: LitServer, index: int) -> dict[str, Any]:
    answer: dict[str, Any] = post(server, {}).json()
    assert answer["setup_device"] == f"cuda:{index}"
    assert answer["setup"]["device"] == index and not answer["setup"]["default"]
    assert answer["predict"] == answer["setup"]  # setup() ran on the worker's own stream too
    assert requests.get(server.url + "/health", timeout=10).text == "ok"
    return answer


def test_a_sync_worker_runs_every_hook_on_its_device_and_stream() -> None:
    with LitServer(WhereAPI(), accelerator="cuda", devices=1).start(port=0) as server:
        _check_where(server, 0)


def test_an_async_worker_runs_every_hook_and_to_thread_on_its_device_and_stream() -> None:
    with LitServer(AsyncWhereAPI(), accelerator="cuda", devices=1).start(port=0) as server:
        answer = _check_where(server, 0)
        assert answer["to_thread"] == answer["setup"]


@two_gpus
def test_a_worker_on_the_second_gpu_runs_every_hook_there() -> None:
    for api in (WhereAPI(), AsyncWhereAPI()):
        with LitServer(api, accelerator="cuda", devices=[1]).start(port=0) as server:
            _check_where(server, 1)
            assert [w.device for w in server.status.workers] == ["cuda:1"]


class SumAPI(LitAPI):
    def predict(self, x: Any) -> Any:
        return int((x["x"] == 7).sum())


def test_server_predict_takes_the_callers_cuda_tensors() -> None:
    with LitServer(SumAPI(), accelerator="cuda", devices=1).start(port=0) as server:
        values = torch.zeros(BIG, device="cuda:0")
        for _ in range(28):
            values.add_(0.25)  # queued on this thread's default stream, not waited for
        assert server.predict({"x": values}) == BIG
        side = torch.cuda.Stream("cuda:0")
        with torch.cuda.stream(side):  # and made on another stream of the caller's
            others = torch.full((BIG,), 3.0, device="cuda:0")
            others.add_(4.0)
            assert server.predict({"x": others}) == BIG


class VisibleAPI(LitAPI):
    def setup(self, device: str) -> None:
        self.setup_device = device

    def predict(self, x: Any) -> Any:
        return {
            "setup_device": self.setup_device,
            "count": torch.cuda.device_count(),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "where": _where(),
        }


def test_a_worker_process_sees_only_its_own_gpu() -> None:
    expected = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    with LitServer(VisibleAPI(), accelerator="cuda", devices=1, worker_mode="process").start(port=0) as server:
        answer = post(server, {}).json()
        assert answer["setup_device"] == "cuda:0" and answer["count"] == 1 and answer["visible"] == expected
        assert answer["where"]["device"] == 0 and not answer["where"]["default"]
        assert [w.device for w in server.status.workers] == ["cuda:0"]


@two_gpus
def test_a_worker_process_for_the_second_gpu_sees_it_as_its_only_one() -> None:
    with LitServer(VisibleAPI(), accelerator="cuda", devices=[1], worker_mode="process").start(port=0) as server:
        answer = post(server, {}).json()
        assert answer["setup_device"] == "cuda:0" and answer["count"] == 1
        assert [w.device for w in server.status.workers] == ["cuda:1"]


class LargeModelAPI(LitAPI):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail

    def setup(self, device: str) -> None:
        self.weights = torch.ones(BIG, device=device)
        if self.fail:
            raise RuntimeError("out of memory while building the rest of the model")

    def predict(self, x: Any) -> Any:
        return float(self.weights[:4].sum())


def _allocated() -> int:
    gc.collect()
    torch.cuda.synchronize(0)
    return int(torch.cuda.memory_allocated(0))


def test_stop_gives_the_models_memory_back() -> None:
    baseline = _allocated()
    server = LitServer(LargeModelAPI(), accelerator="cuda", devices=1, workers_per_device=2).start(port=0)
    try:
        assert post(server, {}).json() == 4.0
        assert _allocated() >= baseline + 2 * BIG * 4
    finally:
        server.stop()
    assert _allocated() == baseline


def test_a_failed_setup_gives_its_memory_back_and_keeps_its_error() -> None:
    baseline = _allocated()
    with pytest.raises(WorkerSetupError, match="out of memory") as caught:
        LitServer(LargeModelAPI(fail=True), accelerator="cuda", devices=1).start(port=0)
    assert _allocated() == baseline  # while the error (and its traceback) is still held
    assert caught.value.__cause__ is not None


class DeviceAssertAPI(LitAPI):
    def setup(self, device: str) -> None:
        self.device = device

    def predict(self, x: Any) -> Any:
        if x["input"] == "assert":
            index = torch.tensor([10], device=self.device)
            return float(torch.zeros(2, device=self.device)[index].sum())  # out of bounds: device-side assert
        return x["input"]


def test_a_device_side_assert_restarts_the_worker_process() -> None:
    with LitServer(DeviceAssertAPI(), accelerator="cuda", devices=1, worker_mode="process", timeout=60).start(
        port=0
    ) as server:
        assert post(server, {"input": "assert"}).status_code == 500
        assert wait_until(lambda: server.status.workers[0].restarts == 1, 60)
        assert wait_until(lambda: server.status.workers[0].state is WorkerState.IDLE, 60)
        assert requests.get(server.url + "/health", timeout=10).text == "ok"
        assert post(server, {"input": 3}).json() == 3
