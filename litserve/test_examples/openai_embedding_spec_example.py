"""Embedding APIs for `OpenAIEmbeddingSpec` that LitServe's tests (and ours) serve: random 768-d vectors."""

from __future__ import annotations

from typing import Any

from litserve.api import LitAPI

__all__ = ["TestEmbedAPI", "TestEmbedAPIWithUsage", "TestEmbedBatchedAPI"]

DIMENSIONS = 768


def _random_rows(count: int) -> list[list[float]]:
    import numpy as np  # here, not at import: litserve.test_examples imports without numpy

    rows: list[list[float]] = np.random.rand(count, DIMENSIONS).tolist()
    return rows


class TestEmbedAPI(LitAPI):
    """One random 768-dimensional embedding per input text."""

    __test__ = False  # not a pytest test class, despite its (LitServe's) name

    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, x: Any) -> list[list[float]]:
        return _random_rows(len(x) if isinstance(x, list) else 1)

    def encode_response(self, output: Any) -> dict[str, Any]:
        return {"embeddings": output}


class TestEmbedBatchedAPI(TestEmbedAPI):
    """Batched: predict receives the inputs of several requests."""

    def predict(self, batch: Any) -> list[list[list[float]]]:  # type: ignore[override]
        return [_random_rows(len(x) if isinstance(x, list) else 1) for x in batch]


class TestEmbedAPIWithUsage(TestEmbedAPI):
    """Reports token counts with its embeddings."""

    def encode_response(self, output: Any) -> dict[str, Any]:
        return {"embeddings": output, "prompt_tokens": 10, "total_tokens": 10}
