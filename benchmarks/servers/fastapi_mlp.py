"""Benchmark server: the baseline, a plain FastAPI app on uvicorn running the MLP inline.

Usage: python fastapi_mlp.py PORT MODEL

One uvicorn worker, warning-level logs, no access log. `POST /predict` is a sync `def`, so FastAPI
runs it in its threadpool; the body is validated by a pydantic model, as a FastAPI user would write
it. `GET /health` answers for the readiness poll. Like litserve_mlp.py it adds up the worker-thread
CPU seconds spent in the model and prints them at exit as `predict time: {...}`.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import mlp_model
import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

PREDICT_CPU_S = [0.0]
CALLS = [0]
_lock = threading.Lock()


class PredictRequest(BaseModel):
    input: list[float]


def create_app(model_name: str) -> FastAPI:
    model = mlp_model.build_model(model_name)
    app = FastAPI()

    @app.post("/predict")
    def predict(body: PredictRequest) -> dict[str, list[float]]:
        x = torch.tensor(body.input).unsqueeze(0)
        start_cpu_s = time.thread_time()
        output = mlp_model.run_batch(model, x)
        cpu_s = time.thread_time() - start_cpu_s
        with _lock:
            PREDICT_CPU_S[0] += cpu_s
            CALLS[0] += 1
        return {"output": output[0].tolist()}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str]) -> None:
    port, model_name = int(argv[1]), argv[2]
    torch.set_num_threads(1)
    print(f"fastapi on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    try:
        uvicorn.run(
            create_app(model_name), host="127.0.0.1", port=port, log_level="warning", access_log=False, workers=1
        )
    finally:
        stats = {"predict_cpu_s": round(PREDICT_CPU_S[0], 4), "calls": CALLS[0]}
        print(f"predict time: {json.dumps(stats)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv)
