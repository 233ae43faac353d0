"""Small example LitAPIs, under LitServe's names, for tests, docs and first experiments.

`SimpleLitAPI` squares `{"input": x}` into `{"output": x**2}`; the others show batching, torch and
streaming. Importing this package imports neither torch nor numpy: the examples that need them
import them inside their hooks.

Stability: beta (LitServe's names and answers).
"""

# No `from __future__ import annotations` here: it would export the name `annotations`.
# One import line per example module; further modules (the OpenAI spec examples) add theirs and
# extend `__all__`.
from litserve.test_examples.simple_example import SimpleBatchedAPI as SimpleBatchedAPI
from litserve.test_examples.simple_example import SimpleLitAPI as SimpleLitAPI
from litserve.test_examples.simple_example import SimpleStreamAPI as SimpleStreamAPI
from litserve.test_examples.simple_example import SimpleTorchAPI as SimpleTorchAPI

__all__ = [
    "SimpleBatchedAPI",
    "SimpleLitAPI",
    "SimpleStreamAPI",
    "SimpleTorchAPI",
]
