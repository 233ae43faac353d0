"""What the web layer needs from the server, passed in as one value (the web layer imports no server)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, final

from litserve.engine.pool import Endpoint
from litserve.status import ErrorLog
from litserve.web.auth import ApiKeyCheck

__all__ = ["Gate", "WebContext"]


@final
class Gate:
    """Whether routes still take new requests. Closed on the caller's thread at stop; read on the loop."""

    __slots__ = ("is_open",)

    def __init__(self) -> None:
        self.is_open = True

    def close(self) -> None:
        self.is_open = False


@dataclass(frozen=True, slots=True)
class WebContext:
    """Everything the routes read: endpoints, limits, auth, readiness and the /info document."""

    endpoints: Sequence[Endpoint]
    timeout_s: float | None
    gate: Gate
    is_ready: Callable[[], bool]
    info: Callable[[], dict[str, Any]]
    errors: ErrorLog
    api_key: ApiKeyCheck | None = None
    max_payload_bytes: int | None = None
