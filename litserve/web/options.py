"""Where the server's observability routes live, and the limits that protect the HTTP layer.

Checked once at construction (`LitServer(metrics_path=..., ...)`); each start's WebContext carries them.
A path of None turns that route off (it answers 404).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, final

from litserve.inspector import DEFAULT_NOTEBOOK_REQUESTS, DEFAULT_PAYLOAD_BYTES, in_notebook

__all__ = ["WebOptions", "check_web_options"]


@final
@dataclass(frozen=True, slots=True)
class WebOptions:
    """The server's own routes beyond health and info, and HTTP-layer limits.

    Stability: beta.
    """

    metrics_path: str | None = "/metrics"  # Prometheus text format
    status_path: str | None = "/status"  # the live status page (HTML)
    openapi_path: str | None = "/openapi.json"  # the OpenAPI 3 document
    docs_path: str | None = "/docs"  # the interactive API docs, served from installed assets
    server_timing: bool = False  # add a `Server-Timing` header (queue wait, predict time) to answers
    read_timeout_s: float | None = 30.0  # seconds a client may take to send its headers and body
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted beyond loopback ones, when bound to loopback
    inspect_requests: int = 0  # the request inspector keeps the last this many requests (0: off)
    inspect_payload_bytes: int = DEFAULT_PAYLOAD_BYTES  # payloads up to this size (as JSON) are kept whole

    def paths(self) -> dict[str, str]:
        """The routes that are on, by argument name."""
        named = {
            "metrics_path": self.metrics_path,
            "status_path": self.status_path,
            "openapi_path": self.openapi_path,
            "docs_path": self.docs_path,
        }
        return {name: path for name, path in named.items() if path is not None}


def check_web_options(
    *,
    metrics_path: str | None = "/metrics",
    status_path: str | None = "/status",
    openapi_path: str | None = "/openapi.json",
    docs_path: str | None = "/docs",
    server_timing: bool = False,
    read_timeout: float | None = 30.0,
    allowed_hosts: Sequence[str] | None = None,
    disable_openapi_url: bool = False,
    inspect_requests: int | None = None,
    inspect_payload_bytes: int = DEFAULT_PAYLOAD_BYTES,
) -> WebOptions:
    """LitServer's arguments of the same names, checked; a TypeError or ValueError says what to change.

    `disable_openapi_url=True` (LitServe's name) turns off both the OpenAPI document and the docs page.
    `inspect_requests=None` keeps the last 100 requests in a notebook and none in a script.

    The paths themselves are checked with the server's other own paths (`extensions.check_extensions`).
    """
    if not isinstance(server_timing, bool):
        raise TypeError(f"server_timing must be True or False, got {server_timing!r}")
    if not isinstance(disable_openapi_url, bool):
        raise TypeError(f"disable_openapi_url must be True or False, got {disable_openapi_url!r}")
    return WebOptions(
        metrics_path=metrics_path,
        status_path=status_path,
        openapi_path=None if disable_openapi_url else openapi_path,
        docs_path=None if disable_openapi_url else docs_path,
        server_timing=server_timing,
        read_timeout_s=_read_timeout(read_timeout),
        allowed_hosts=_hosts(allowed_hosts),
        inspect_requests=_count("inspect_requests", inspect_requests),
        inspect_payload_bytes=_count("inspect_payload_bytes", inspect_payload_bytes),
    )


def _count(name: str, value: Any) -> int:
    if name == "inspect_requests" and value is None:
        return DEFAULT_NOTEBOOK_REQUESTS if in_notebook() else 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


def _read_timeout(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"read_timeout must be a number of seconds > 0, or None for no limit; got {value!r}")
    return float(value)


def _hosts(hosts: Any) -> tuple[str, ...]:
    if hosts is None:
        return ()
    if isinstance(hosts, str) or not all(isinstance(host, str) and host for host in hosts):
        raise TypeError(f"allowed_hosts must be a list of host names, e.g. ['myhost.local'], got {hosts!r}")
    return tuple(host.lower() for host in hosts)
