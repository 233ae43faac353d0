"""LitSpec: an API specification a LitAPI can speak instead of its own JSON (e.g. OpenAI's)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from litserve.codec import encode_json
from litserve.exceptions import ErrorResponse

if TYPE_CHECKING:
    from litserve.api import LitAPI
    from litserve.engine.answer_codec import ChunkEncoder

__all__ = ["LitSpec"]


class LitSpec:
    """The base of API specifications, used as `LitAPI(spec=OpenAISpec())`.

    A spec owns its endpoint's path, its request model (validated before a request is queued), what
    the LitAPI's default `decode_request`/`encode_response` do, and how answers are encoded (in the
    worker, so the HTTP loop only forwards bytes). The routes that speak it live in `litserve.web`.

    Stability: beta (the names LitServe users call are LitServe's).
    """

    api_path: str = "/predict"
    request_model: type[BaseModel] | None = None

    @property
    def stream(self) -> bool:
        """Whether the LitAPI's predict must be a generator under this spec."""
        return False

    def pre_setup(self, lit_api: LitAPI) -> None:
        """Check that `lit_api` fits the spec (raise ValueError saying what to change); called at construction."""

    def check_request(self, request: Any) -> ErrorResponse | None:
        """A validated request the spec refuses before queueing it (the answer), else None."""
        return None

    def decode_request(self, request: Any, context_kwargs: dict[str, Any] | None = None) -> Any:
        """What the LitAPI's default `decode_request` returns for a validated request."""
        return request

    def encode_response(self, output: Any, context_kwargs: dict[str, Any] | None = None) -> Any:
        """What the LitAPI's default `encode_response` returns for predict's output."""
        return output

    def encode_answer(self, encoded: Any, payload: Any, shape: Any) -> bytes:
        """The 200 body of a non-streamed request (see `litserve.engine.answer_codec`)."""
        return encode_json(encoded)

    def open_stream(self, payload: Any, shape: Any) -> ChunkEncoder:
        """The encoder of one streamed request."""
        raise NotImplementedError(f"{type(self).__name__} does not stream")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_path={self.api_path!r})"
