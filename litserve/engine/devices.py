"""Which devices the workers run on: detection, the `accelerator`/`devices` arguments, and the checks
around them. The per-worker device state (a CUDA stream) is `engine.device_runtime`.

torch is imported only when an accelerator must be detected or a CUDA device is used.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Sequence
from typing import Any

__all__ = [
    "ACCELERATORS",
    "CUDA_STREAMS_PER_DEVICE",
    "detect_accelerator",
    "resolve_devices",
    "settle_callers_tensors",
    "warn_if_streams_shared",
]

logger = logging.getLogger(__name__)

ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")

# PyTorch hands out `torch.cuda.Stream()`s from a pool of 32 per device and priority, round robin:
# the 33rd worker on a device gets the first worker's stream again (and waits on its work).
CUDA_STREAMS_PER_DEVICE = 32


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
    return "mps" if _has_mps() else "cpu"


def _has_mps() -> bool:
    torch = _torch()
    mps = None if torch is None else getattr(torch.backends, "mps", None)
    return mps is not None and bool(mps.is_available())


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
        if not _has_mps():
            raise ValueError("accelerator='mps' but torch sees no MPS device (Apple silicon); use 'cpu' or 'auto'")
        if ids != [0]:
            raise ValueError("mps has one device; use devices=1")
        return ["mps"]
    if available == 0:
        raise ValueError("accelerator='cuda' but torch sees no CUDA device; use accelerator='cpu' or 'auto'")
    missing = [d for d in ids if d >= available]
    if missing:
        raise ValueError(f"CUDA device ids {missing} do not exist; this machine has {available} (0..{available - 1})")
    return [f"cuda:{d}" for d in ids]


def warn_if_streams_shared(devices: Sequence[str], workers_per_device: int) -> None:
    """Log a warning when CUDA workers on one device must share streams (more than PyTorch's pool holds)."""
    if workers_per_device > CUDA_STREAMS_PER_DEVICE and any(d.startswith("cuda") for d in devices):
        logger.warning(
            "workers_per_device=%d but PyTorch has %d streams per device: workers %d and up share a stream "
            "with an earlier worker, so their work runs in turn, not side by side",
            workers_per_device,
            CUDA_STREAMS_PER_DEVICE,
            CUDA_STREAMS_PER_DEVICE + 1,
        )


def settle_callers_tensors(payload: Any) -> None:
    """Wait for the calling thread's pending work on the CUDA tensors in `payload` (`server.predict`).

    The caller made them on its own current stream; a worker reads them on its stream. Waiting here,
    before they are queued, orders the two without carrying an event along. The worker keeps the
    payload until it has waited for its own stream, so the memory is never reused under it (which is
    what `Tensor.record_stream` would otherwise have to guarantee). Looks two levels into dicts,
    lists and tuples; costs nothing when this process has not used CUDA.
    """
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return
    for index in sorted({t.device.index for t in _cuda_tensors(payload, torch, depth=2)}):
        torch.cuda.current_stream(index).synchronize()


def _cuda_tensors(value: Any, torch: Any, depth: int) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return [value] if value.is_cuda else []
    if depth == 0:
        return []
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else ()
    return [t for item in items for t in _cuda_tensors(item, torch, depth - 1)]
