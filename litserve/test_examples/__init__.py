"""Small example LitAPIs, under LitServe's names, for tests, docs and first experiments.

`SimpleLitAPI` squares `{"input": x}` into `{"output": x**2}`; the others show batching, torch and
streaming. `TestAPI` and its siblings answer OpenAI chat requests (serve them with `spec=OpenAISpec()`);
the embedding examples are imported by their module's path, `litserve.test_examples.
openai_embedding_spec_example`, as in LitServe. Importing this package imports neither torch nor numpy:
the examples that need them import them inside their hooks.

Stability: beta (LitServe's names and answers).
"""

# No `from __future__ import annotations` here: it would export the name `annotations`.
# The exports are LitServe's `litserve.test_examples` list, one per line.
from litserve.test_examples.openai_spec_example import OpenAIBatchContext as OpenAIBatchContext
from litserve.test_examples.openai_spec_example import TestAPI as TestAPI
from litserve.test_examples.openai_spec_example import TestAPIWithCustomEncode as TestAPIWithCustomEncode
from litserve.test_examples.openai_spec_example import TestAPIWithStructuredOutput as TestAPIWithStructuredOutput
from litserve.test_examples.openai_spec_example import TestAPIWithToolCalls as TestAPIWithToolCalls
from litserve.test_examples.simple_example import SimpleBatchedAPI as SimpleBatchedAPI
from litserve.test_examples.simple_example import SimpleLitAPI as SimpleLitAPI
from litserve.test_examples.simple_example import SimpleStreamAPI as SimpleStreamAPI
from litserve.test_examples.simple_example import SimpleTorchAPI as SimpleTorchAPI

__all__ = [
    "OpenAIBatchContext",
    "SimpleBatchedAPI",
    "SimpleLitAPI",
    "SimpleStreamAPI",
    "SimpleTorchAPI",
    "TestAPI",
    "TestAPIWithCustomEncode",
    "TestAPIWithStructuredOutput",
    "TestAPIWithToolCalls",
]
