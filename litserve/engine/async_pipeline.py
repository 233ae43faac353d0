"""The async twin of `pipeline`, for `LitAPI(enable_async=True)`: each hook may be sync or async.

Everything that does not await (binding hooks, batch-size checks, chunk encoding, stream fan-out) is
shared with `pipeline`; only the order of awaits lives here.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from litserve.codec import encode_json
from litserve.engine.messages import InferenceRequest, Outcome
from litserve.engine.pipeline import Fail, Hook, Hooks, StreamFanout, check_batch_size, close_quietly, decode_failed

__all__ = ["answer_async", "stream_async"]


async def _call(hook: Hook, value: Any, context: Any) -> Any:
    result = hook(value, context)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _iterate(source: Any) -> AsyncIterator[Any]:
    """Iterate an async iterable or a plain one."""
    if hasattr(source, "__aiter__"):
        async for item in source:
            yield item
    else:
        for item in source:
            yield item


async def _as_lists(source: Any) -> AsyncIterator[list[Any]]:
    async for step in _iterate(source):
        yield list(step)


async def _aclose_quietly(*generators: Any) -> None:
    for generator in generators:
        aclose = getattr(generator, "aclose", None)
        if callable(aclose):
            await aclose()
        else:
            close_quietly(generator)


async def _decode_all(
    hooks: Hooks, requests: Sequence[InferenceRequest], fail: Fail
) -> tuple[list[Any], list[int], list[tuple[int, Outcome]]]:
    inputs: list[Any] = []
    live: list[int] = []
    failed: list[tuple[int, Outcome]] = []
    for i, request in enumerate(requests):
        try:
            inputs.append(await _call(hooks.decode_request, request.payload, request.context))
            live.append(i)
        except Exception as exc:
            failed.append((i, fail(exc)))
    return inputs, live, failed


async def answer_async(hooks: Hooks, requests: Sequence[InferenceRequest], fail: Fail) -> list[Outcome]:
    """`pipeline.answer` with awaits: decode and encode errors fail only their own item."""
    outcomes: list[Outcome | None] = [None] * len(requests)
    inputs, live, failed = await _decode_all(hooks, requests, fail)
    for i, outcome in failed:
        outcomes[i] = outcome
    if live:
        contexts = hooks.contexts([requests[i] for i in live])
        try:
            batched = await _call(hooks.batch, inputs, contexts)
            predicted = await _call(hooks.predict, batched, contexts)
            outputs = check_batch_size(await _call(hooks.unbatch, predicted, contexts), len(live))
        except Exception as exc:
            failure = fail(exc)
            for i in live:
                outcomes[i] = failure
        else:
            for i, output in zip(live, outputs, strict=True):
                try:
                    encoded = await _call(hooks.encode_response, output, requests[i].context)
                    outcomes[i] = Outcome(200, encode_json(encoded))
                except Exception as exc:
                    outcomes[i] = fail(exc)
    return [outcome if outcome is not None else fail(RuntimeError("unanswered request")) for outcome in outcomes]


async def stream_async(
    hooks: Hooks, requests: Sequence[InferenceRequest], fail: Fail, clock: Callable[[], float]
) -> None:
    """`pipeline.stream` with awaits: predict/encode_response may be async generators."""
    inputs, live_positions, failed = await _decode_all(hooks, requests, fail)
    decode_failed(requests, failed)
    if not live_positions:
        return
    live = [requests[i] for i in live_positions]
    fanout = StreamFanout(live, clock, may_block=False)
    contexts = hooks.contexts(live)
    predicted: Any = None
    per_step: Any = None
    encoded: Any = None
    try:
        predicted = await _call(hooks.predict, await _call(hooks.batch, inputs, contexts), contexts)
        if hooks.is_batched:
            per_step = await _call(hooks.unbatch, predicted, contexts) if hooks.has_custom_unbatch else None
            per_step = per_step if per_step is not None else _as_lists(predicted)
            encoded = await _call(hooks.encode_response, per_step, contexts)
            async for step in _iterate(encoded):
                if not fanout.send_step(check_batch_size(step, len(live)), True):
                    break
        else:
            encoded = await _call(hooks.encode_response, predicted, contexts)
            async for chunk in _iterate(encoded):
                if not fanout.send_step((chunk,), False):
                    break
    except Exception as exc:
        fanout.fail(fail(exc))
    finally:
        await _aclose_quietly(encoded, per_step, predicted)
    fanout.finish()
