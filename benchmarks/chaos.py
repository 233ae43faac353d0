"""The large chaos run: python benchmarks/chaos.py [--total 20000] [--concurrency 256] [--mode thread|process|both]

Prints one summary line per configuration (batching on) and exits 1 if any promise broke.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chaos import chaos_server, run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--total", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--mode", choices=("thread", "process", "both"), default="both")
    parser.add_argument("--no-key", action="store_true", help="run without an API key")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    broken = False
    for mode in ("thread", "process") if args.mode == "both" else (args.mode,):
        server = chaos_server(mode, batching=True, api_key=not args.no_key).start(port=0)
        try:
            report = run_chaos(server, args.total, args.concurrency, seed=args.seed)
        finally:
            server.stop()
        print(f"chaos {mode} batching=on key={not args.no_key} c={args.concurrency}: {report.summary()}")
        for problem in report.problems():
            print(f"  PROBLEM: {problem}")
            broken = True
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
