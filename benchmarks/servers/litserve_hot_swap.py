"""The hot swap benchmark's server: serves V1, swaps to V2 when told to on stdin, stops on "stop".

Protocol on stdout, one line each: "ready", then for "swap" on stdin "swapped <start> <end>" (time.monotonic()
values, comparable with the client's on Linux: one clock for all processes), "stopped" at the end. "<end>" is
when swap() returned: V2's setup() ran, the switch happened, V1's requests finished and its workers stopped.

Usage: python benchmarks/servers/litserve_hot_swap.py PORT WORKER_MODE SETUP_S
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import litserve as ls


class Versioned(ls.LitAPI):
    def __init__(self, version: str, setup_s: float) -> None:
        super().__init__()
        self.version, self.setup_s = version, setup_s

    def setup(self, device: str) -> None:
        threading.Event().wait(self.setup_s)  # stands for loading a model's weights

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Any:
        return x * x

    def encode_response(self, output: Any) -> Any:
        return {"output": output, "version": self.version}


def main() -> None:
    port, worker_mode, setup_s = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    server = ls.LitServer(Versioned("v1", 0.0), accelerator="cpu", worker_mode=worker_mode).start(port=port)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "swap":
            start_s = time.monotonic()
            server.swap(Versioned("v2", setup_s))
            end_s = time.monotonic()
            print(f"swapped {start_s} {end_s}", flush=True)
        elif line.strip() == "stop":
            break
    server.stop()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
