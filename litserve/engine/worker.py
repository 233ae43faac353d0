"""One worker thread: its own LitAPI copy, setup() once, then batches until its queue closes.

A synchronous LitAPI runs one batch at a time on the worker thread. With `enable_async=True` the
worker thread runs its own event loop instead, and a feeder thread collects batches and hands them
to that loop through the bridge, so one worker serves many requests at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import final

from litserve.api import LitAPI
from litserve.callbacks import CallbackRunner, EventTypes
from litserve.codec import NonFiniteNumberError
from litserve.engine import bridge
from litserve.engine.batcher import Batch, RequestSource, collect_batch
from litserve.engine.bridge import LoopHandle, deliver_all
from litserve.engine.cpu_hint import CpuMeter
from litserve.engine.device_errors import clear_frames, is_sticky_device_error
from litserve.engine.device_runtime import DeviceRuntime
from litserve.engine.messages import InferenceRequest, Outcome
from litserve.engine.observe import NO_OBSERVERS, Observers, observe_hooks
from litserve.engine.pipeline import BatchSizeMismatchError, Hooks, answer, answer_async, stream, stream_async
from litserve.engine.pool import Endpoint, Placement, WorkerHandle, copy_api
from litserve.error_info import ErrorInfo
from litserve.exceptions import BATCH_SIZE_MISMATCH, INTERNAL_ERROR, ErrorResponse, error_response
from litserve.hooks import HookPlan
from litserve.status import ErrorLog, Verdict, WorkerCounters, WorkerState

__all__ = ["ASYNC_MAX_BATCHES_IN_FLIGHT", "Worker", "thread_workers"]

logger = logging.getLogger(__name__)

# How many batches one async worker runs at once; the feeder takes no more from the queue until one
# finishes, so queue depth, max_queue_size and deadlines keep their meaning under load.
ASYNC_MAX_BATCHES_IN_FLIGHT = 512


@final
class Worker:
    """Runs `api`'s hooks for requests from `source` on one thread named `name`.

    The thread is a daemon so a predict that never returns cannot keep the interpreter alive;
    `LitServer.stop()` still joins it whenever it can.
    """

    def __init__(
        self,
        name: str,
        api: LitAPI,
        device: str,
        source: RequestSource,
        errors: ErrorLog,
        plan: HookPlan,
        clock: Callable[[], float] = time.monotonic,
        observers: Observers = NO_OBSERVERS,
        on_batch: Callable[[int], None] | None = None,
        others_coming: Callable[[], bool] | None = None,
        on_device_failure: Callable[[BaseException], None] | None = None,
        cpu_meter: CpuMeter | None = None,
    ) -> None:
        self.name = name
        self._cpu_meter = cpu_meter  # thread mode: hints at worker processes when the hooks are CPU-bound
        self.device = device
        self._path = api.api_path
        self._on_batch = on_batch  # told each batch's size (a worker process reports them to the server)
        self.counters = WorkerCounters()
        self._api: LitAPI | None = api
        self._runtime = DeviceRuntime(device)
        # A sticky CUDA error seen in a hook (`engine.device_errors`): the worker serves no more batches.
        self._device_failure: BaseException | None = None
        self._on_device_failure = on_device_failure  # a worker process exits, to be started again
        self._device_failure_told = False
        self._source = source
        self._others_coming = others_coming  # the adaptive batch window's signal (see engine.batcher)
        self._errors = errors
        self._plan = plan
        self._clock = clock
        self._observers = observers
        self._callbacks: CallbackRunner | None = None
        if observers.callbacks:
            self._callbacks = CallbackRunner(observers.callbacks, on_error=self._callback_failed)
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._feeder: threading.Thread | None = None

    @property
    def ready(self) -> concurrent.futures.Future[None]:
        """Resolves when setup() finished, or carries setup()'s exception."""
        return self._ready

    restarts = 0

    @property
    def pid(self) -> int | None:
        return None  # runs in the server's own process

    def is_healthy(self) -> bool | Awaitable[bool]:
        """Past setup(), its device works, and the LitAPI's own `health()` agrees (which may be a coroutine).

        `health()` runs on the caller's thread (the server's loop, a worker process's reader) with this
        worker's device and stream current, as its other hooks do.
        """
        api = self._api
        if api is None or self._device_failure is not None:
            return False
        if self.counters.state not in (WorkerState.IDLE, WorkerState.BUSY):
            return False
        with self._runtime.entered():
            verdict = api.health()
        return self._runtime.on_device(verdict) if inspect.isawaitable(verdict) else verdict

    def start(self, loop: LoopHandle | None = None) -> None:
        """Start the thread (it answers through each request's reply, so it needs no loop of its own)."""
        self._thread.start()

    def loop_ended(self) -> bool:
        """A worker thread answers through its requests' replies and needs no loop: it goes on."""
        return False

    def join(self, timeout_s: float | None) -> bool:
        """Wait for the thread (and its feeder) to end; True if they did."""
        if self._thread.ident is None:
            return True
        deadline_s = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in (self._feeder, self._thread):
            if thread is not None and thread.ident is not None:
                thread.join(None if deadline_s is None else max(0.0, deadline_s - time.monotonic()))
        return not self._thread.is_alive() and (self._feeder is None or not self._feeder.is_alive())

    # --- the thread -------------------------------------------------------------------------------------

    def _main(self) -> None:
        api = self._api
        assert api is not None
        try:
            self._runtime.bind_thread()
            api.device = self.device
            if self._observers.log is not None:
                api._log_sink = self._observers.log
            self._setup(api)
        except BaseException as exc:
            self.counters.state = WorkerState.FAILED
            self._api = None
            del api
            self._ready.set_exception(self._free_failed_setup(exc))
            return
        self.counters.state = WorkerState.IDLE
        self._ready.set_result(None)
        try:
            self._serve(api)
        finally:
            self.counters.state = WorkerState.STOPPED if self._device_failure is None else WorkerState.FAILED
            # The last references to the model go before the device's cached memory is released.
            self._api = None
            del api
            if self._runtime.stream is not None:  # a CUDA worker: free the model's blocks first
                gc.collect()
            self._runtime.release()

    def _setup(self, api: LitAPI) -> None:
        callbacks = self._callbacks
        if callbacks is not None:
            callbacks.trigger_event(EventTypes.BEFORE_SETUP.value, lit_api=api)
        api.setup(self.device)  # on the worker's stream (see DeviceRuntime.bind_thread)
        self._runtime.after_setup()  # the worker is not ready before setup()'s device work is done
        if callbacks is not None:
            callbacks.trigger_event(EventTypes.AFTER_SETUP.value, lit_api=api)

    def _free_failed_setup(self, exc: BaseException) -> BaseException:
        """Let go of what a failed setup() built, keeping the error and its traceback.

        The exception's traceback holds setup()'s frames, and they hold the half-built model: a notebook
        that keeps the error (`sys.last_value`) would keep the model's memory, and a retry would run out
        again. The frames' variables are cleared (the traceback still prints: file, line, code), then
        cached device memory is returned to the driver.
        """
        clear_frames(exc)
        gc.collect()
        self._runtime.release()
        return exc

    def _callback_failed(self, where: str, exc: BaseException) -> None:
        self._errors.record(f"{self.name}/{where}", exc)

    def _serve(self, api: LitAPI) -> None:
        hooks = Hooks.bind(api, self._plan, settle=self._runtime.settle_hook(), worker=self.name)
        if self._callbacks is not None:  # only then: without callbacks the hooks are called as bound
            hooks = observe_hooks(hooks, self._callbacks, api)
        if api.enable_async:
            self._serve_async(api, hooks)
        else:
            self._serve_sync(api, hooks)

    def _next_batch(self, api: LitAPI) -> Batch | None:
        batch = collect_batch(
            self._source, api.max_batch_size, float(api.batch_timeout), self._clock, self._others_coming
        )
        if batch is not None:
            if batch.requests:
                self.counters.batch_sizes[len(batch.requests)] += 1
                if self._on_batch is not None:
                    self._on_batch(len(batch.requests))
            for request, reason in batch.dropped:
                request.reply.abandon(reason)
                self.counters.count_drop(reason.verdict)
        return batch

    def _serve_sync(self, api: LitAPI, hooks: Hooks) -> None:
        is_stream = api.stream
        while (batch := self._next_batch(api)) is not None:
            requests = batch.requests
            if not requests:
                continue
            self.counters.state = WorkerState.BUSY
            meter = self._cpu_meter
            cpu_s = time.thread_time() if meter is not None and meter.active else None
            try:
                with self._runtime.running():  # answers leave only once the stream's work is done
                    if is_stream:
                        self._count(stream(hooks, requests, self._failure))
                        outcomes = None
                    else:
                        outcomes = answer(hooks, requests, self._failure)
                if outcomes is not None:
                    self._deliver(requests, outcomes)
            except BaseException as exc:  # noqa: B036 - even SystemExit from a hook must not end the worker
                self._internal_error(requests, exc)
            if cpu_s is not None and meter is not None:
                meter.ran(time.thread_time() - cpu_s, len(requests))
            if self._runtime.sync_failure is not None:
                self._note_device_error(self._runtime.sync_failure)
            if self._device_failure is not None:
                self._device_failed()
                return
            self.counters.state = WorkerState.IDLE

    def _serve_async(self, api: LitAPI, hooks: Hooks) -> None:
        loop = asyncio.new_event_loop()
        capacity = threading.BoundedSemaphore(ASYNC_MAX_BATCHES_IN_FLIGHT)
        in_flight: set[asyncio.Task[None]] = set()
        closed = asyncio.Event()  # created for this loop; set through the bridge by the feeder
        is_stream = api.stream

        async def run(requests: Sequence[InferenceRequest]) -> None:
            try:
                await self._run_async(hooks, requests, is_stream)
            finally:
                capacity.release()
                if len(in_flight) <= 1 and self._device_failure is None:
                    self.counters.state = WorkerState.IDLE

        def spawn(requests: Sequence[InferenceRequest]) -> None:
            # Runs on this worker's loop, scheduled by the feeder through the bridge.
            task = loop.create_task(run(requests))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

        def feed() -> None:
            while True:
                capacity.acquire()
                batch = self._next_batch(api) if self._device_failure is None else None
                if batch is None:
                    bridge.call_in_loop(loop, closed.set)
                    return
                if not batch.requests:
                    capacity.release()
                    continue
                bridge.call_in_loop(loop, spawn, batch.requests)

        async def serve() -> None:
            await closed.wait()
            while in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

        self._feeder = threading.Thread(target=feed, name=f"{self.name}-feeder", daemon=True)
        self._run_loop(loop, self._feeder, serve())

    def _run_loop(self, loop: asyncio.AbstractEventLoop, feeder: threading.Thread, serve: Awaitable[None]) -> None:
        executor = self._runtime.executor(self.name)  # asyncio.to_thread in a hook: same device and stream
        if executor is not None:
            loop.set_default_executor(executor)
        try:
            with self._runtime.running():
                feeder.start()
                loop.run_until_complete(serve)
                loop.run_until_complete(loop.shutdown_asyncgens())
                if executor is not None:  # ours: its threads end before the worker counts as ended
                    loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    async def _run_async(self, hooks: Hooks, requests: Sequence[InferenceRequest], is_stream: bool) -> None:
        if self._device_failure is None:
            self.counters.state = WorkerState.BUSY
        try:
            if is_stream:
                self._count(await stream_async(hooks, requests, self._failure))
            else:
                self._deliver(requests, await answer_async(hooks, requests, self._failure))
        except asyncio.CancelledError as exc:  # answer the batch, then let the cancellation go on
            self._internal_error(requests, exc)
            raise
        except BaseException as exc:  # noqa: B036 - even SystemExit from a hook must not end the worker
            self._internal_error(requests, exc)
        if self._device_failure is not None:  # now, not when the loop ends: the feeder may wait for requests
            self._device_failed()

    # --- answers ----------------------------------------------------------------------------------------

    def _count(self, verdicts: Sequence[Verdict]) -> None:
        for verdict in verdicts:
            self.counters.count(verdict)

    def _deliver(self, requests: Sequence[InferenceRequest], outcomes: list[Outcome]) -> None:
        self._count([outcome.verdict for outcome in outcomes])
        if len(requests) == 1:
            requests[0].reply.deliver(outcomes[0])
        else:
            deliver_all([(request.reply, outcome) for request, outcome in zip(requests, outcomes, strict=True)])

    def _internal_error(self, requests: Sequence[InferenceRequest], exc: BaseException) -> None:
        """Something escaped the pipeline (a BaseException from a hook, or a bug of ours): fail the batch."""
        self._note_device_error(exc)
        self._errors.record(self.name, exc)
        logger.error("worker %s failed to answer a batch", self.name, exc_info=exc)
        failure = Outcome.failure(INTERNAL_ERROR, error=ErrorInfo.of(exc))
        for request in requests:
            self.counters.count(failure.verdict)
            request.reply.deliver(failure)

    def _note_device_error(self, exc: BaseException) -> None:
        if self._device_failure is None and is_sticky_device_error(exc):
            self._device_failure = exc

    def _device_failed(self) -> None:
        """After the batch that hit a sticky device error was answered: this worker serves no more.

        Called once per batch that ends after the failure (an async worker may have several in flight)."""
        exc = self._device_failure
        if exc is None or self._device_failure_told:
            return
        self._device_failure_told = True
        self.counters.state = WorkerState.FAILED
        logger.error(
            "%s: %s is broken by a sticky CUDA error (%s); this worker stops serving and /health answers 503. "
            "Only a new process gets a working device: restart the server (worker_mode='process' restarts "
            "worker processes by itself)",
            self.name,
            self.device,
            exc,
        )
        if self._on_device_failure is not None:
            self._on_device_failure(exc)

    def _failure(self, exc: Exception) -> Outcome:
        self._note_device_error(exc)
        answer: ErrorResponse = BATCH_SIZE_MISMATCH if isinstance(exc, BatchSizeMismatchError) else error_response(exc)
        if isinstance(exc, NonFiniteNumberError):  # not a crash of a hook: its output is not JSON
            where = f"{self.name} ({self._path} encode_response)"
            self._errors.record(where, exc)
            logger.error("encode_response of %s returned NaN or Infinity, which is not JSON: answered 500", self._path)
        elif answer is INTERNAL_ERROR or answer is BATCH_SIZE_MISMATCH:
            self._errors.record(self.name, exc)
            logger.error("a LitAPI hook raised in %s", self.name, exc_info=exc)
        return Outcome.failure(answer, error=ErrorInfo.of(exc))


def thread_workers(endpoint: Endpoint, placements: Sequence[Placement], errors: ErrorLog) -> list[WorkerHandle]:
    """The default worker kind: one thread of this process per worker name, each with its own LitAPI copy."""
    meter = CpuMeter(endpoint.path)
    return [
        Worker(
            name,
            copy_api(endpoint.api),
            placement.device,
            endpoint.queue,
            errors,
            endpoint.plan,
            observers=endpoint.observers,
            others_coming=endpoint.queue.others_coming,
            on_device_failure=lambda _exc: endpoint.refuse_if_no_worker_left(),
            cpu_meter=meter,
        )
        for placement in placements
        for name in placement.worker_names
    ]
