"""LitAPI: the one class a user writes. It knows nothing of HTTP, threads or queues."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litserve.specs.base import LitSpec

from litserve.loggers import LogSink, warn_unlogged

__all__ = ["LitAPI", "default_batch", "default_unbatch"]

RESERVED_PATHS = frozenset({"/", "/health", "/info", "/metrics", "/docs", "/openapi.json", "/v1/models"})


class LitAPI(ABC):
    """Describe how to serve a model: one hook per step of a request.

    Only `predict` is required. Each worker gets its own copy of the object and calls `setup(device)`
    on it once, in the worker, before serving. Per request (a lone request is a batch of one):
    `decode_request` per item -> `batch` -> `predict` -> `unbatch` -> `encode_response` per item.
    With `max_batch_size=1` (the default) `batch`/`unbatch` are skipped and `predict` sees one input.

    Example:
        >>> class Square(LitAPI):
        ...     def decode_request(self, request):
        ...         return request["input"]
        ...     def predict(self, x):
        ...         return x**2
        ...     def encode_response(self, output):
        ...         return {"output": output}

    Args:
        max_batch_size: the most requests one `predict` call receives (>= 1).
        batch_timeout: seconds a worker waits after the first request of a batch for more to arrive
            (in process mode, counted from when the server handed that request to the worker process).
        api_path: the URL path that serves this API (default `/predict`).
        stream: `predict` and `encode_response` are generators whose chunks are sent as they come.
        enable_async: the hooks are coroutines (or async generators when streaming).
        spec: an API specification to speak instead of plain JSON, e.g. `OpenAISpec()` (which serves
            `/v1/chat/completions` and streams, so predict must be a generator) or `OpenAIEmbeddingSpec()`.

    Stability: the hook names and arguments are LitServe's and stable.
    """

    # Class-level defaults so subclasses that define __init__ without calling super() still work,
    # as they did with the original LitServe where LitAPI took no arguments.
    max_batch_size: int = 1
    batch_timeout: float = 0.0
    api_path: str = "/predict"
    stream: bool = False
    enable_async: bool = False
    device: str | None = None
    spec: LitSpec | None = None
    # Where `log()` sends entries: set by the server on each worker's copy (see litserve.loggers).
    _log_sink: LogSink | None = None

    def __init__(
        self,
        max_batch_size: int = 1,
        batch_timeout: float = 0.0,
        api_path: str = "/predict",
        stream: bool = False,
        enable_async: bool = False,
        spec: LitSpec | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout
        self.api_path = api_path
        self.stream = stream
        self.enable_async = enable_async
        if spec is not None:
            attach_spec(self, spec)
        validate_api_settings(self)

    def setup(self, device: str) -> None:  # noqa: B027 - optional hook, empty by design
        """Load the model on `device` (`"cpu"`, `"cuda:0"`, `"mps"`). Called once per worker, in it."""

    def decode_request(self, request: Any) -> Any:
        """Turn the parsed request body into the model's input. Default: the body as it is (or the spec's)."""
        spec = self.spec
        return request if spec is None else spec.decode_request(request)

    def batch(self, inputs: list[Any]) -> Any:
        """Combine decoded inputs into one model input. Default: stack tensors/arrays, else the list."""
        return default_batch(inputs)

    @abstractmethod
    def predict(self, x: Any) -> Any:
        """Run the model. Receives one input, or the output of `batch` when batching."""

    def unbatch(self, output: Any) -> list[Any]:
        """Split a batched output into one output per request. Default: `list(output)`."""
        return default_unbatch(output)

    def encode_response(self, output: Any) -> Any:
        """Turn the model's output into a JSON-able response body. Default: the output as it is (or the spec's)."""
        spec = self.spec
        return output if spec is None else spec.encode_response(output)

    def health(self) -> bool:
        """Extra readiness check for `/health` (may be `async def`). Default: healthy."""
        return True

    def log(self, key: str, value: Any) -> None:
        """Send `(key, value)` to the server's loggers (`LitServer(..., loggers=[...])`) without waiting.

        Call it from any hook or callback. Without loggers the entry is dropped with a warning (once).

        Stability: beta (LitServe's name and arguments).
        """
        sink = self._log_sink
        (warn_unlogged if sink is None else sink)(key, value)


def attach_spec(api: LitAPI, spec: LitSpec) -> None:
    """Make `api` speak `spec`: the spec's path (unless the LitAPI names its own), streaming as it says."""
    from litserve.specs.base import LitSpec

    if not isinstance(spec, LitSpec):
        raise TypeError(f"spec must be a LitSpec such as litserve.OpenAISpec(), got {type(spec).__name__}")
    if api.api_path in ("/predict", spec.api_path):
        api.api_path = spec.api_path
    else:
        spec.api_path = api.api_path  # LitServe allows it; the official clients only call the default path
    api.spec = spec
    api.stream = spec.stream
    spec.pre_setup(api)


def validate_api_settings(api: LitAPI) -> None:
    """Check a LitAPI's settings and say how to fix a bad one (ValueError / TypeError)."""
    size = api.max_batch_size
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"max_batch_size must be an int >= 1, got {size!r}")
    if size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {size}; use 1 to turn batching off")
    timeout = api.batch_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"batch_timeout must be a number of seconds, got {timeout!r}")
    if not math.isfinite(timeout) or timeout < 0:
        raise ValueError(f"batch_timeout must be a finite number of seconds >= 0, got {timeout}")
    path = api.api_path
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"api_path must be a string starting with '/', e.g. '/predict'; got {path!r}")
    if path != "/" and path.endswith("/"):
        raise ValueError(f"api_path must not end with '/', got {path!r}; write {path.rstrip('/')!r}")
    if path in RESERVED_PATHS:
        raise ValueError(f"api_path {path!r} is reserved by the server; pick another, e.g. '/predict'")
    for flag in ("stream", "enable_async"):
        if not isinstance(getattr(api, flag), bool):
            raise TypeError(f"{flag} must be True or False, got {getattr(api, flag)!r}")


def default_batch(inputs: Sequence[Any]) -> Any:
    """Stack torch tensors or numpy arrays into one; pass anything else through as a list."""
    first = inputs[0] if inputs else None
    module = type(first).__module__
    if module.startswith("torch") and all(type(item) is type(first) for item in inputs):
        import torch

        if isinstance(first, torch.Tensor):
            return torch.stack(list(inputs))
    if module.startswith("numpy") and all(type(item) is type(first) for item in inputs):
        import numpy

        if isinstance(first, numpy.ndarray):
            return numpy.stack(list(inputs))
    return list(inputs)


def default_unbatch(output: Any) -> list[Any]:
    """Split a batched output along its first axis."""
    return list(output)
