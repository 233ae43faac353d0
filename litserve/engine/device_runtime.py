"""A worker's device state: on CUDA, its device and its own stream, current wherever its hooks run.

PyTorch keeps the current device and the current stream per thread. A worker's hooks do not all run
on the worker thread: `asyncio.to_thread` in an async hook runs on the loop's default executor, and
`health()` runs on the server's event loop (or on a worker process's reader thread). `DeviceRuntime`
makes the worker's device and stream current in each of those places, and orders the stream's work
against the points where data leaves it:

- `bind_thread()`: the worker thread itself, for good (setup() included, so weights are made on the
  stream that will read them); `after_setup()` then waits for the whole device, so the first request
  never sees weights still being copied by any stream.
- `executor()`: a default executor for an async worker's loop whose threads are bound the same way.
- `entered()` / `on_device(awaitable)`: for a call on a thread that is not the worker's, restored after.
- `settle()`: before an answer is encoded, wait for what the stream has queued (a copy made with
  `non_blocking=True` must have landed before `encode_response` reads it).
- `release()`: after the worker ends, or after a failed setup(): give cached memory back to the driver.

On CPU and MPS every one of these is free: no stream, nothing entered, nothing waited for.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from collections.abc import Awaitable, Callable, Generator, Iterator
from typing import Any, TypeVar, final

__all__ = ["DeviceRuntime"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()


@final
class DeviceRuntime:
    """Per-worker device state: on CUDA, the worker's device index and its own stream."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.sync_failure: BaseException | None = None  # the stream could not synchronize after a batch
        self._stream: Any = None

    @property
    def stream(self) -> Any:
        """The worker's `torch.cuda.Stream`, or None (CPU, MPS, or not bound yet)."""
        return self._stream

    def bind_thread(self) -> None:
        """On the worker thread, before setup(): make the device current and the worker's stream its current
        stream, for the rest of this thread's life."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.set_device(self.device)
            self._stream = torch.cuda.Stream(device=self.device)  # type: ignore[no-untyped-call]
            torch.cuda.set_stream(self._stream)

    def bind_other_thread(self) -> None:
        """Make this worker's device and stream current on the calling thread (an executor's thread)."""
        if self._stream is not None:
            import torch

            torch.cuda.set_device(self._stream.device)
            torch.cuda.set_stream(self._stream)

    def after_setup(self) -> None:
        """Wait until every stream of the device finished what setup() queued (the worker is ready after)."""
        if self._stream is not None:
            import torch

            torch.cuda.synchronize(self._stream.device)

    def executor(self, name: str) -> concurrent.futures.ThreadPoolExecutor | None:
        """A default executor for the worker's event loop whose threads run on this device and stream."""
        if self._stream is None:
            return None
        return concurrent.futures.ThreadPoolExecutor(
            thread_name_prefix=f"{name}-executor", initializer=self.bind_other_thread
        )

    def entered(self) -> contextlib.AbstractContextManager[None]:
        """On any thread, for a moment: this worker's device and stream are current, then what was before."""
        if self._stream is None:
            return _NOTHING
        return self._entered()

    @contextlib.contextmanager
    def _entered(self) -> Iterator[None]:
        import torch

        with torch.cuda.device(self._stream.device), torch.cuda.stream(self._stream):
            yield

    def on_device(self, awaitable: Awaitable[T]) -> Awaitable[T]:
        """`awaitable`, stepped with this worker's device and stream current each time it runs.

        For a coroutine driven by an event loop the worker does not own: between its steps other tasks
        of that loop run with their own device and stream.
        """
        if self._stream is None:
            return awaitable
        return _Stepped(awaitable, self.entered)

    def settle_hook(self) -> Callable[[Any, Any], None] | None:
        """What the pipeline calls before encoding (see `Hooks.settle`): None when there is nothing to wait for."""
        if self._stream is None:
            return None
        return lambda _value, _context: self.settle()

    def settle(self) -> None:
        """Block until the work queued on the worker's stream so far is done (later work is not waited for)."""
        stream = self._stream
        if stream is not None:
            import torch

            event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            event.record(stream)
            event.synchronize()

    def running(self) -> contextlib.AbstractContextManager[None]:
        """Around a batch: its hooks run on the worker's stream (again, should a hook have changed the
        thread's stream), and whatever happens in it, the stream's work is done when it is left, so nothing
        the batch's requests hold (a caller's CUDA tensors) is freed while the stream still reads it."""
        if self._stream is None:
            return _NOTHING  # CPU and MPS: nothing to enter, and nothing allocated per batch
        return self._running()

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        import torch

        stream = self._stream
        try:
            with torch.cuda.stream(stream):
                yield
        finally:
            try:
                stream.synchronize()
            except Exception as exc:  # a context broken by a sticky error cannot synchronize: the batch's
                # answers passed their own wait before encoding; the worker reads this and stops
                self.sync_failure = exc
                logger.exception("could not synchronize %s's stream after a batch", self.device)

    def release(self) -> None:
        """Drop the stream and return cached device memory to the driver (call after the model is gone).

        Never raises: a device with a sticky error cannot even synchronize, and the worker is ending anyway.
        """
        stream, self._stream = self._stream, None
        if stream is None:
            return
        import torch

        try:
            stream.synchronize()
            torch.cuda.empty_cache()
        except Exception as exc:
            logger.warning("could not release %s: %s: %s", self.device, type(exc).__name__, exc)


@final
class _Stepped(Awaitable[T]):
    __slots__ = ("_awaitable", "_enter")

    def __init__(self, awaitable: Awaitable[T], enter: Callable[[], contextlib.AbstractContextManager[None]]) -> None:
        self._awaitable, self._enter = awaitable, enter

    def __await__(self) -> Generator[Any, Any, T]:
        steps = self._awaitable.__await__()
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            with self._enter():
                try:
                    yielded = steps.throw(thrown) if thrown is not None else steps.send(sent)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
            sent, thrown = None, None
            try:
                sent = yield yielded
            except BaseException as exc:  # noqa: B036 - handed to the awaitable, which decides
                thrown = exc
