"""Benchmark server "ours-nometrics": "ours" with `/metrics` off. Usage: python litserve_square_nometrics.py PORT."""

from __future__ import annotations

import sys

from litserve_square import SquareAPI

import litserve
from litserve import LitServer


def main(argv: list[str]) -> None:
    print(f"litserve from {litserve.__file__}", file=sys.stderr, flush=True)  # which checkout (--before)
    port = int(argv[1]) if len(argv) > 1 else 8000
    server = LitServer(SquareAPI(), accelerator="cpu", timeout=30, metrics_path=None)
    server.run(host="127.0.0.1", port=port, generate_client_file=False)


if __name__ == "__main__":
    main(sys.argv)
