"""A server's app and workers without Hypercorn or a socket: requests go through Quart's test client.

For web-contract tests about what a request gets (status, body, headers, counters), not about the
socket: lifecycle, disconnects, streaming and timing tests keep a real server. The app's loop runs in a
thread of its own (stopped with the client), so tests stay synchronous.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from werkzeug.datastructures import Headers

from litserve import LitAPI
from litserve.config import ServerSettings, check_apis, normalize_timeout, parse_size
from litserve.engine.bridge import LoopHandle
from litserve.engine.pool import Endpoint, WorkerFactory
from litserve.engine.worker import thread_workers
from litserve.process import ProcessWorkers
from litserve.runtime.serving import Parts, assemble
from litserve.status import ErrorLog, ServerState, ServerStatus
from litserve.web.auth import ApiKeyCheck
from litserve.web.context import Gate, WebContext

T = TypeVar("T")
WAIT_S = 30.0


@dataclass(frozen=True)
class AppResponse:
    """What the test client answered, shaped like the `requests.Response` the socket tests read."""

    status_code: int
    headers: Headers  # case-insensitive, as requests' are
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return json.loads(self.content)


class AppClient:
    """Serves `lit_api` in-process (workers and app, no socket) until `close()`."""

    def __init__(self, lit_api: LitAPI | Sequence[LitAPI], worker_mode: str = "thread", **settings: Any) -> None:
        timeout_s = normalize_timeout(settings.pop("timeout", 30))
        self._apis = check_apis(lit_api, timeout_s)
        self._settings = ServerSettings(
            devices=("cpu",),
            workers_per_device=settings.pop("workers_per_device", 1),
            timeout_s=timeout_s,
            max_queue_size=settings.pop("max_queue_size", None),
            graceful_timeout_s=3.0,
            max_payload_bytes=parse_size(settings.pop("max_payload_size", None)),
            api_key=settings.pop("api_key", None),
            model_metadata=settings.pop("model_metadata", None),
        )
        assert not settings, f"AppClient does not take {sorted(settings)}"
        self.errors = ErrorLog()
        factory: WorkerFactory = ProcessWorkers(restart=True) if worker_mode == "process" else thread_workers
        self._parts: Parts = assemble(self._apis, self._settings, self.errors, factory, self._web)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-app-loop", daemon=True)
        self._thread.start()
        try:
            self._client = self._parts.app.test_client()
            self._parts.pool.start(LoopHandle(self._loop, self._thread.ident or 0))
            self._parts.pool.wait_ready()
        except BaseException:
            self.close()
            raise

    def _web(self, endpoints: list[Endpoint], gate: Gate, api_key: ApiKeyCheck | None) -> WebContext:
        return WebContext(
            endpoints=endpoints,
            timeout_s=self._settings.timeout_s,
            gate=gate,
            status=lambda: self.status,
            info=lambda: {"model": self._settings.model_metadata},
            errors=self.errors,
            api_key=api_key,
            max_payload_bytes=self._settings.max_payload_bytes,
        )

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(WAIT_S)

    def request(self, method: str, path: str, **kwargs: Any) -> AppResponse:
        """`method` on `path`, with what Quart's test client takes (json, data, form, files, headers, query_string)."""

        async def send() -> AppResponse:
            response = await self._client.open(path, method=method, **kwargs)
            return AppResponse(response.status_code, response.headers, await response.get_data())

        return self._run(send())

    def post(self, payload: Any = None, path: str = "/predict", **kwargs: Any) -> AppResponse:
        if payload is not None:
            kwargs["json"] = payload
        return self.request("POST", path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> AppResponse:
        return self.request("GET", path, **kwargs)

    @property
    def status(self) -> ServerStatus:
        endpoints = tuple(endpoint.status() for endpoint in self._parts.endpoints)
        return ServerStatus(ServerState.RUNNING, None, 0.0, endpoints, self.errors.last)

    def close(self) -> None:
        """Stop the workers (the loop still runs: it carries their answers), then the loop. Idempotent."""
        if self._loop.is_closed():
            return
        try:
            self._parts.gate.close()
            self._parts.pool.stop(WAIT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(WAIT_S)
            assert not self._thread.is_alive(), "the app's loop did not stop"
            self._loop.close()
