"""The hooks of a batch, in order: decode per item -> batch -> predict -> unbatch -> encode per item.

Written once, as programs of steps (`engine.steps`) that a synchronous or an async driver performs.
A lone request is a batch of one; with `max_batch_size=1` the `batch`/`unbatch` hooks are skipped, as
LitServe does. Streaming is a property of the response channel: `stream_program` pushes chunks to each
request's reply as they come instead of returning one Outcome per request.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Any, final

from pydantic import BaseModel

from litserve.api import LitAPI
from litserve.codec import encode_json
from litserve.engine.answer_codec import AnswerCodec, ChunkEncoder
from litserve.engine.messages import STREAM_END, TIMED_OUT_OUTCOME, DropReason, InferenceRequest, Outcome, StreamStart
from litserve.engine.steps import Close, Drain, Program, StepLists, call, run_async, run_sync
from litserve.exceptions import INTERNAL_ERROR
from litserve.hooks import CONTEXT_HOOKS, HookPlan
from litserve.status import Verdict
from litserve.timing import Timing, set_current

__all__ = [
    "BatchSizeMismatchError",
    "Fail",
    "Hooks",
    "StreamFanout",
    "answer",
    "answer_async",
    "encode_chunk",
    "stream",
    "stream_async",
]

logger = logging.getLogger(__name__)

Hook = Callable[[Any, Any], Any]
Fail = Callable[[Exception], Outcome]

NDJSON = "application/x-ndjson"
_INTERNAL_FAILURE = Outcome.failure(INTERNAL_ERROR)
# Numbers the batches that ran in this process (`Timing.batch_id`); next() on it is atomic under the GIL.
_BATCH_IDS = itertools.count(1)


def failure_of(fail: Fail, exc: Exception) -> Outcome:
    """`fail(exc)`, which must not spread: if turning the error into an answer raises too (a detail whose
    `__str__` raises, a logging handler that fails), the item still gets its own 500, not its batch."""
    try:
        return fail(exc)
    except Exception as inner:
        logger.error("could not build the error answer for %r", type(exc).__name__, exc_info=inner)
        return _INTERNAL_FAILURE


class BatchSizeMismatchError(Exception):
    """predict/unbatch returned a different number of outputs than the batch had inputs."""


def _bind(api: LitAPI, name: str, plan: HookPlan) -> Hook:
    """`hook(value, context)` for every hook, passing `context` only to hooks that declare it."""
    hook = getattr(api, name)
    if name in plan.context_hooks:
        return lambda value, context: hook(value, context=context)
    return lambda value, context: hook(value)


@final
@dataclass(frozen=True, slots=True)
class Hooks:
    """A worker's LitAPI hooks, bound once at start. Without batching, batch/unbatch are never called."""

    decode_request: Hook
    batch: Hook
    predict: Hook
    unbatch: Hook
    encode_response: Hook
    is_batched: bool
    has_custom_unbatch: bool
    codec: AnswerCodec | None = None  # a spec's; None: JSON answers and NDJSON streams
    worker: str = ""  # the name of the worker that runs them (`Timing.worker`)
    # Called after predict/unbatch and before encode_response (and before each streamed item is encoded):
    # on CUDA, waits for the worker's stream, so outputs copied with non_blocking=True have landed.
    settle: Hook | None = None

    @classmethod
    def bind(cls, api: LitAPI, plan: HookPlan, settle: Hook | None = None, worker: str = "") -> Hooks:
        hooks = {name: _bind(api, name, plan) for name in CONTEXT_HOOKS}
        is_batched = api.max_batch_size > 1
        has_custom_unbatch = type(api).unbatch is not LitAPI.unbatch
        return cls(
            is_batched=is_batched,
            has_custom_unbatch=has_custom_unbatch,
            codec=api.spec,
            settle=settle,
            worker=worker,
            **hooks,
        )

    def encode_answer(self, encoded: Any, request: InferenceRequest) -> bytes:
        codec = self.codec
        if codec is None:
            return encode_json(encoded)
        return codec.encode_answer(encoded, request.payload, request.shape)

    def contexts(self, requests: Sequence[InferenceRequest]) -> Any:
        """What batch-level hooks get as `context`: the list when batching, else the request's own."""
        return [r.context for r in requests] if self.is_batched else requests[0].context


def check_batch_size(outputs: Any, expected: int) -> list[Any]:
    items = list(outputs)
    if len(items) != expected:
        raise BatchSizeMismatchError(
            f"unbatch returned {len(items)} outputs for a batch of {expected}: make predict return one output "
            "per input and unbatch split it into a list of that length"
        )
    return items


def encode_chunk(chunk: Any) -> tuple[bytes, str]:
    """One stream chunk as bytes, and the media type it implies: JSON objects become NDJSON lines."""
    if type(chunk) is dict:  # the usual chunk, before the isinstance checks (pydantic's is not cheap)
        return encode_json(chunk) + b"\n", NDJSON
    if isinstance(chunk, bytes):
        return chunk, "application/octet-stream"
    if isinstance(chunk, str):
        return chunk.encode(), "text/plain; charset=utf-8"
    if isinstance(chunk, BaseModel):
        return chunk.model_dump_json().encode() + b"\n", NDJSON
    return encode_json(chunk) + b"\n", NDJSON


def _decode_all(
    hooks: Hooks, requests: Sequence[InferenceRequest], fail: Fail
) -> Program[tuple[list[Any], list[int], dict[int, Outcome]]]:
    """Decode each request; one that fails gets its own failure and leaves the batch."""
    inputs: list[Any] = []
    live: list[int] = []
    failures: dict[int, Outcome] = {}
    for i, request in enumerate(requests):
        try:
            inputs.append((yield call(hooks.decode_request, request.payload, request.context)))
            live.append(i)
        except Exception as exc:
            failures[i] = failure_of(fail, exc)
    return inputs, live, failures


def answer_program(hooks: Hooks, requests: Sequence[InferenceRequest], fail: Fail) -> Program[list[Outcome]]:
    """A non-streaming batch: one Outcome per request; decode and encode errors fail only their own item.

    Each success carries its `Timing` (queue wait until this batch began, batch size, predict time); the
    timing is current (`litserve.timing.current_timing`) while that request's encode_response runs.
    """
    started_s = monotonic()
    inputs, live, outcomes = yield from _decode_all(hooks, requests, fail)
    if not live:
        return [outcomes[i] for i in range(len(requests))]
    contexts = hooks.contexts([requests[i] for i in live])
    predict_started_s = started_s
    try:
        if hooks.is_batched:
            batched = yield call(hooks.batch, inputs, contexts)
            predict_started_s = monotonic()
            predicted = yield call(hooks.predict, batched, contexts)
            outputs = check_batch_size((yield call(hooks.unbatch, predicted, contexts)), len(live))
        else:  # a batch of one, without LitServe's batch and unbatch hooks
            predict_started_s = monotonic()
            outputs = [(yield call(hooks.predict, inputs[0], contexts))]
        if hooks.settle is not None:  # the device's queued work is part of predict's time
            yield call(hooks.settle, None, None)
        predict_s = monotonic() - predict_started_s
    except Exception as exc:
        failure = failure_of(fail, exc)
        ran = Timing(0.0, len(live), monotonic() - predict_started_s, hooks.worker, next(_BATCH_IDS))
        for i in live:  # the inspector shows which batch and worker a failed request ran in
            wait_s = max(0.0, started_s - requests[i].queued_s)
            outcomes[i] = dataclasses.replace(failure, timing=dataclasses.replace(ran, queue_wait_s=wait_s))
    else:
        yield from _encode_all(hooks, requests, live, outputs, outcomes, (started_s, predict_s), fail)
    return [outcomes[i] for i in range(len(requests))]


def _encode_all(
    hooks: Hooks,
    requests: Sequence[InferenceRequest],
    live: list[int],
    outputs: list[Any],
    outcomes: dict[int, Outcome],
    ran: tuple[float, float],
    fail: Fail,
) -> Program[None]:
    """Encode each output into its request's Outcome; `ran`: when the batch began (monotonic), predict's seconds."""
    started_s, predict_s = ran
    batch_size = len(live)
    batch_id, worker = next(_BATCH_IDS), hooks.worker
    try:
        for i, output in zip(live, outputs, strict=True):
            request = requests[i]
            timing = Timing(max(0.0, started_s - request.queued_s), batch_size, predict_s, worker, batch_id)
            set_current(timing)
            try:
                encoded = yield call(hooks.encode_response, output, request.context)
                outcomes[i] = Outcome(200, hooks.encode_answer(encoded, request), timing=timing)
            except Exception as exc:
                outcomes[i] = failure_of(fail, exc)
    finally:
        set_current(None)


@final
class StreamFanout:
    """Sends each step of a (batched) stream to its requests, and ends every stream exactly once.

    A request the loop ended (its client left, or it went quiet past its idle deadline) is ended at
    the next step; the arrival deadline is not looked at here, since a stream's timeout is decided on
    the loop. When none is left, `send_step` returns False so the caller stops and closes the
    generators. `verdicts` says how each ended stream counts (dropped ones are not counted here).
    """

    def __init__(
        self,
        requests: Sequence[InferenceRequest],
        may_block: bool = True,
        codec: AnswerCodec | None = None,
        fail: Fail | None = None,
    ) -> None:
        self._requests = list(requests)
        self._fail = fail  # a chunk that cannot be encoded (NaN, not JSON-able) ends its own stream only
        self._may_block = may_block  # a synchronous worker waits for slow clients; an event loop must not
        self._encoders: list[ChunkEncoder] | None = (
            None if codec is None else [codec.open_stream(r.payload, r.shape) for r in requests]
        )
        self._started = [False] * len(requests)
        self._active = set(range(len(requests)))
        self.verdicts: list[Verdict] = []

    def send_step(self, items: Sequence[Any], is_batched: bool) -> bool:
        for j in sorted(self._active):
            if self._ended_by_loop(j):
                continue
            item = items[j]
            if item is None and is_batched:
                continue  # nothing for this request at this step
            request = self._requests[j]
            try:
                if self._encoders is None:
                    data, media_type = encode_chunk(item)
                else:
                    encoder = self._encoders[j]
                    data, media_type = encoder.encode(item), encoder.media_type
            except Exception as exc:
                if self._fail is None:
                    raise
                self._end(j, failure_of(self._fail, exc))
                continue
            if not data and self._started[j] and self._encoders is not None:
                continue  # the spec sends nothing for this chunk (yet)
            if self._may_block:
                request.reply.wait_for_room()  # the loop wakes it when the stream ends, for whatever reason
                if self._ended_by_loop(j):
                    continue
            request.reply.push(data if self._started[j] else StreamStart(media_type, data))
            self._started[j] = True
        return bool(self._active)

    def _ended_by_loop(self, j: int) -> bool:
        reason = self._requests[j].cancellation.reason
        if reason is None:
            return False
        self._end(j, TIMED_OUT_OUTCOME) if reason is DropReason.TIMED_OUT else self._drop(j, reason)
        return True

    def _drop(self, j: int, reason: DropReason) -> None:
        self._active.discard(j)
        self._requests[j].reply.abandon(reason)

    def _end(self, j: int, outcome: Outcome) -> None:
        self._active.discard(j)
        self._requests[j].reply.push(outcome)
        self.verdicts.append(outcome.verdict)

    def fail(self, outcome: Outcome) -> None:
        for j in sorted(self._active):
            self._end(j, outcome)

    def finish(self) -> None:
        """End every stream still running normally (a spec's encoder adds its closing bytes first)."""
        for j in sorted(self._active):
            reply = self._requests[j].reply
            if self._encoders is not None:
                encoder = self._encoders[j]
                data = encoder.close()
                if data or not self._started[j]:
                    reply.push(data if self._started[j] else StreamStart(encoder.media_type, data))
            reply.push(STREAM_END)
            self.verdicts.append(Verdict.OK)
        self._active.clear()


def stream_program(
    hooks: Hooks, requests: Sequence[InferenceRequest], fail: Fail, may_block: bool
) -> Program[list[Verdict]]:
    """A streaming batch: predict and encode_response are generators; chunks leave as they come."""
    inputs, live_at, failed = yield from _decode_all(hooks, requests, fail)
    for i, outcome in failed.items():  # before any chunk: answered as a plain error response
        requests[i].reply.push(outcome)
    verdicts = [outcome.verdict for outcome in failed.values()]
    if not live_at:
        return verdicts
    live = [requests[i] for i in live_at]
    fanout = StreamFanout(live, may_block, hooks.codec, fail)
    contexts = hooks.contexts(live)
    predicted = source = per_step = encoded = None
    interrupted: BaseException | None = None
    try:
        batched = (yield call(hooks.batch, inputs, contexts)) if hooks.is_batched else inputs[0]
        predicted = yield call(hooks.predict, batched, contexts)
        source = predicted if hooks.settle is None else settled(predicted, hooks.settle)
        if hooks.is_batched:
            # LitServe's batched streaming: predict yields one batch output per step, unbatch turns the
            # step stream into lists (one entry per request), encode_response maps that stream.
            if hooks.has_custom_unbatch:
                per_step = yield call(hooks.unbatch, source, contexts)
            else:
                per_step = yield StepLists(source)
            encoded = yield call(hooks.encode_response, per_step, contexts)
        else:
            encoded = yield call(hooks.encode_response, source, contexts)
        is_batched = hooks.is_batched

        def send(step: Any) -> bool:
            return fanout.send_step(check_batch_size(step, len(live)) if is_batched else (step,), is_batched)

        yield Drain(encoded, send)
    except Exception as exc:
        fanout.fail(failure_of(fail, exc))
    except GeneratorExit:  # the program itself is being closed: no more steps may be asked for
        raise
    except BaseException as exc:  # noqa: B036 - close the user's generators first, then let it go on
        interrupted = exc
    yield Close(encoded, per_step, source, predicted)
    if interrupted is not None:
        raise interrupted
    fanout.finish()
    return verdicts + fanout.verdicts


def settled(source: Any, settle: Hook) -> Any:
    """`source` (what a streaming predict returned), calling `settle` before each item goes on."""
    if hasattr(source, "__aiter__"):
        return _settled_async(source, settle)
    return _settled(source, settle)


def _settled(source: Any, settle: Hook) -> Iterator[Any]:
    for item in source:
        settle(None, None)
        yield item


async def _settled_async(source: Any, settle: Hook) -> AsyncIterator[Any]:
    async for item in source:
        settle(None, None)
        yield item


def answer(hooks: Hooks, requests: Sequence[InferenceRequest], fail: Fail) -> list[Outcome]:
    return run_sync(answer_program(hooks, requests, fail))


async def answer_async(hooks: Hooks, requests: Sequence[InferenceRequest], fail: Fail) -> list[Outcome]:
    return await run_async(answer_program(hooks, requests, fail))


def stream(hooks: Hooks, requests: Sequence[InferenceRequest], fail: Fail) -> list[Verdict]:
    return run_sync(stream_program(hooks, requests, fail, may_block=True))


async def stream_async(hooks: Hooks, requests: Sequence[InferenceRequest], fail: Fail) -> list[Verdict]:
    return await run_async(stream_program(hooks, requests, fail, may_block=False))
