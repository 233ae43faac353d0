"""API specifications a LitAPI can speak: OpenAI chat completions and embeddings (LitServe-compatible)."""

from litserve.specs.base import LitSpec as LitSpec
from litserve.specs.openai import OpenAISpec as OpenAISpec
from litserve.specs.openai_embedding import EmbeddingRequest as EmbeddingRequest
from litserve.specs.openai_embedding import OpenAIEmbeddingSpec as OpenAIEmbeddingSpec
from litserve.specs.openai_models import ChatCompletionRequest as ChatCompletionRequest
from litserve.specs.openai_models import ChatMessage as ChatMessage

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "EmbeddingRequest",
    "LitSpec",
    "OpenAIEmbeddingSpec",
    "OpenAISpec",
]
