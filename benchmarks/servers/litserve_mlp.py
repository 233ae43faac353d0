"""Benchmark server: a LitServer serving the MLP benchmark's model.

Usage: python litserve_mlp.py PORT MODEL MAX_BATCH_SIZE BATCH_TIMEOUT_S [WORKERS_PER_DEVICE [MODE [DEVICES]]]

MODE is litserve's `worker_mode`, "thread" (default) or "process"; DEVICES the number of CPU devices
(default 1). In process mode there is one worker process per device, each with WORKERS_PER_DEVICE
threads; HTTP and the queues stay in this process.

decode_request turns `{"input": [...]}` into a tensor, predict runs the model on the stacked batch
(default `batch`/`unbatch`), encode_response answers `{"output": [10 floats]}`. predict also counts
the size of every batch it sees and the time it spends in the model (`mlp_stats`, per process). At
exit this process prints its own counters to stderr as `batch sizes: {"1": n1, ...}` and
`predict time: {...}` (wall and worker-thread CPU seconds, and the span from the first predict to the
last). In process mode predict runs in the worker processes, so those two lines are empty and each
worker process prints `child stats: {"pid": ..., "batch_sizes": {...}, ...}` lines instead (see
mlp_stats.py); benchmarks/mlp.py reads all of them back from the log and adds them up.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import mlp_model
import mlp_stats
import torch

import litserve
from litserve import LitAPI, LitServer


class MLPAPI(LitAPI):
    def __init__(self, model_name: str, max_batch_size: int, batch_timeout: float, child_stats: bool = False) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.model_name = model_name
        # Process mode: setup() and predict run in a worker process, which reports its counters itself.
        self.child_stats = child_stats

    def setup(self, device: str) -> None:
        torch.set_num_threads(1)  # per process: in process mode this runs in each worker process too
        self.model = mlp_model.build_model(self.model_name).to(device)
        if self.child_stats:
            mlp_stats.start_reporter({"torch_threads": torch.get_num_threads()})

    def decode_request(self, request: Any) -> Any:
        return torch.tensor(request["input"])

    def predict(self, x: Any) -> Any:
        batched = x.dim() == 2  # max_batch_size=1: litserve skips batch/unbatch and passes one input
        start_s, start_cpu_s = time.monotonic(), time.thread_time()
        output = mlp_model.run_batch(self.model, x if batched else x.unsqueeze(0))
        end_s, cpu_s = time.monotonic(), time.thread_time() - start_cpu_s
        mlp_stats.record(x.shape[0] if batched else 1, start_s, end_s, cpu_s)
        return output if batched else output[0]

    def encode_response(self, output: Any) -> Any:
        return {"output": output.tolist()}


def main(argv: list[str]) -> None:
    print(f"litserve from {litserve.__file__}", file=sys.stderr, flush=True)
    port, model_name = int(argv[1]), argv[2]
    max_batch_size, batch_timeout = int(argv[3]), float(argv[4])
    workers = int(argv[5]) if len(argv) > 5 else 1
    mode = argv[6] if len(argv) > 6 else "thread"
    devices = int(argv[7]) if len(argv) > 7 else 1
    torch.set_num_threads(1)
    # benchmarks/process_gap.py reads no counters: it turns the reporting thread off (mlp_stats.CHILD_STATS_ENV=0), so
    # the worker process runs nothing that thread mode does not.
    child_stats = mode == "process" and os.environ.get(mlp_stats.CHILD_STATS_ENV, "1") != "0"
    api = MLPAPI(model_name, max_batch_size, batch_timeout, child_stats=child_stats)
    try:
        LitServer(
            api, accelerator="cpu", devices=devices, timeout=60, workers_per_device=workers, worker_mode=mode
        ).run(host="127.0.0.1", port=port, generate_client_file=False)
    finally:
        print(f"batch sizes: {json.dumps(mlp_stats.batch_sizes())}", file=sys.stderr, flush=True)
        print(f"predict time: {json.dumps(mlp_stats.predict_time())}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv)
