"""OpenAI embeddings (`POST /v1/embeddings`), as LitServe's `OpenAIEmbeddingSpec` serves them.

`decode_request` receives the request's `input` (a string or a list of them) by default, `predict`
returns one embedding per input (a list, a numpy array or a torch tensor), and `encode_response`
returns `{"embeddings": ..., "prompt_tokens": ..., "total_tokens": ...}` (by default, the embeddings
alone). The answer is built in the worker, with `encoding_format` "float" or "base64" (little-endian
float32, the official client's default).
"""

from __future__ import annotations

import array
import base64
import inspect
import sys
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from litserve.codec import encode_json
from litserve.exceptions import ErrorResponse
from litserve.specs.base import LitSpec

if TYPE_CHECKING:
    from litserve.api import LitAPI

__all__ = ["EmbeddingRequest", "OpenAIEmbeddingSpec"]


class EmbeddingRequest(BaseModel):
    """A `POST /v1/embeddings` body."""

    input: str | list[str] | list[int] | list[list[int]]
    model: str
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    def get_num_items(self) -> int:
        """How many embeddings the client expects back."""
        if isinstance(self.input, str):
            return 1
        if self.input and isinstance(self.input[0], int):
            return 1  # one text given as token ids
        return len(self.input)

    def ensure_list(self) -> list[Any]:
        return self.input if isinstance(self.input, list) else [self.input]


_BATCHED_LIST_INPUT = ErrorResponse(
    400,
    "This endpoint batches requests (max_batch_size > 1), so each request must send one input: "
    "send a single string, or serve it with max_batch_size=1 to accept lists.",
)


def _as_rows(embeddings: Any) -> list[list[float]]:
    """Embeddings as a list of float lists: one row per input (a single vector becomes one row)."""
    tolist = getattr(embeddings, "tolist", None)
    if callable(tolist) and not isinstance(embeddings, list):
        embeddings = tolist()  # numpy arrays, torch tensors
    if isinstance(embeddings, tuple):
        embeddings = list(embeddings)
    if not isinstance(embeddings, list) or not embeddings:
        raise ValueError(f"embeddings must be a non-empty list, array or tensor, got {type(embeddings).__name__}")
    if isinstance(embeddings[0], int | float):
        return [embeddings]
    return [row.tolist() if callable(getattr(row, "tolist", None)) else list(row) for row in embeddings]


def _base64(row: list[float]) -> str:
    packed = array.array("f", row)
    if sys.byteorder != "little":  # pragma: no cover - no big-endian machine runs the tests
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


class OpenAIEmbeddingSpec(LitSpec):
    """Serve a LitAPI as OpenAI's embeddings API (`/v1/embeddings`).

    Example:
        >>> class Embed(LitAPI):
        ...     def predict(self, texts):
        ...         return [[0.1, 0.2]] * (len(texts) if isinstance(texts, list) else 1)
        >>> server = LitServer(Embed(spec=OpenAIEmbeddingSpec()))

    With `max_batch_size > 1`, each request must send one input (the batch is made of requests).

    Stability: beta (LitServe's names and hook mapping).
    """

    request_model = EmbeddingRequest

    def __init__(self) -> None:
        self.api_path = "/v1/embeddings"
        self._is_batched = False

    def pre_setup(self, lit_api: LitAPI) -> None:
        name = type(lit_api).__name__
        for hook in ("predict", "encode_response"):
            function = getattr(lit_api, hook)
            if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function):
                raise ValueError(
                    f"{name}.{hook} yields, but embeddings are not streamed: return all of them at once "
                    "(OpenAIEmbeddingSpec)"
                )
        self._is_batched = lit_api.max_batch_size > 1

    def check_request(self, request: Any) -> ErrorResponse | None:
        if self._is_batched and isinstance(request, EmbeddingRequest) and request.get_num_items() > 1:
            return _BATCHED_LIST_INPUT
        return None

    def decode_request(self, request: Any, context_kwargs: dict[str, Any] | None = None) -> Any:
        return request.input if isinstance(request, EmbeddingRequest) else request

    def encode_response(self, output: Any, context_kwargs: dict[str, Any] | None = None) -> Any:
        return {"embeddings": output}

    def encode_answer(self, encoded: Any, payload: Any, shape: Any) -> bytes:
        if not isinstance(encoded, dict) or "embeddings" not in encoded:
            raise ValueError(
                "OpenAIEmbeddingSpec: encode_response must return a dict with 'embeddings' "
                f"(and optionally 'prompt_tokens', 'total_tokens'), got {type(encoded).__name__}"
            )
        rows = _as_rows(encoded["embeddings"])
        expected = payload.get_num_items()
        if len(rows) != expected:
            raise ValueError(f"OpenAIEmbeddingSpec: {expected} inputs but {len(rows)} embeddings returned")
        as_base64 = payload.encoding_format == "base64"
        data = [
            {"index": i, "object": "embedding", "embedding": _base64(row) if as_base64 else row}
            for i, row in enumerate(rows)
        ]
        prompt_tokens = int(encoded.get("prompt_tokens", 0) or 0)
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": int(encoded.get("total_tokens", 0) or prompt_tokens)}
        return encode_json({"object": "list", "data": data, "model": payload.model, "usage": usage})
