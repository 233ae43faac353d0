"""Benchmark server "ours": a LitServer squaring `input`. Usage: python litserve_square.py PORT."""

from __future__ import annotations

import sys
from typing import Any

import litserve
from litserve import LitAPI, LitServer


class SquareAPI(LitAPI):
    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Any:
        return x * x

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


def main(argv: list[str]) -> None:
    print(f"litserve from {litserve.__file__}", file=sys.stderr, flush=True)  # which checkout (--before)
    port = int(argv[1]) if len(argv) > 1 else 8000
    LitServer(SquareAPI(), accelerator="cpu", timeout=30).run(host="127.0.0.1", port=port, generate_client_file=False)


if __name__ == "__main__":
    main(sys.argv)
