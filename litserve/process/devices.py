"""What a worker process sees of the machine's GPUs: only its own, set before CUDA starts in it.

A worker process for `cuda:N` is spawned with `CUDA_VISIBLE_DEVICES` naming only that GPU, so no
library default, extra thread or stray `torch.cuda` call in it can open a context on another GPU
(each context costs hundreds of MiB, on GPU 0 in every process otherwise). Inside, that GPU is
`cuda:0`, and that is the name its `setup(device)` gets; the server's status keeps the server's name.
The variable is read by the CUDA driver when CUDA initialises, so it must be in the environment the
process starts with: setting it later, in the child, would be too late for anything imported first.
If the server itself runs with `CUDA_VISIBLE_DEVICES` set, `cuda:N` is its N-th entry (an index, a
UUID or a MIG name), which is passed on as written.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["DEVICE_FAILED_EXIT_CODE", "child_device", "child_environment"]

VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"

# A worker process exits with this code when a sticky CUDA error broke its device (it is started again).
DEVICE_FAILED_EXIT_CODE = 70


def _cuda_index(device: str) -> int | None:
    if not device.startswith("cuda"):
        return None
    _, _, index = device.partition(":")
    return int(index) if index else 0


def child_environment(device: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of the worker process for `device`: the server's, with only that GPU visible.

    Examples: ("cuda:3", {}) -> {"CUDA_VISIBLE_DEVICES": "3"}; ("cuda:1", {"CUDA_VISIBLE_DEVICES":
    "4,6"}) -> {"CUDA_VISIBLE_DEVICES": "6"}; ("cpu", env) -> env, unchanged.
    """
    env = dict(environ)
    index = _cuda_index(device)
    if index is None:
        return env
    visible = environ.get(VISIBLE_DEVICES)
    if visible is None:
        env[VISIBLE_DEVICES] = str(index)
        return env
    entries = [entry.strip() for entry in visible.split(",")]
    if index >= len(entries):  # resolve_devices checked it against what torch sees: cannot happen
        raise ValueError(f"{device} is not among {VISIBLE_DEVICES}={visible!r}")
    env[VISIBLE_DEVICES] = entries[index]
    return env


def child_device(device: str) -> str:
    """The name of `device` inside its worker process, which sees only that GPU: `cuda:N` -> `cuda:0`."""
    return "cuda:0" if _cuda_index(device) is not None else device
