"""What watches a worker: the server's callbacks around its hooks, and where `LitAPI.log` entries go.

Nothing here runs unless the server has callbacks: without them a worker binds its hooks as always
and the request path does not change.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, final

from litserve.api import LitAPI
from litserve.callbacks import Callback, CallbackRunner, EventTypes, overrides
from litserve.engine.pipeline import Hook, Hooks
from litserve.loggers import LogSink

__all__ = ["NO_OBSERVERS", "Observers", "observe_hooks"]


@final
@dataclass(frozen=True, slots=True)
class Observers:
    """A worker's callbacks (shared by its threads) and the sink its LitAPI's `log()` writes to."""

    callbacks: tuple[Callback, ...] = ()
    log: LogSink | None = None  # None: LitAPI.log warns once that there are no loggers


NO_OBSERVERS = Observers()


_AROUND = {
    "decode_request": (EventTypes.BEFORE_DECODE_REQUEST, EventTypes.AFTER_DECODE_REQUEST),
    "predict": (EventTypes.BEFORE_PREDICT, EventTypes.AFTER_PREDICT),
    "encode_response": (EventTypes.BEFORE_ENCODE_RESPONSE, EventTypes.AFTER_ENCODE_RESPONSE),
}


def observe_hooks(hooks: Hooks, runner: CallbackRunner, api: LitAPI) -> Hooks:
    """`hooks` with the callbacks' before/after events around decode_request, predict and encode_response;
    only the hooks whose events some callback overrides are wrapped."""
    wrapped: dict[str, Any] = {
        name: _around(getattr(hooks, name), runner, api, before, after)
        for name, (before, after) in _AROUND.items()
        if overrides(runner.callbacks, before, after)
    }
    return dataclasses.replace(hooks, **wrapped) if wrapped else hooks


def _around(hook: Hook, runner: CallbackRunner, api: LitAPI, before: EventTypes, after: EventTypes) -> Hook:
    def done() -> None:
        runner.trigger_event(after.value, lit_api=api)

    def observed(value: Any, context: Any) -> Any:
        runner.trigger_event(before.value, lit_api=api)
        result = hook(value, context)
        # An async hook finishes when awaited; a streaming one when its stream is exhausted.
        if inspect.isawaitable(result):
            return _then(result, done)
        if inspect.isgenerator(result):
            return _then_exhausted(result, done)
        if inspect.isasyncgen(result):
            return _then_async_exhausted(result, done)
        done()
        return result

    return observed


async def _then(result: Awaitable[Any], done: Callable[[], None]) -> Any:
    value = await result
    done()
    return value


def _then_exhausted(stream: Iterator[Any], done: Callable[[], None]) -> Iterator[Any]:
    yield from stream  # closing this generator closes the user's too
    done()


async def _then_async_exhausted(stream: AsyncIterator[Any], done: Callable[[], None]) -> AsyncIterator[Any]:
    try:
        async for item in stream:
            yield item
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()  # its `finally` blocks run now, as without callbacks
    done()
