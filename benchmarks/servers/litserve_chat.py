"""Benchmark server: an OpenAISpec LitServer whose predict yields TOKENS short strings with no work between.

Usage: python litserve_chat.py PORT [TOKENS]

`POST /v1/chat/completions` with `"stream": true` answers TOKENS Server-Sent Events
`chat.completion.chunk` whose deltas carry "t0 " ... "tN ", the finish chunk (finish_reason and usage),
then `data: [DONE]`. The same generator as `litserve_stream_text.py`, which answers it as NDJSON.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import litserve
from litserve import LitAPI, LitServer, OpenAISpec


class ChatAPI(LitAPI):
    def __init__(self, tokens: int) -> None:
        super().__init__(spec=OpenAISpec())
        self.tokens = tokens

    def predict(self, x: Any) -> Iterator[str]:
        for i in range(self.tokens):
            yield f"t{i} "


def main(argv: list[str]) -> None:
    print(f"litserve from {litserve.__file__}", file=sys.stderr, flush=True)
    port = int(argv[1]) if len(argv) > 1 else 8000
    tokens = int(argv[2]) if len(argv) > 2 else 32
    LitServer(ChatAPI(tokens), accelerator="cpu", timeout=30).run(
        host="127.0.0.1", port=port, generate_client_file=False
    )


if __name__ == "__main__":
    main(sys.argv)
