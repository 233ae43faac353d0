"""Benchmark server: a LitServer serving the MLP benchmark's model.

Usage: python litserve_mlp.py PORT MODEL MAX_BATCH_SIZE BATCH_TIMEOUT_S [WORKERS_PER_DEVICE]

decode_request turns `{"input": [...]}` into a tensor, predict runs the model on the stacked batch
(default `batch`/`unbatch`), encode_response answers `{"output": [10 floats]}`. predict also counts
the size of every batch it sees; at exit the histogram is printed to stderr as one line,
`batch sizes: {"1": n1, "2": n2, ...}`, and the time spent in predict as `predict time: {...}`
(wall and worker-thread CPU seconds, and the span from the first predict to the last);
benchmarks/mlp.py reads both back from the log.
"""

from __future__ import annotations

import collections
import json
import sys
import threading
import time
from typing import Any

import mlp_model
import torch

import litserve
from litserve import LitAPI, LitServer

BATCH_SIZES: collections.Counter[int] = collections.Counter()
PREDICT_S = [0.0]  # total wall-clock seconds inside the model
PREDICT_CPU_S = [0.0]  # total CPU seconds of the worker thread inside the model (time.thread_time)
FIRST_LAST_S = [0.0, 0.0]  # monotonic time of the first predict start and the last predict end
_lock = threading.Lock()  # workers_per_device > 1 means several threads count


class MLPAPI(LitAPI):
    def __init__(self, model_name: str, max_batch_size: int, batch_timeout: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.model_name = model_name

    def setup(self, device: str) -> None:
        torch.set_num_threads(1)
        self.model = mlp_model.build_model(self.model_name).to(device)

    def decode_request(self, request: Any) -> Any:
        return torch.tensor(request["input"])

    def predict(self, x: Any) -> Any:
        batched = x.dim() == 2  # max_batch_size=1: litserve skips batch/unbatch and passes one input
        start_s, start_cpu_s = time.monotonic(), time.thread_time()
        output = mlp_model.run_batch(self.model, x if batched else x.unsqueeze(0))
        end_s, cpu_s = time.monotonic(), time.thread_time() - start_cpu_s
        with _lock:
            BATCH_SIZES[x.shape[0] if batched else 1] += 1
            PREDICT_S[0] += end_s - start_s
            PREDICT_CPU_S[0] += cpu_s
            if not FIRST_LAST_S[0]:
                FIRST_LAST_S[0] = start_s
            FIRST_LAST_S[1] = end_s
        return output if batched else output[0]

    def encode_response(self, output: Any) -> Any:
        return {"output": output.tolist()}


def main(argv: list[str]) -> None:
    print(f"litserve from {litserve.__file__}", file=sys.stderr, flush=True)
    port, model_name = int(argv[1]), argv[2]
    max_batch_size, batch_timeout = int(argv[3]), float(argv[4])
    workers = int(argv[5]) if len(argv) > 5 else 1
    torch.set_num_threads(1)
    api = MLPAPI(model_name, max_batch_size, batch_timeout)
    try:
        LitServer(api, accelerator="cpu", timeout=60, workers_per_device=workers).run(
            host="127.0.0.1", port=port, generate_client_file=False
        )
    finally:
        histogram = {str(size): count for size, count in sorted(BATCH_SIZES.items())}
        print(f"batch sizes: {json.dumps(histogram)}", file=sys.stderr, flush=True)
        span_s = FIRST_LAST_S[1] - FIRST_LAST_S[0]
        stats = {
            "predict_s": round(PREDICT_S[0], 4),
            "predict_cpu_s": round(PREDICT_CPU_S[0], 4),
            "span_s": round(span_s, 4),
        }
        print(f"predict time: {json.dumps(stats)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv)
