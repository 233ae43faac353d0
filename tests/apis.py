"""Small LitAPIs shared by the tests."""

from __future__ import annotations

import threading
from typing import Any

from litserve import LitAPI
from tests.helpers import Shared


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
        self.entered = Shared(threading.Event())
        self.gate = Shared(threading.Event())

    def setup(self, device: str) -> None:
        self.entered.value.set()
        assert self.gate.value.wait(10), "the test never opened the setup gate"
        super().setup(device)


class FailingSetupAPI(SquareAPI):
    def setup(self, device: str) -> None:
        raise RuntimeError("model weights not found")


class GatedPredictAPI(SquareAPI):
    """predict() announces each call, then waits until the test opens the gate."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entered = Shared(threading.Semaphore(0))
        self.gate = Shared(threading.Event())
        self.calls = Shared([])

    def predict(self, x: Any) -> Any:
        self.calls.value.append(x)
        self.entered.value.release()
        assert self.gate.value.wait(10), "the test never opened the predict gate"
        return super().predict(x)
