"""The server's figures in Prometheus' terms, built at scrape time from one `ServerStatus` snapshot.

Nothing of `prometheus_client` is on the request path: the routes and workers keep plain counters
(`litserve.status`), and `StatusCollector.collect()` turns the same snapshot `server.status` returns
into metric families when `/metrics` is scraped, so the two always agree. Each server start has its
own `CollectorRegistry` (`litserve.web.metrics`), never the global one: two servers in one process do
not mix counts, and a stopped server's collector is unregistered.

Names follow Prometheus' conventions: one prefix (`litserve_`), base units (seconds), `_total`
counters, labels of low cardinality (endpoint path, status code, outcome, worker name, state).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import final

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from litserve.status import EndpointStatus, HistogramSnapshot, ServerState, ServerStatus, WorkerState

__all__ = ["BATCH_SIZE_BUCKETS", "PREFIX", "StatusCollector", "families"]

PREFIX = "litserve_"
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_OUTCOMES = ("ok", "client_error", "server_error", "timed_out", "cancelled")


@final
class StatusCollector(Collector):
    """Yields the server's metric families from a fresh status snapshot at each scrape."""

    def __init__(self, status: Callable[[], ServerStatus]) -> None:
        self._status = status

    def collect(self) -> Iterable[Metric]:
        return families(self._status())


def families(status: ServerStatus) -> list[Metric]:
    """Every metric family of one snapshot (the order is the exposition's)."""
    endpoints = status.endpoints
    return [
        *_server(status),
        *_requests(endpoints),
        *_timings(endpoints),
        *_load(endpoints),
        *_workers(endpoints),
    ]


def _server(status: ServerStatus) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        f"{PREFIX}server_state", "The server's lifecycle state (1 for the current one).", labels=["state"]
    )
    for value in ServerState:
        state.add_metric([value.value], 1.0 if status.state is value else 0.0)
    yield state
    yield GaugeMetricFamily(f"{PREFIX}uptime_seconds", "Seconds since the server started.", value=status.uptime_s)


def _requests(endpoints: Sequence[EndpointStatus]) -> Iterator[Metric]:
    by_code = CounterMetricFamily(
        f"{PREFIX}requests",
        "Answers sent, by endpoint and HTTP status code (a stream counts once, by its status line).",
        labels=["endpoint", "code"],
    )
    by_outcome = CounterMetricFamily(
        f"{PREFIX}request_outcomes",
        "Requests by how they ended: ok, client_error (4xx), server_error (5xx but timeouts), timed_out "
        "(504, or a stream cut by its idle timeout), cancelled (the client went away).",
        labels=["endpoint", "outcome"],
    )
    dropped = CounterMetricFamily(
        f"{PREFIX}requests_dropped",
        "Queued requests the workers skipped instead of running, by reason.",
        labels=["endpoint", "reason"],
    )
    for e in endpoints:
        for code, count in e.status_codes:
            by_code.add_metric([e.path, str(code)], count)
        for outcome, count in zip(
            _OUTCOMES, (e.ok, e.client_errors, e.server_errors, e.timed_out, e.cancelled), strict=True
        ):
            by_outcome.add_metric([e.path, outcome], count)
        dropped.add_metric([e.path, "timed_out"], e.dropped_timed_out)
        dropped.add_metric([e.path, "disconnected"], e.dropped_cancelled)
    yield by_code
    yield by_outcome
    yield dropped


def _timings(endpoints: Sequence[EndpointStatus]) -> Iterator[Metric]:
    yield _histogram(
        "request_duration_seconds",
        "Seconds from a request's arrival to its answer (a stream: to its first chunk).",
        [(e.path, e.duration) for e in endpoints],
    )
    yield _histogram(
        "queue_wait_seconds",
        "Seconds from being queued until the request's batch began running (requests that ran).",
        [(e.path, e.queue_wait) for e in endpoints],
    )
    yield _histogram(
        "stream_first_chunk_seconds",
        "Streams: seconds from arrival to the first chunk.",
        [(e.path, e.first_chunk) for e in endpoints],
    )
    batches = HistogramMetricFamily(f"{PREFIX}batch_size", "Requests per batch the workers ran.", labels=["endpoint"])
    for e in endpoints:
        batches.add_metric([e.path], *_batch_buckets(e.batch_sizes))
    yield batches


def _histogram(name: str, documentation: str, series: list[tuple[str, HistogramSnapshot]]) -> Metric:
    family = HistogramMetricFamily(f"{PREFIX}{name}", documentation, labels=["endpoint"])
    for path, snapshot in series:
        cumulative, buckets = 0, []
        for bound, count in zip((*snapshot.bounds, float("inf")), snapshot.counts, strict=True):
            cumulative += count
            buckets.append((_bound(bound), cumulative))
        family.add_metric([path], buckets, snapshot.sum)
    return family


def _batch_buckets(sizes: Sequence[tuple[int, int]]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative buckets and the sum of exact (size, batches) pairs."""
    buckets = []
    for bound in (*BATCH_SIZE_BUCKETS, float("inf")):
        buckets.append((_bound(bound), float(sum(n for size, n in sizes if size <= bound))))
    return buckets, float(sum(size * n for size, n in sizes))


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _load(endpoints: Sequence[EndpointStatus]) -> Iterator[Metric]:
    in_flight = GaugeMetricFamily(
        f"{PREFIX}requests_in_flight", "Requests handed to the engine and not yet answered.", labels=["endpoint"]
    )
    queued = GaugeMetricFamily(f"{PREFIX}requests_queued", "Requests waiting in the queue.", labels=["endpoint"])
    for e in endpoints:
        in_flight.add_metric([e.path], e.in_flight)
        queued.add_metric([e.path], e.queue_depth)
    yield in_flight
    yield queued


def _workers(endpoints: Sequence[EndpointStatus]) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        f"{PREFIX}worker_state", "Each worker's state (1 for the current one).", labels=["endpoint", "worker", "state"]
    )
    served = CounterMetricFamily(
        f"{PREFIX}worker_requests",
        "Requests each worker answered, by result (ok, or error: a 5xx from its hooks).",
        labels=["endpoint", "worker", "result"],
    )
    restarts = CounterMetricFamily(
        f"{PREFIX}worker_restarts",
        "How often a worker's process was started again after it died (process mode).",
        labels=["endpoint", "worker"],
    )
    for e in endpoints:
        for w in e.workers:
            for value in WorkerState:
                state.add_metric([e.path, w.name, value.value], 1.0 if w.state is value else 0.0)
            served.add_metric([e.path, w.name, "ok"], w.served)
            served.add_metric([e.path, w.name, "error"], w.errors)
            restarts.add_metric([e.path, w.name], w.restarts)
    yield state
    yield served
    yield restarts
