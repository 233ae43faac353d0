"""The plain examples: square a number, alone, batched, with torch, or as a stream of lines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from litserve.api import LitAPI

__all__ = ["SimpleBatchedAPI", "SimpleLitAPI", "SimpleStreamAPI", "SimpleTorchAPI"]


def _square(x: Any) -> Any:
    return x**2


def _label(step: int, text: Any) -> str:
    return f"{step}: {text}"


class SimpleLitAPI(LitAPI):
    """`{"input": 4.0}` -> `{"output": 16.0}`.

    Example:
        >>> server = LitServer(SimpleLitAPI()).start(port=8000)
        >>> requests.post("http://127.0.0.1:8000/predict", json={"input": 4.0}).json()
        {'output': 16.0}
    """

    def setup(self, device: str) -> None:
        self.model = _square

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Any:
        return self.model(x)

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


class SimpleBatchedAPI(LitAPI):
    """SimpleLitAPI for batches: each input becomes a numpy array, so the default `batch` stacks them.

    Serve it with `SimpleBatchedAPI(max_batch_size=4, batch_timeout=0.05)`; each request still gets
    its own `{"output": x**2}`.
    """

    def setup(self, device: str) -> None:
        self.model = _square

    def decode_request(self, request: Any) -> Any:
        import numpy as np

        return np.asarray(request["input"])

    def predict(self, x: Any) -> Any:
        return self.model(x)

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


class SimpleTorchAPI(LitAPI):
    """A one-weight torch model, `2 * x + 1`, on the worker's device: `{"input": 4.0}` -> `{"output": 9.0}`."""

    def setup(self, device: str) -> None:
        import torch

        model = torch.nn.Linear(1, 1)
        with torch.no_grad():
            model.weight.fill_(2.0)
            model.bias.fill_(1.0)
        self.model = model.to(device)

    def decode_request(self, request: Any) -> Any:
        import torch

        return torch.tensor([request["input"]], dtype=torch.float32, device=self.device)

    def predict(self, x: Any) -> Any:
        import torch

        with torch.inference_mode():  # serving needs no gradients
            return self.model(x[None, :])  # the model takes a batch: one row of one feature

    def encode_response(self, output: Any) -> Any:
        return {"output": float(output)}


class SimpleStreamAPI(LitAPI):
    """Streams three chunks per request: `{"input": "Hi"}` -> `{"output": "0: Hi"}`, `"1: Hi"`, `"2: Hi"`.

    Serve it with `SimpleStreamAPI(stream=True)`; the answer is one JSON object per line.
    """

    def setup(self, device: str) -> None:
        self.model = _label

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Iterator[Any]:
        for step in range(3):
            yield self.model(step, x)

    def encode_response(self, output_stream: Iterator[Any]) -> Iterator[Any]:
        for output in output_stream:
            yield {"output": output}
