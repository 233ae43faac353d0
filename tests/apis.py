"""Small LitAPIs shared by the tests; they work in worker threads and in worker processes alike."""

from __future__ import annotations

from typing import Any

from litserve import LitAPI
from tests.sync import CrossEvent, CrossLog, CrossSemaphore


class SquareAPI(LitAPI):
    """The README's hello world: {"input": x} -> {"output": x**2}."""

    def setup(self, device: str) -> None:
        self.model = lambda x: x**2

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Any:
        return self.model(x)

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


class GatedSetupAPI(SquareAPI):
    """setup() announces itself, then waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = CrossEvent()
        self.gate = CrossEvent()

    def setup(self, device: str) -> None:
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the setup gate"
        super().setup(device)


class FailingSetupAPI(SquareAPI):
    def setup(self, device: str) -> None:
        raise RuntimeError("model weights not found")


class GatedPredictAPI(SquareAPI):
    """predict() logs its input and announces the call, then waits until the test opens the gate."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entered = CrossSemaphore()
        self.gate = CrossEvent()
        self.calls = CrossLog()

    def predict(self, x: Any) -> Any:
        self.calls.append(x)
        self.entered.release()
        assert self.gate.wait(10), "the test never opened the predict gate"
        return super().predict(x)
