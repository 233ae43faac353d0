"""What a pipeline asks its driver to do, and the two drivers: one for plain hooks, one for async hooks.

The request pipeline (`engine.pipeline`) is written once, as a generator that yields a step each time
it needs a LitAPI hook called or a user's stream drained, and receives the result (or has the
hook's exception thrown in at that point). `run_sync` performs the steps on the worker thread;
`run_async` performs them in the worker's event loop, awaiting whatever a hook returns that is
awaitable. Nothing else differs between a synchronous and an `enable_async=True` LitAPI.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, TypeVar, final

__all__ = ["Call", "Close", "Drain", "Program", "Step", "StepLists", "call", "run_async", "run_sync"]

R = TypeVar("R")


# Call a bound hook: `hook(value, context)`. The most frequent step, so a plain tuple, not an object.
Call = tuple[Callable[[Any, Any], Any], Any, Any]


def call(hook: Callable[[Any, Any], Any], value: Any, context: Any) -> Call:
    return (hook, value, context)


@final
class Drain:
    """Hand every item of what a hook returned (a generator, an async generator or any iterable) to
    `send`, in order, until it is exhausted or `send` returns False: one step for a whole stream."""

    __slots__ = ("send", "source")

    def __init__(self, source: Any, send: Callable[[Any], bool]) -> None:
        self.source, self.send = source, send

    def run(self) -> None:
        send = self.send
        for item in self.source:
            if not send(item):
                return

    async def run_async(self) -> None:
        send = self.send
        if hasattr(self.source, "__aiter__"):
            async for item in self.source:
                if not send(item):
                    return
        else:
            for item in self.source:
                if not send(item):
                    return


@final
class StepLists:
    """Turn a stream of batch outputs into a stream of lists (LitServe's default streaming unbatch)."""

    __slots__ = ("source",)

    def __init__(self, source: Any) -> None:
        self.source = source

    def run(self) -> Any:
        return map(list, self.source)

    async def run_async(self) -> Any:
        return _as_lists(self.source) if hasattr(self.source, "__aiter__") else map(list, self.source)


@final
class Close:
    """Close the user's generators now, so their `finally` blocks run on this worker, not at collection."""

    __slots__ = ("generators",)

    def __init__(self, *generators: Any) -> None:
        self.generators = generators

    def run(self) -> None:
        for generator in self.generators:
            close = getattr(generator, "close", None)
            if callable(close):
                close()

    async def run_async(self) -> None:
        for generator in self.generators:
            aclose = getattr(generator, "aclose", None)
            close = getattr(generator, "close", None)
            if callable(aclose):
                await aclose()
            elif callable(close):
                close()


Step = Call | Drain | StepLists | Close
Program = Generator[Step, Any, R]


def run_sync(program: Program[R]) -> R:
    """Perform every step of `program` on this thread; a step's exception is thrown back into it."""
    send, throw = program.send, program.throw
    try:
        step = send(None)
        while True:
            try:
                result = step[0](step[1], step[2]) if isinstance(step, tuple) else step.run()
            except BaseException as exc:  # noqa: B036 - the program decides; it re-raises what it does not handle
                step = throw(exc)
            else:
                step = send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(program: Program[R]) -> R:
    """`run_sync` in an event loop: a hook may return an awaitable, an iterator may be asynchronous."""
    send, throw = program.send, program.throw
    try:
        step = send(None)
        while True:
            try:
                if isinstance(step, tuple):
                    result = step[0](step[1], step[2])
                    if inspect.isawaitable(result):
                        result = await result
                else:
                    result = await step.run_async()
            except BaseException as exc:  # noqa: B036 - as in run_sync; a cancellation goes back in and out again
                step = throw(exc)
            else:
                step = send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def _as_lists(source: Any) -> AsyncIterator[list[Any]]:
    async for step in source:
        yield list(step)
