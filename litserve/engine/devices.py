"""Which devices the workers run on, and the per-worker device context (a CUDA stream on CUDA).

torch is imported only here, only when an accelerator must be detected or a CUDA device is used.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Sequence
from typing import Any, final

__all__ = ["ACCELERATORS", "DeviceRuntime", "detect_accelerator", "resolve_devices"]

ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")


def _torch() -> Any | None:
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch


def detect_accelerator() -> str:
    """`cuda` if torch sees a CUDA GPU, else `mps` on Apple silicon, else `cpu`."""
    torch = _torch()
    if torch is None:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _device_count(accelerator: str) -> int:
    if accelerator == "cuda":
        torch = _torch()
        return 0 if torch is None else int(torch.cuda.device_count())
    if accelerator == "mps":
        return 1
    return 1


def resolve_devices(accelerator: str, devices: int | str | Sequence[int]) -> list[str]:
    """Turn LitServe's `accelerator` and `devices` arguments into device strings, one per device.

    `devices="auto"` means every visible GPU, or one CPU; an int means the first n; a list names GPU
    ids. On CPU, `devices=n` gives n CPU "devices" (each gets `workers_per_device` workers).

    Examples: ("cpu", 2) -> ["cpu", "cpu"]; ("cuda", [1, 3]) -> ["cuda:1", "cuda:3"].
    """
    if accelerator not in ACCELERATORS:
        raise ValueError(f"accelerator must be one of {', '.join(ACCELERATORS)}; got {accelerator!r}")
    if accelerator == "auto":
        accelerator = detect_accelerator()
    if accelerator == "gpu":
        accelerator = detect_accelerator()
        if accelerator == "cpu":
            raise ValueError("accelerator='gpu' but torch sees no GPU; use accelerator='cpu' or 'auto'")
    available = _device_count(accelerator)
    if devices == "auto":
        count = available
        ids: list[int] = list(range(count))
    elif isinstance(devices, bool):
        raise TypeError(f"devices must be 'auto', an int or a list of ids, got {devices!r}")
    elif isinstance(devices, int):
        if devices < 1:
            raise ValueError(f"devices must be >= 1, got {devices}")
        ids = list(range(devices))
    elif isinstance(devices, Sequence) and not isinstance(devices, str):
        ids = [int(d) for d in devices]
        if not ids or any(d < 0 for d in ids) or len(set(ids)) != len(ids):
            raise ValueError(f"devices must list distinct ids >= 0, got {list(devices)!r}")
    else:
        raise TypeError(f"devices must be 'auto', an int or a list of ids, got {devices!r}")
    if accelerator == "cpu":
        return ["cpu"] * len(ids)
    if accelerator == "mps":
        if ids != [0]:
            raise ValueError("mps has one device; use devices=1")
        return ["mps"]
    if available == 0:
        raise ValueError("accelerator='cuda' but torch sees no CUDA device; use accelerator='cpu' or 'auto'")
    missing = [d for d in ids if d >= available]
    if missing:
        raise ValueError(f"CUDA device ids {missing} do not exist; this machine has {available} (0..{available - 1})")
    return [f"cuda:{d}" for d in ids]


_NO_STREAM: contextlib.nullcontext[None] = contextlib.nullcontext()


@final
class DeviceRuntime:
    """Per-worker device state: on CUDA, the worker's own stream, which its hooks run inside."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._stream: Any = None

    def bind_thread(self) -> None:
        """Call on the worker thread before setup(): makes `device` current and creates its stream."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.set_device(self.device)
            self._stream = torch.cuda.Stream(device=self.device)  # type: ignore[no-untyped-call]

    @property
    def stream(self) -> Any:
        return self._stream

    def running(self) -> contextlib.AbstractContextManager[None]:
        """Run the enclosed hooks on this worker's stream and wait for its work before leaving."""
        if self._stream is None:
            return _NO_STREAM  # CPU and MPS: nothing to enter, and nothing allocated per request
        return self._on_stream()

    @contextlib.contextmanager
    def _on_stream(self) -> Iterator[None]:
        import torch

        with torch.cuda.stream(self._stream):
            yield
        self._stream.synchronize()

    def release(self) -> None:
        """Drop the stream and return cached device memory to the driver."""
        if self._stream is not None:
            import torch

            self._stream.synchronize()
            self._stream = None
            torch.cuda.empty_cache()
