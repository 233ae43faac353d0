"""A benchmark server for `side_by_side.py`, for whichever litserve is importable: ours or LitServe 0.2.19.

Usage: python side_server.py WORKLOAD PORT CONFIG_JSON

WORKLOAD: `json` (squares `input`, answers `{"output": ...}`), `mlp` (the MLP benchmark's light model on a
tensor of `input`, `mlp_model.py`) or `stream` (yields `{"token": i}` 32 times, NDJSON). CONFIG_JSON holds
`api` (LitAPI keyword arguments: max_batch_size, batch_timeout) and `server` (LitServer keyword arguments:
workers_per_device, fast_queue, worker_mode, ...). Both projects take the same LitAPI and LitServer
arguments for these, so the one script serves every row. `decode_request` takes an unannotated request:
LitServe reads that annotation to build its FastAPI endpoint (a string annotation would make it a query parameter).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import litserve
from litserve import LitAPI, LitServer

TOKENS = 32


class SquareAPI(LitAPI):
    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request):  # type: ignore[no-untyped-def]  # unannotated: LitServe reads the annotation
        return request["input"]

    def predict(self, x: Any) -> Any:
        return x * x

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


class MLPAPI(LitAPI):
    def setup(self, device: str) -> None:
        import mlp_model
        import torch

        torch.set_num_threads(1)
        self.torch = torch
        self.run_batch = mlp_model.run_batch
        self.model = mlp_model.build_model("light")

    def decode_request(self, request):  # type: ignore[no-untyped-def]  # unannotated: LitServe reads the annotation
        return self.torch.tensor(request["input"])

    def predict(self, x: Any) -> Any:
        if x.dim() == 2:  # a batch, stacked by the default `batch`
            return self.run_batch(self.model, x)
        return self.run_batch(self.model, x.unsqueeze(0))[0]

    def encode_response(self, output: Any) -> Any:
        return {"output": output.tolist()}


class TokensAPI(LitAPI):
    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request):  # type: ignore[no-untyped-def]  # unannotated: LitServe reads the annotation
        return request["input"]

    def predict(self, x: Any) -> Any:
        for i in range(TOKENS):
            yield {"token": i}

    def encode_response(self, output: Any) -> Any:
        yield from output


APIS = {"json": SquareAPI, "mlp": MLPAPI, "stream": TokensAPI}


def main(argv: list[str]) -> None:
    print(f"litserve from {litserve.__file__}", file=sys.stderr, flush=True)
    workload, port, config = argv[1], int(argv[2]), json.loads(argv[3])
    api_kwargs = dict(config.get("api", {}))
    if workload == "stream":
        api_kwargs["stream"] = True
    api = APIS[workload](**api_kwargs)
    server = LitServer(api, accelerator="cpu", timeout=60, **config.get("server", {}))
    server.run(host="127.0.0.1", port=port, generate_client_file=False)


if __name__ == "__main__":
    main(sys.argv)
