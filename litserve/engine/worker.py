"""One worker thread: its own LitAPI copy, setup() once, then batches until its queue closes."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, final

from litserve.api import LitAPI
from litserve.codec import encode_json
from litserve.engine.batcher import Batch, collect_batch
from litserve.engine.bridge import deliver, deliver_all
from litserve.engine.devices import DeviceRuntime
from litserve.engine.messages import DropReason, InferenceRequest, Outcome
from litserve.engine.request_queue import RequestQueue
from litserve.exceptions import BATCH_SIZE_MISMATCH, INTERNAL_ERROR, ErrorResponse, error_response
from litserve.hooks import CONTEXT_HOOKS, HookPlan
from litserve.status import ErrorLog, WorkerCounters, WorkerState

__all__ = ["Worker"]

logger = logging.getLogger(__name__)


class _BatchSizeMismatch(Exception):
    pass


Hook = Callable[[Any, Any], Any]


def _bind(api: LitAPI, name: str, plan: HookPlan) -> Hook:
    """`hook(value, context)` for every hook, passing `context` only to hooks that declare it."""
    hook = getattr(api, name)
    if name in plan.context_hooks:
        return lambda value, context: hook(value, context=context)
    return lambda value, context: hook(value)


@dataclass(frozen=True, slots=True)
class _Hooks:
    decode_request: Hook
    batch: Hook
    predict: Hook
    unbatch: Hook
    encode_response: Hook

    @classmethod
    def bind(cls, api: LitAPI, plan: HookPlan) -> _Hooks:
        return cls(*(_bind(api, name, plan) for name in CONTEXT_HOOKS))


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
        source: RequestQueue[InferenceRequest],
        errors: ErrorLog,
        plan: HookPlan,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.device = device
        self.counters = WorkerCounters()
        self._api: LitAPI | None = api
        self._runtime = DeviceRuntime(device)
        self._source = source
        self._errors = errors
        self._plan = plan
        self._clock = clock
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    @property
    def api(self) -> LitAPI | None:
        """This worker's own LitAPI copy (None once the worker has stopped)."""
        return self._api

    @property
    def ready(self) -> concurrent.futures.Future[None]:
        """Resolves when setup() finished, or carries setup()'s exception."""
        return self._ready

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float | None) -> bool:
        """Wait for the thread to end; True if it did."""
        if self._thread.ident is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _main(self) -> None:
        api = self._api
        assert api is not None
        try:
            self._runtime.bind_thread()
            api.device = self.device
            api.setup(self.device)
        except BaseException as exc:
            self.counters.state = WorkerState.FAILED
            self._api = None
            self._ready.set_exception(exc)
            return
        self.counters.state = WorkerState.IDLE
        self._ready.set_result(None)
        try:
            self._serve_until_closed(api)
        finally:
            self.counters.state = WorkerState.STOPPED
            self._api = None
            self._runtime.release()

    def _serve_until_closed(self, api: LitAPI) -> None:
        # Read once: hooks and settings are fixed for the worker's life.
        max_batch_size = api.max_batch_size
        batch_timeout_s = float(api.batch_timeout)
        hooks = _Hooks.bind(api, self._plan)
        while True:
            batch = collect_batch(self._source, max_batch_size, batch_timeout_s, self._clock)
            if batch is None:
                return
            self._count_drops(batch)
            if not batch.requests:
                continue
            self.counters.state = WorkerState.BUSY
            try:
                if max_batch_size == 1:
                    request = batch.requests[0]
                    deliver(request.reply, self._run_one(hooks, request))
                else:
                    outcomes = self._run_batch(hooks, batch.requests)
                    deliver_all(zip((r.reply for r in batch.requests), outcomes, strict=True))
            except Exception as exc:  # a bug of ours: never let it kill the worker
                self._errors.record(self.name, exc)
                logger.exception("worker %s failed to answer a batch", self.name)
                failure = self._failure(exc)
                deliver_all((r.reply, failure) for r in batch.requests)
            self.counters.state = WorkerState.IDLE

    def _count_drops(self, batch: Batch) -> None:
        for _, reason in batch.dropped:
            if reason is DropReason.TIMED_OUT:
                self.counters.dropped_timed_out += 1
            else:
                self.counters.dropped_cancelled += 1

    def _run_one(self, hooks: _Hooks, request: InferenceRequest) -> Outcome:
        context = request.context
        try:
            with self._runtime.running():
                x = hooks.decode_request(request.payload, context)
                output = hooks.encode_response(hooks.predict(x, context), context)
            outcome = Outcome(200, encode_json(output))
        except Exception as exc:
            return self._failure(exc)
        self.counters.served += 1
        return outcome

    def _run_batch(self, hooks: _Hooks, requests: tuple[InferenceRequest, ...]) -> list[Outcome]:
        """Decode and encode per item (an error fails only its item); predict once for the batch."""
        outcomes: list[Outcome | None] = [None] * len(requests)
        inputs: list[Any] = []
        positions: list[int] = []
        with self._runtime.running():
            for i, request in enumerate(requests):
                try:
                    inputs.append(hooks.decode_request(request.payload, request.context))
                    positions.append(i)
                except Exception as exc:
                    outcomes[i] = self._failure(exc)
            if inputs:
                contexts = [requests[i].context for i in positions]
                try:
                    outputs = hooks.unbatch(hooks.predict(hooks.batch(inputs, contexts), contexts), contexts)
                    if len(outputs) != len(inputs):
                        raise _BatchSizeMismatch(
                            f"unbatch returned {len(outputs)} outputs for a batch of {len(inputs)}: make predict "
                            "return one output per input and unbatch split it into a list of that length"
                        )
                except Exception as exc:
                    failure = self._failure(exc)
                    for i in positions:
                        outcomes[i] = failure
                else:
                    for i, output in zip(positions, outputs, strict=True):
                        try:
                            encoded = hooks.encode_response(output, requests[i].context)
                            outcomes[i] = Outcome(200, encode_json(encoded))
                            self.counters.served += 1
                        except Exception as exc:
                            outcomes[i] = self._failure(exc)
        return [o if o is not None else self._failure(RuntimeError("request was not answered")) for o in outcomes]

    def _failure(self, exc: Exception) -> Outcome:
        if isinstance(exc, _BatchSizeMismatch):
            answer: ErrorResponse = BATCH_SIZE_MISMATCH
        else:
            answer = error_response(exc)
        if answer is INTERNAL_ERROR or answer is BATCH_SIZE_MISMATCH:
            self.counters.errors += 1
            self._errors.record(self.name, exc)
            logger.error("a LitAPI hook raised in %s", self.name, exc_info=exc)
        return Outcome.failure(answer)
