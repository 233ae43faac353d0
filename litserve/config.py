"""Server settings, checked once at construction; the environment is read only at start()."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "ServerSettings", "normalize_timeout", "parse_size", "read_api_key"]

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
