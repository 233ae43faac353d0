"""The engine: queues, the batching policy, worker threads and the one doorway back to the loop.

Nothing here knows HTTP. The web layer puts `InferenceRequest`s on a `RequestQueue`; workers
collect batches, run the LitAPI hooks and hand each `Outcome` back through `bridge`.
"""
