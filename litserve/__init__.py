"""litserve: serve any model over HTTP from a notebook cell, a script or a pytest fixture.

Layout: `api` (the LitAPI users write), `server` (the LitServer facade and lifecycle), `engine/`
(the submit path, queues, batching, the pipeline, worker threads, the one reply protocol and the
thread-to-loop bridge; it knows no HTTP and no worker processes), `web/` (the Quart app and routes),
`runtime/` (the HTTP thread, start/stop assembly, sockets), `process/` (process mode: supervisor,
loop-owned channel, in-flight book, typed messages, the worker process), `status` (counters and
snapshots), `timing` (a request's queue wait, batch size and predict time), `inspector` and `replay`
(the last requests, `server.requests`, and running one again, `server.replay`), `load_test`
(`server.benchmark`), `metrics` (Prometheus
families from the status, for `GET /metrics`), `exceptions` (errors and the one status-code table),
`testing` (the pytest plugin), `callbacks` and `loggers` (LitServe's extension points), `extensions`
(the server options they need).

Importing this package has no side effects: no logging setup, no environment reads, no torch.
"""

# No `from __future__ import annotations` here: it would export the name `annotations`.
# `test_examples`: LitServe's examples as `ls.test_examples.SimpleLitAPI` (torch and numpy only when used).
from litserve import test_examples as test_examples
from litserve.api import LitAPI as LitAPI
from litserve.callbacks import Callback as Callback
from litserve.client import Client as Client
from litserve.exceptions import HTTPException as HTTPException
from litserve.exceptions import LitServeError as LitServeError
from litserve.exceptions import PortInUseError as PortInUseError
from litserve.exceptions import ReplayError as ReplayError
from litserve.exceptions import RequestFailedError as RequestFailedError
from litserve.exceptions import ServerStartError as ServerStartError
from litserve.exceptions import ServerStateError as ServerStateError
from litserve.exceptions import WorkerSetupError as WorkerSetupError
from litserve.inspector import RequestRecord as RequestRecord
from litserve.load_test import BenchmarkResult as BenchmarkResult
from litserve.loggers import Logger as Logger
from litserve.request_context import RequestContext as RequestContext
from litserve.request_context import UploadedFile as UploadedFile
from litserve.server import LitServer as LitServer
from litserve.specs import OpenAIEmbeddingSpec as OpenAIEmbeddingSpec
from litserve.specs import OpenAISpec as OpenAISpec
from litserve.status import ServerState as ServerState
from litserve.status import ServerStatus as ServerStatus

__all__ = [
    "BenchmarkResult",
    "Callback",
    "Client",
    "HTTPException",
    "LitAPI",
    "LitServeError",
    "LitServer",
    "Logger",
    "OpenAIEmbeddingSpec",
    "OpenAISpec",
    "PortInUseError",
    "ReplayError",
    "RequestContext",
    "RequestFailedError",
    "RequestRecord",
    "ServerStartError",
    "ServerState",
    "ServerStateError",
    "ServerStatus",
    "UploadedFile",
    "WorkerSetupError",
]

__version__ = "0.1.0.dev0"
