"""Small LitAPIs shared by the tests; they work in worker threads and in worker processes alike."""

from __future__ import annotations

import time
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


def _read_when_let_through(gate: CrossEvent) -> dict[str, float]:
    # Runs where the payload is unpickled, in the worker process: its crossing lasts until the gate opens.
    assert gate.wait(60), "the test never let the request through"
    return {"read_at_s": time.monotonic()}


class HeldCrossing:
    """A `server.predict()` payload that reaches the worker process only once `gate` opens.

    Pickling it (the server handing it over) logs the time to `handed`; both times are monotonic,
    one clock in every process.
    """

    def __init__(self, gate: CrossEvent, handed: CrossLog) -> None:
        self.gate = gate
        self.handed = handed

    def __reduce__(self) -> tuple[Any, tuple[CrossEvent]]:
        self.handed.append(time.monotonic())
        return (_read_when_let_through, (self.gate,))


class BatchTimesAPI(LitAPI):
    """Batched; each answer says when its input was read, when predict() began, and the batch's size."""

    def predict(self, xs: Any) -> Any:
        began_s = time.monotonic()
        return [{**x, "predict_at_s": began_s, "batch_size": len(xs)} for x in xs]

    def batch(self, inputs: Any) -> Any:
        return list(inputs)

    def unbatch(self, output: Any) -> Any:
        return list(output)
