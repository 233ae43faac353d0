"""Benchmark server: a streaming LitServer whose predict yields TOKENS short strings, sent as NDJSON lines.

Usage: python litserve_stream_text.py PORT [TOKENS]

Every `POST /predict` answers TOKENS NDJSON lines `{"content":"t0 "}` ... `{"content":"tN "}`: the
generator of `litserve_chat.py` (the OpenAI spec's server) on litserve's plain stream, so that the two
compare only what the spec adds.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import litserve
from litserve import LitAPI, LitServer


class TextAPI(LitAPI):
    def __init__(self, tokens: int) -> None:
        super().__init__(stream=True)
        self.tokens = tokens

    def decode_request(self, request: Any) -> Any:
        return request

    def predict(self, x: Any) -> Iterator[str]:
        for i in range(self.tokens):
            yield f"t{i} "

    def encode_response(self, outputs: Any) -> Iterator[dict[str, str]]:
        for text in outputs:
            yield {"content": text}


def main(argv: list[str]) -> None:
    print(f"litserve from {litserve.__file__}", file=sys.stderr, flush=True)
    port = int(argv[1]) if len(argv) > 1 else 8000
    tokens = int(argv[2]) if len(argv) > 2 else 32
    LitServer(TextAPI(tokens), accelerator="cpu", timeout=30).run(
        host="127.0.0.1", port=port, generate_client_file=False
    )


if __name__ == "__main__":
    main(sys.argv)
