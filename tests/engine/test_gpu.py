"""CUDA paths: each worker's hooks run on its own stream of its own device. Skipped without CUDA."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import pytest

from litserve import LitAPI, LitServer
from tests.helpers import Shared, post

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


class StreamReportingAPI(LitAPI):
    """Answers with the device and stream its predict ran on; two predicts meet at a barrier."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier = Shared(threading.Barrier(2))

    def setup(self, device: str) -> None:
        self.weight = torch.full((4,), 2.0, device=device)

    def predict(self, x: Any) -> Any:
        self.barrier.value.wait(10)
        stream = torch.cuda.current_stream()
        value = float((self.weight * float(x["input"])).sum().item())
        return {"value": value, "device": str(self.weight.device), "stream": int(stream.cuda_stream)}


def test_each_worker_runs_on_its_own_cuda_stream() -> None:
    server = LitServer(StreamReportingAPI(), accelerator="cuda", devices=1, workers_per_device=2).start(port=0)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda v: post(server, {"input": v}).json(), [1, 2]))
        assert sorted(a["value"] for a in answers) == [8.0, 16.0]
        assert {a["device"] for a in answers} == {"cuda:0"}
        streams = {a["stream"] for a in answers}
        assert len(streams) == 2
        assert int(torch.cuda.default_stream(0).cuda_stream) not in streams
        assert [w.device for w in server.status.workers] == ["cuda:0", "cuda:0"]
    finally:
        server.stop()
