"""Server settings, checked once at construction; the environment is read only at start()."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litserve.api import LitAPI, attach_spec, validate_api_settings
from litserve.hooks import validate_hooks

if TYPE_CHECKING:
    from litserve.specs.base import LitSpec

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "ServerSettings",
    "check_apis",
    "info_document",
    "normalize_timeout",
    "parse_size",
    "read_api_key",
]

API_KEY_ENV = "LIT_SERVER_API_KEY"
DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024

_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}


def parse_size(size: Any) -> int:
    """`max_payload_size` as bytes: an int, or a string such as "10MB" or "512KiB"; None is the 16 MiB default."""
    if size is None:
        return DEFAULT_MAX_PAYLOAD_BYTES
    if isinstance(size, bool):
        raise TypeError(f"max_payload_size must be a number of bytes or a string like '10MB', got {size!r}")
    if isinstance(size, int):
        number = size
    elif isinstance(size, str):
        text = size.strip().upper().replace(" ", "")
        digits = text.rstrip("KMGIB")
        unit = text[len(digits) :]
        if not digits.isdigit() or unit not in _UNITS:
            raise ValueError(f"max_payload_size {size!r} is not a size; write e.g. 1048576, '10MB' or '512KiB'")
        number = int(digits) * _UNITS[unit]
    else:
        raise TypeError(f"max_payload_size must be a number of bytes or a string like '10MB', got {size!r}")
    if number < 1:
        raise ValueError(f"max_payload_size must be at least 1 byte, got {size!r}")
    return number


def normalize_timeout(timeout: Any) -> float | None:
    """LitServe's `timeout` (seconds; False, None or -1 turn it off) as seconds or None."""
    if timeout is None or timeout is False or timeout == -1:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds, or False/None/-1 for none; got {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds (or False/None/-1 for none); got {timeout}")
    return float(timeout)


def read_api_key(explicit: str | None) -> str | None:
    """The API key: the argument if given, else LIT_SERVER_API_KEY, else None (no key)."""
    key = explicit if explicit is not None else os.environ.get(API_KEY_ENV)
    return key or None


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Everything LitServer decided at construction, in one immutable value."""

    devices: tuple[str, ...]
    workers_per_device: int
    timeout_s: float | None
    max_queue_size: int | None
    graceful_timeout_s: float
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    api_key: str | None = None  # the argument; LIT_SERVER_API_KEY is read at start()
    model_metadata: Any = None

    def __post_init__(self) -> None:
        if not self.devices:
            raise ValueError("at least one device is needed")
        if isinstance(self.workers_per_device, bool) or not isinstance(self.workers_per_device, int):
            raise TypeError(f"workers_per_device must be an int >= 1, got {self.workers_per_device!r}")
        if self.workers_per_device < 1:
            raise ValueError(f"workers_per_device must be >= 1, got {self.workers_per_device}")
        if self.max_queue_size is not None and (
            isinstance(self.max_queue_size, bool) or not isinstance(self.max_queue_size, int) or self.max_queue_size < 1
        ):
            raise ValueError(f"max_queue_size must be an int >= 1 or None, got {self.max_queue_size!r}")
        if not math.isfinite(self.graceful_timeout_s) or self.graceful_timeout_s < 0:
            raise ValueError(f"shutdown_timeout must be >= 0 seconds, got {self.graceful_timeout_s}")


def check_apis(
    lit_api: LitAPI | Sequence[LitAPI], timeout_s: float | None, spec: LitSpec | None = None, **deprecated: Any
) -> list[LitAPI]:
    """The LitAPIs a server was given, each checked, with LitServer's per-API arguments applied.

    `spec` is LitServe's older `LitServer(api, spec=OpenAISpec())`: it goes to the (single) LitAPI.

    Raises TypeError or ValueError with a message that says what to change.
    """
    apis = list(lit_api) if isinstance(lit_api, Sequence) else [lit_api]
    if not apis:
        raise ValueError("LitServer needs at least one LitAPI")
    for api in apis:
        if not isinstance(api, LitAPI):
            raise TypeError(
                f"lit_api must be a LitAPI instance (or a list of them), got {type(api).__name__}; "
                "subclass litserve.LitAPI and pass an instance, e.g. LitServer(MyAPI())"
            )
    _apply_deprecated(apis, deprecated)
    if spec is not None:
        warnings.warn(
            "LitServer(spec=...) is deprecated; pass it to the LitAPI instead: MyAPI(spec=OpenAISpec())",
            DeprecationWarning,
            stacklevel=3,  # the user's LitServer(...) call
        )
        if len(apis) > 1:
            raise ValueError("LitServer(spec=...) takes one LitAPI; with several, pass each its own: MyAPI(spec=...)")
        attach_spec(apis[0], spec)
    paths: set[str] = set()
    for api in apis:
        validate_api_settings(api)
        validate_hooks(api)
        if timeout_s is not None and api.batch_timeout > timeout_s:
            raise ValueError(
                f"batch_timeout ({api.batch_timeout} s) is longer than the request timeout ({timeout_s} s): "
                "requests would time out while a batch fills; lower batch_timeout or raise timeout"
            )
        if api.api_path in paths:
            raise ValueError(f"two LitAPIs use api_path {api.api_path!r}; give each its own path")
        paths.add(api.api_path)
    return apis


def _apply_deprecated(apis: list[LitAPI], values: dict[str, Any]) -> None:
    for name, value in values.items():
        if value is None:
            continue
        warnings.warn(
            f"LitServer({name}=...) is deprecated; pass it to the LitAPI instead: MyAPI({name}={value!r})",
            DeprecationWarning,
            stacklevel=4,  # the user's LitServer(...) call
        )
        for api in apis:
            setattr(api, name, value)


def info_document(settings: ServerSettings, apis: Sequence[LitAPI], worker_mode: str) -> dict[str, Any]:
    """What GET /info answers."""
    return {
        "model": settings.model_metadata,
        "server": {
            "devices": list(settings.devices),
            "workers_per_device": settings.workers_per_device,
            "worker_mode": worker_mode,
            "timeout": settings.timeout_s,
            "max_queue_size": settings.max_queue_size,
            "max_payload_size": settings.max_payload_bytes,
            "stream": {api.api_path: api.stream for api in apis},
            "max_batch_size": {api.api_path: api.max_batch_size for api in apis},
            "batch_timeout": {api.api_path: api.batch_timeout for api in apis},
        },
    }
