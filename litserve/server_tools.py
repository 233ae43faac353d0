"""The server's notebook and in-process face: a client, calls without HTTP, the live panel.

`LitServer` inherits these methods; they reach the server only through `ServerParts` (what a running
server exposes to its tools), so each tool lives in its own module and the facade stays a facade.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from litserve.api import LitAPI
from litserve.batch_tuning import DEFAULT_BATCH_SIZES, DEFAULT_BATCH_TIMEOUTS, TuningResult, batching_settings, tune
from litserve.client import Client
from litserve.config import ServerSettings, check_apis
from litserve.engine.direct_call import call_directly, pick_endpoint
from litserve.exceptions import ReplayError
from litserve.extensions import Extensions, check_api_paths
from litserve.inspector import RequestLog
from litserve.inspector_view import RequestsView, recent_requests_html
from litserve.load_test import BenchmarkResult, run_benchmark
from litserve.notebook import PanelSet, status_bundle
from litserve.replay import Replayer
from litserve.runtime.lifecycle import Lifecycle
from litserve.runtime.swap import Recipe, swap_apis
from litserve.status import ServerStatus

if TYPE_CHECKING:
    from litserve.ray import RayDeployment

__all__ = ["ServerParts", "ServerTools"]

S = TypeVar("S", bound="ServerParts")


class ServerParts(Protocol):
    """What a LitServer gives its tools."""

    _apis: Sequence[LitAPI]
    _settings: ServerSettings
    _ext: Extensions
    _life: Lifecycle
    _panels: PanelSet
    _inspector: RequestLog | None
    _replays: Replayer

    def _recipe(self, apis: Sequence[LitAPI] | None = None) -> Recipe: ...

    @property
    def status(self) -> ServerStatus: ...

    @property
    def url(self) -> str: ...

    def stop(self) -> None: ...

    def widget(self) -> Any: ...

    def swap(self, lit_api: LitAPI | Sequence[LitAPI]) -> Any: ...

    def benchmark(
        self, payload: Any, concurrency: Sequence[int], duration: float, **options: Any
    ) -> BenchmarkResult: ...


class ServerTools:
    """LitServer's notebook and in-process methods (a mixin; `self` is a LitServer)."""

    def client(self: ServerParts) -> Client:
        """A `litserve.Client` bound to this server's URL, first endpoint and API key.

        Example:
            >>> server.client().predict({"input": 4.0})
            {'output': 16.0}
        """
        running = self._life.serving("client()")
        return Client(self.url, api_key=running.api_key, path=self._apis[0].api_path)

    def predict(self: ServerParts, payload: Any, *, path: str | None = None) -> Any:
        """Run one request through the queue, batching, validation and workers, without HTTP.

        Returns what a client would get as decoded JSON; raises RequestFailedError with the status
        and detail a client would see. Handy for quick checks in a notebook cell. Streaming endpoints
        are called with `server.client().stream(...)`.
        """
        running = self._life.serving("predict()")
        return call_directly(pick_endpoint(running.endpoints, path), payload, self._settings.timeout_s)

    def swap(self: S, lit_api: LitAPI | Sequence[LitAPI]) -> S:
        """Serve `lit_api` instead of the current LitAPIs without a restart (hot swap).

        The new LitAPIs' workers run `setup()` while the old ones keep serving; then new requests go to
        the new version, also on open keep-alive connections, while those already queued or running finish
        on the old one. The old workers are then stopped (worker threads drop their LitAPI copies; worker
        processes exit). The port, the socket and the server's settings stay; the paths may change (a
        path the new LitAPIs no longer have answers 404). An endpoint whose path stays counts on in the
        status and `/metrics`. Re-running a cell's `LitServer(...).start(port=...)` does the same.

        Example:
            >>> server = LitServer(ModelV1(), accelerator="cpu").start(port=8000)
            >>> server.swap(ModelV2())  # the same server, now answering with ModelV2
            <LitServer running on http://127.0.0.1:8000 apis=['ModelV2']>

        Args:
            lit_api: a LitAPI, or a list of them each on its own `api_path`; the server's `timeout` applies.

        Returns:
            The server itself.

        Raises:
            WorkerSetupError: a new worker's `setup()` raised (the user's exception is its cause); the old
                LitAPIs keep serving.
            ServerStateError: the server is not running on a socket, or stop() was called before the switch.
            TypeError, ValueError: `lit_api` is not a valid LitAPI, or a path clashes with the server's routes.

        Stability: beta.
        """
        apis = check_apis(lit_api, self._settings.timeout_s)
        check_api_paths(self._ext, apis)

        def switched() -> None:  # at the switch, under the swap lock: replay and client() see what is served
            self._apis = apis
            self._replays.clear()

        swap_apis(self._life, self._recipe(apis), switched)
        return self

    def to_ray(
        self: ServerParts,
        num_replicas: int | str | None = None,
        ray_actor_options: Mapping[str, Any] | None = None,
        autoscaling_config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> RayDeployment:
        """Deploy this server's endpoints as a Ray Serve application (`litserve.ray.deploy(self, ...)`).

        Each replica runs its own copy of this server (not this running one: it need not be started).
        Returns once every replica is ready; see `litserve.ray.deploy` for every option.

        Example:
            >>> deployment = server.to_ray(num_replicas=2, ray_actor_options={"num_gpus": 1})
            >>> deployment.predict({"input": 4.0})
            {'output': 16.0}
            >>> deployment.shutdown()

        Stability: beta (needs `pip install 'litserve[ray]'`).
        """
        from litserve.ray import deploy

        return deploy(
            self,  # type: ignore[arg-type]  # self is the LitServer these tools are mixed into
            num_replicas=num_replicas,
            ray_actor_options=ray_actor_options,
            autoscaling_config=autoscaling_config,
            **options,
        )

    def widget(self: ServerParts) -> Any:
        """A live ipywidgets panel: state, counts, latency, workers, last error, and a stop button.

        It refreshes about once a second while the server runs (from a `litserve-panel` thread that
        stop() ends) and shows "stopped" afterwards. Displaying the server as a cell's last expression
        shows the same panel.
        """
        inspector = self._inspector
        recent = lambda: recent_requests_html(inspector)  # noqa: E731 - the panel's "last requests" table
        return self._panels.widget(lambda: self.status, self.stop, self._life.stopped, recent)

    def _repr_mimebundle_(self: ServerParts, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return status_bundle(self.status, self.widget, include, exclude, recent_requests_html(self._inspector))

    @property
    def requests(self: ServerParts) -> RequestsView:
        """The last requests the server answered, oldest first (the request inspector); a table in a notebook.

        Each `RequestRecord` has its id, endpoint, arrival, status, queue wait, batch and size, worker,
        predict time, error with traceback, and its payload's summary. On by default in a notebook
        (100 kept), off in a script: `LitServer(..., inspect_requests=N)`. `.to_dict()` for scripts.
        Stability: beta.

        Example:
            >>> failed = [r for r in server.requests if r.error is not None]
            >>> print(failed[-1].error.traceback)  # doctest: +SKIP
        """
        return RequestsView(self._inspector)

    def replay(self: ServerParts, request_id: int) -> Any:
        """Run a kept request's payload through the same hooks again, in the calling thread.

        decode_request -> (batch) -> predict -> (unbatch) -> encode_response run as a worker runs them, on a
        private copy of the LitAPI set up once on the server's first device (kept for later replays), so
        live traffic is not touched; in process mode too the copy lives in this (the calling) process. A
        hook that raises raises here with its own traceback, so `%debug` lands in the hook and `breakpoint()`
        stops in this thread. Stability: beta.

        Returns:
            What an HTTP client got, as decoded JSON; for a streaming endpoint, the list of its chunks.

        Raises:
            ReplayError: the inspector is off, the request is not kept (any more), its payload was only
                summarised (larger than `inspect_payload_bytes`), or its endpoint speaks a spec.
        """
        if self._inspector is None:
            raise ReplayError("the request inspector is off: start the server with inspect_requests=N to replay")
        record, payload = self._inspector.find(request_id)
        if record is None:
            raise ReplayError(f"request {request_id} is not among the last {self._inspector.max_requests} kept")
        if payload is None:
            size = "not read" if record.payload is None else f"{record.payload.size_bytes} bytes"
            raise ReplayError(
                f"request {request_id}'s payload was not kept ({size}; payloads up to "
                f"{self._inspector.max_payload_bytes} bytes are kept: raise inspect_payload_bytes)"
            )
        api = next((api for api in self._apis if api.api_path == record.path), None)
        if api is None:
            raise ReplayError(f"this server has no endpoint at {record.path} any more")
        return self._replays.replay(api, payload)

    def benchmark(
        self: ServerParts,
        payload: Any,
        concurrency: Sequence[int] = (1, 8, 32),
        duration: float = 5.0,
        *,
        path: str | None = None,
        warmup: float = 1.0,
        timeout: float = 30.0,
        clients: str = "process",
    ) -> BenchmarkResult:
        """Load-test this running server over real HTTP: req/s and p50/p90/p99 latency per concurrency.

        Each level runs `concurrency` client threads (in a child process by default, so they do not take
        the GIL from this server), each on its own keep-alive connection, sending `payload` back to back
        for `duration` seconds (requests then in flight are waited for). The result is a table and a plot
        in a notebook, `.to_dict()` in a script. See `litserve.load_test.run_benchmark`. Stability: beta.

        Args:
            payload: the JSON body of every request.
            concurrency: the levels, in order.
            duration: seconds per level.
            path: which endpoint, on a server with several.
            warmup: seconds of load at the first level before measuring.
            timeout: seconds a client waits for an answer before counting it failed.
            clients: "process" (default) or "thread" (the clients run in this process).
        """
        running = self._life.serving("benchmark()")
        endpoint = pick_endpoint(running.endpoints, path)
        return run_benchmark(
            self.url + endpoint.path,
            payload,
            concurrency,
            duration,
            api_key=running.api_key,
            warmup_s=warmup,
            timeout_s=timeout,
            clients=clients,
        )

    def tune_batching(
        self: ServerParts,
        payload: Any,
        *,
        max_batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
        batch_timeouts: Sequence[float] = DEFAULT_BATCH_TIMEOUTS,
        p99_bound: float | None = None,
        concurrency: int = 16,
        duration: float = 2.0,
        path: str | None = None,
        apply: bool = True,
        clients: str = "process",
    ) -> TuningResult:
        """Find the batching setting with the best throughput whose p99 latency stays under `p99_bound`.

        Each `max_batch_size` x `batch_timeout` is tried on this running server by a hot swap (`swap()`: no
        restart, the port and connections stay) of a copy of the endpoint's LitAPI with that setting, then
        load-tested over HTTP (`benchmark()`) at `concurrency` for `duration` seconds. Size 1 (no batching)
        is tried once. The LitAPI's `predict` must take batches (LitServe's `batch`/`unbatch` contract).
        Live traffic during the sweep is served by whichever setting is being tried. Stability: beta.

        Args:
            payload: the JSON body of every request.
            max_batch_sizes, batch_timeouts: the settings to try (timeouts in seconds).
            p99_bound: the largest acceptable p99 latency, in seconds (None: no bound).
            concurrency: clients sending at once while a setting is measured.
            duration: seconds each setting is measured.
            path: which endpoint, on a server with several.
            apply: serve the recommended setting afterwards (else the original LitAPI again).
            clients: where the load test's clients run: "process" (default) or "thread".

        Returns:
            A TuningResult: every trial, the recommendation (`best`), whether it was applied.
        """
        running = self._life.serving("tune_batching()")
        endpoint = pick_endpoint(running.endpoints, path)
        target = next(api for api in self._apis if api.api_path == endpoint.path)
        settings = batching_settings(max_batch_sizes, batch_timeouts)

        def measure() -> BenchmarkResult:
            return self.benchmark(
                payload, (concurrency,), duration, path=path, warmup=min(0.5, duration / 4), clients=clients
            )

        return tune(self._apis, target, self.swap, measure, settings, p99_bound, apply)
