"""A PyTorch model: the original LitServe README's linear model, y = 2x + 1, served on CPU.

    python examples/pytorch_linear.py
    curl -X POST http://127.0.0.1:8000/predict -H "Content-Type: application/json" -d '{"input": 3.0}'
    # {"output":7.0}

torch is imported inside the hooks, so importing this module stays cheap; the worker pays for it once
in setup(). On a GPU machine pass accelerator="auto" to LitServer and setup() gets "cuda:0".
"""

from __future__ import annotations

import argparse
from typing import Any

import litserve as ls


def build_model() -> Any:
    """A torch.nn.Linear(1, 1) with fixed weights: f(x) = 2.0 * x + 1.0."""
    import torch

    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.bias.fill_(1.0)
    return model.eval()


class PyTorchLitAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        # Load the model once per worker, on the device litserve gives it ("cpu", "cuda:0", "mps").
        self.device = device
        self.model = build_model().to(device)

    def decode_request(self, request: Any) -> Any:
        # {"input": 3.0} -> a (1, 1) float tensor on the model's device.
        import torch

        return torch.tensor([[float(request["input"])]], dtype=torch.float32, device=self.device)

    def predict(self, x: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.model(x)

    def encode_response(self, output: Any) -> dict[str, float]:
        return {"output": float(output.item())}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    args = parser.parse_args()

    server = ls.LitServer(PyTorchLitAPI(), accelerator="cpu")
    server.run(host=args.host, port=args.port)
