"""The MLP benchmark's model and request, shared by its servers and by benchmarks/mlp.py.

Two sizes: "heavy" 1024 -> 2048 -> 2048 -> 10 (the model dominates, so batching pays) and "light"
256 -> 1024 -> 1024 -> 10 (HTTP dominates). Weights come from `torch.manual_seed(0)`, so every
process builds the same model; the request vector comes from a seeded `random.Random`.
"""

from __future__ import annotations

import os
import random
import threading
from typing import Any

# Before torch is imported: one intra-op thread, also for threads torch did not create itself.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch

MODELS: dict[str, tuple[int, int, int, int]] = {
    "heavy": (1024, 2048, 2048, 10),
    "light": (256, 1024, 1024, 10),
}
INPUT_SEED = 1234
# torch's default RNG is one per process: workers calling setup() at once (workers_per_device > 1) would
# interleave manual_seed and the weight init, and build models with other weights than the reference.
_build_lock = threading.Lock()
DECIMALS = 6  # float32 carries ~7 significant digits; 6 decimals keeps the JSON body realistic and compact


def build_model(name: str) -> torch.nn.Module:
    """The named MLP, seeded, in eval mode, on the CPU with one torch thread."""
    torch.set_num_threads(1)
    d_in, h1, h2, d_out = MODELS[name]
    with _build_lock:
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(d_in, h1),
            torch.nn.ReLU(),
            torch.nn.Linear(h1, h2),
            torch.nn.ReLU(),
            torch.nn.Linear(h2, d_out),
        )
    return model.eval()


def input_vector(name: str, seed: int = INPUT_SEED) -> list[float]:
    """A fixed request vector for model `name` (uniform in [-1, 1], rounded to DECIMALS)."""
    rng = random.Random(seed)
    return [round(rng.uniform(-1.0, 1.0), DECIMALS) for _ in range(MODELS[name][0])]


def reference_output(name: str, vectors: list[list[float]]) -> list[list[float]]:
    """What the model answers for each vector, computed one at a time in this process."""
    model = build_model(name)
    with torch.inference_mode():
        return [model(torch.tensor(v).unsqueeze(0))[0].tolist() for v in vectors]


def run_batch(model: torch.nn.Module, x: Any) -> Any:
    """Run `model` on a (batch, d_in) tensor without autograd."""
    with torch.inference_mode():
        return model(x)
