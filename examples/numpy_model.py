"""A NumPy model: a fixed linear layer y = W @ x + b (4 inputs -> 3 outputs) with seeded weights.

    python examples/numpy_model.py
    curl -X POST http://127.0.0.1:8000/predict -H "Content-Type: application/json" \
         -d '{"input": [1.0, 2.0, 3.0, 4.0]}'
    # {"output":[...three floats...]}

An input that is not a list of 4 numbers is answered with 400 and a message, via ls.HTTPException.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

import litserve as ls

N_FEATURES = 4
N_OUTPUTS = 3
SEED = 0


def make_weights(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """The layer's weights W (3x4) and bias b (3,), the same for every run with the same seed."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N_OUTPUTS, N_FEATURES)), rng.normal(size=N_OUTPUTS)


class NumpyLitAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.weight, self.bias = make_weights()

    def decode_request(self, request: Any) -> np.ndarray:
        values = request.get("input") if isinstance(request, dict) else None
        if not isinstance(values, list) or len(values) != N_FEATURES:
            raise ls.HTTPException(400, f'"input" must be a list of {N_FEATURES} numbers')
        try:
            return np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ls.HTTPException(400, f'"input" must be a list of {N_FEATURES} numbers') from None

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.weight @ x + self.bias

    def encode_response(self, output: np.ndarray) -> dict[str, list[float]]:
        return {"output": output.tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    args = parser.parse_args()

    server = ls.LitServer(NumpyLitAPI(), accelerator="cpu")
    server.run(host=args.host, port=args.port)
