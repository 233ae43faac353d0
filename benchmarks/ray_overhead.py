"""What Ray Serve costs per request: a plain LitServer against the same LitServer deployed with `to_ray`.

One run, one machine, one trivial LitAPI (x * 2, no model), so what is measured is the serving path:
- c=1: p50 and p90 latency of `--requests` sequential POSTs (one keep-alive connection) to the plain
  server's socket, then through Ray Serve's HTTP proxy with one replica; the difference is Ray's hop
  (proxy -> router -> replica actor -> our app, and back).
- c=16: requests per second for `--seconds`, 16 client threads, each with its own connection: the plain
  server, Ray with 1 replica, Ray with 2 replicas.

Ray runs locally here (one `ray.init` on 127.0.0.1, no dashboard, for both deployments), replicas take
no CPU reservation so two fit on a small machine; each takes Ray's `max_ongoing_requests` default of 5
(litserve's default for a server without batching), the rest wait in Ray's router. The plain server's
c=16 run is repeated at the end to show how far the machine drifted during the run. The client runs
in this process (Python threads), so on a small machine it competes with the servers for the same
cores: the figures compare paths on this machine, they are not capacity figures. The CPU count is printed with them.

Usage: python benchmarks/ray_overhead.py [--requests 300] [--seconds 5] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported: stay on loopback
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import requests

import litserve as ls


class DoubleAPI(ls.LitAPI):
    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Any:
        return x * 2

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


def latencies_ms(url: str, count: int) -> list[float]:
    with requests.Session() as session:
        for _ in range(20):  # warm the connection and the server
            session.post(url, json={"input": 1}, timeout=30).raise_for_status()
        found = []
        for i in range(count):
            start = time.perf_counter()
            session.post(url, json={"input": i}, timeout=30).raise_for_status()
            found.append((time.perf_counter() - start) * 1000)
    return found


def throughput(url: str, seconds: float, concurrency: int = 16) -> float:
    done = [0] * concurrency
    failed: list[BaseException] = []
    stop = threading.Event()

    def client(index: int) -> None:
        with requests.Session() as session:
            try:
                while not stop.is_set():
                    session.post(url, json={"input": index}, timeout=30).raise_for_status()
                    done[index] += 1
            except BaseException as exc:  # reported after the run
                failed.append(exc)

    threads = [threading.Thread(target=client, args=(i,), name=f"bench-client-{i}") for i in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join(60)
    if failed:
        raise RuntimeError(f"{len(failed)} client(s) failed: {failed[0]!r}")
    return sum(done) / (time.perf_counter() - start)


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": statistics.median(ordered), "p90_ms": ordered[int(len(ordered) * 0.9)]}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    from ray import serve

    results: dict[str, Any] = {"cpus": os.cpu_count(), "ray": ray.__version__}
    # One local Ray for both deployments (on loopback, no dashboard), started before any timing.
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        with ls.LitServer(DoubleAPI(), accelerator="cpu").start(port=0) as server:
            results["plain_c1"] = summary(latencies_ms(server.url + "/predict", args.requests))
            results["plain_c16_rps"] = throughput(server.url + "/predict", args.seconds)
            for replicas in (1, 2):
                deployment = ls.LitServer(DoubleAPI(), accelerator="cpu").to_ray(
                    num_replicas=replicas, ray_actor_options={"num_cpus": 0}, port=args.port, name="bench"
                )
                url = deployment.url + "/predict"
                if replicas == 1:
                    results["ray_c1"] = summary(latencies_ms(url, args.requests))
                results[f"ray_{replicas}_replicas_c16_rps"] = throughput(url, args.seconds)
                deployment.shutdown()
            # The plain server once more, after Ray's runs: how far this machine drifted meanwhile.
            results["plain_c16_rps_again"] = throughput(server.url + "/predict", args.seconds)
    finally:
        serve.shutdown()
        ray.shutdown()
    results["ray_overhead_p50_ms"] = results["ray_c1"]["p50_ms"] - results["plain_c1"]["p50_ms"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="sequential requests for the c=1 latency")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each c=16 run")
    parser.add_argument("--port", type=int, default=8123, help="Ray Serve's HTTP proxy port")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "ray_overhead.json")
    args = parser.parse_args()
    results = measure(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    plain, through_ray = results["plain_c1"], results["ray_c1"]
    print(f"CPUs: {results['cpus']}  Ray {results['ray']}")
    print(f"c=1 p50: plain {plain['p50_ms']:.2f} ms, Ray {through_ray['p50_ms']:.2f} ms", end="")
    print(f" (+{results['ray_overhead_p50_ms']:.2f} ms); p90 {plain['p90_ms']:.2f} / {through_ray['p90_ms']:.2f} ms")
    keys = ("plain_c16_rps", "ray_1_replicas_c16_rps", "ray_2_replicas_c16_rps", "plain_c16_rps_again")
    rps = [results[key] for key in keys]
    print("c=16 req/s: plain {:.0f}, Ray 1 replica {:.0f}, Ray 2 replicas {:.0f}, plain again {:.0f}".format(*rps))


if __name__ == "__main__":
    main()
