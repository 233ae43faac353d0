"""Benchmark server: a streaming LitServer whose predict yields TOKENS dict chunks with no work between.

Usage: python litserve_stream.py PORT [TOKENS]

Every `POST /predict` answers TOKENS NDJSON lines, `{"token":0}` ... `{"token":TOKENS-1}`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import litserve
from litserve import LitAPI, LitServer


class TokenAPI(LitAPI):
    def __init__(self, tokens: int) -> None:
        super().__init__(stream=True)
        self.tokens = tokens

    def decode_request(self, request: Any) -> Any:
        return request

    def predict(self, x: Any) -> Iterator[dict[str, int]]:
        for i in range(self.tokens):
            yield {"token": i}

    def encode_response(self, outputs: Any) -> Iterator[Any]:
        yield from outputs  # pass the chunks through


def main(argv: list[str]) -> None:
    print(f"litserve from {litserve.__file__}", file=sys.stderr, flush=True)
    port = int(argv[1]) if len(argv) > 1 else 8000
    tokens = int(argv[2]) if len(argv) > 2 else 32
    LitServer(TokenAPI(tokens), accelerator="cpu", timeout=30).run(
        host="127.0.0.1", port=port, generate_client_file=False
    )


if __name__ == "__main__":
    main(sys.argv)
