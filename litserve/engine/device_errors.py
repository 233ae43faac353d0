"""Which errors break a device for good: the one decision behind restarting a worker for its device.

After a device-side assert or an illegal memory access, the CUDA context of the process is corrupt:
every later CUDA call on it fails with the same error, and only a new process gets a working context
again. PyTorch raises these as `torch.AcceleratorError` (a `RuntimeError`; older versions raise a plain
`RuntimeError`) whose message carries the CUDA runtime's own text, which is what is matched here. An
out-of-memory error, a shape mismatch or a bad argument is not sticky: the next request may succeed.

`clear_frames` is for the other way an error holds on to a device: a failed setup()'s exception keeps
its frames, and they keep the half-built model.

What a worker does with a sticky error (`engine.worker`): a worker thread stops serving and stays
FAILED, so `/health` answers 503 (a thread cannot reset its process's CUDA context; the process must
restart); a worker process exits and its supervisor starts a new one.
"""

from __future__ import annotations

import traceback

__all__ = ["STICKY_CUDA_ERRORS", "clear_frames", "is_sticky_device_error"]

# The CUDA runtime's messages (cudaGetErrorString) for the errors that corrupt the context, lower case.
STICKY_CUDA_ERRORS = (
    "device-side assert triggered",
    "an illegal memory access was encountered",
    "unspecified launch failure",
    "misaligned address",
    "an illegal instruction was encountered",
    "invalid program counter",
    "hardware stack error",
    "uncorrectable ecc error encountered",
    "the launch timed out and was terminated",
    "operation not supported on global/shared address space",
)


def is_sticky_device_error(exc: BaseException) -> bool:
    """True when `exc`, or an exception it was raised from or during, is a sticky CUDA error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, RuntimeError):
            try:
                message = str(current).lower()
            except Exception:  # an exception whose __str__ fails says nothing about the device
                message = ""
            if any(marker in message for marker in STICKY_CUDA_ERRORS):
                return True
        current = current.__cause__ or current.__context__
    return False


def clear_frames(exc: BaseException) -> None:
    """Clear the variables of every finished frame in `exc`'s tracebacks, and in those it was raised from."""
    pending, seen = [exc], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
