"""The hooks of a batch, run in order: decode per item -> batch -> predict -> unbatch -> encode per item.

A lone request is a batch of one; with `max_batch_size=1` the `batch`/`unbatch` hooks are skipped, as
LitServe does. Streaming is a property of the response channel: `stream()` pushes chunks to each
request's StreamReply as they come instead of returning one Outcome per request. This module runs
synchronous hooks; `async_pipeline` is its twin for `enable_async=True`, sharing everything here that
does not await.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, final

from pydantic import BaseModel

from litserve.api import LitAPI
from litserve.codec import encode_json
from litserve.engine.bridge import ChannelReply, StreamReply, abandon, push, wait_for_room
from litserve.engine.messages import (
    STREAM_END,
    TIMED_OUT_OUTCOME,
    DropReason,
    InferenceRequest,
    Outcome,
    StreamItem,
    StreamStart,
)
from litserve.hooks import CONTEXT_HOOKS, HookPlan

__all__ = ["BatchSizeMismatchError", "Fail", "Hooks", "StreamFanout", "answer", "encode_chunk", "stream"]

Hook = Callable[[Any, Any], Any]
Fail = Callable[[Exception], Outcome]

NDJSON = "application/x-ndjson"


class BatchSizeMismatchError(Exception):
    """predict/unbatch returned a different number of outputs than the batch had inputs."""


def _bind(api: LitAPI, name: str, plan: HookPlan) -> Hook:
    """`hook(value, context)` for every hook, passing `context` only to hooks that declare it."""
    hook = getattr(api, name)
    if name in plan.context_hooks:
        return lambda value, context: hook(value, context=context)
    return lambda value, context: hook(value)


def _identity_batch(values: Any, context: Any) -> Any:
    return values[0]


def _identity_unbatch(output: Any, context: Any) -> list[Any]:
    return [output]


@final
@dataclass(frozen=True, slots=True)
class Hooks:
    """A worker's LitAPI hooks, bound once at start. Without batching, batch/unbatch wrap and unwrap."""

    decode_request: Hook
    batch: Hook
    predict: Hook
    unbatch: Hook
    encode_response: Hook
    is_batched: bool
    has_custom_unbatch: bool

    @classmethod
    def bind(cls, api: LitAPI, plan: HookPlan) -> Hooks:
        hooks = {name: _bind(api, name, plan) for name in CONTEXT_HOOKS}
        is_batched = api.max_batch_size > 1
        if not is_batched:
            hooks["batch"], hooks["unbatch"] = _identity_batch, _identity_unbatch
        has_custom_unbatch = type(api).unbatch is not LitAPI.unbatch
        return cls(is_batched=is_batched, has_custom_unbatch=has_custom_unbatch, **hooks)

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
    if isinstance(chunk, bytes):
        return chunk, "application/octet-stream"
    if isinstance(chunk, str):
        return chunk.encode(), "text/plain; charset=utf-8"
    if isinstance(chunk, BaseModel):
        return chunk.model_dump_json().encode() + b"\n", NDJSON
    return encode_json(chunk) + b"\n", NDJSON


def answer(hooks: Hooks, requests: Sequence[InferenceRequest], fail: Fail) -> list[Outcome]:
    """Run a non-streaming batch; decode and encode errors fail only their own item."""
    outcomes: list[Outcome | None] = [None] * len(requests)
    inputs: list[Any] = []
    live: list[int] = []
    for i, request in enumerate(requests):
        try:
            inputs.append(hooks.decode_request(request.payload, request.context))
            live.append(i)
        except Exception as exc:
            outcomes[i] = fail(exc)
    if live:
        contexts = hooks.contexts([requests[i] for i in live])
        try:
            outputs = check_batch_size(
                hooks.unbatch(hooks.predict(hooks.batch(inputs, contexts), contexts), contexts), len(live)
            )
        except Exception as exc:
            failure = fail(exc)
            for i in live:
                outcomes[i] = failure
        else:
            for i, output in zip(live, outputs, strict=True):
                try:
                    outcomes[i] = Outcome(200, encode_json(hooks.encode_response(output, requests[i].context)))
                except Exception as exc:
                    outcomes[i] = fail(exc)
    return [outcome if outcome is not None else fail(RuntimeError("unanswered request")) for outcome in outcomes]


@final
class StreamFanout:
    """Sends each step of a (batched) stream to its requests, and ends every stream exactly once.

    A request whose client left or whose deadline passed is ended at the next step; when none is
    left, `send_step` returns False so the caller stops and closes the generators.
    """

    def __init__(
        self, requests: Sequence[InferenceRequest], clock: Callable[[], float], may_block: bool = True
    ) -> None:
        self._requests = list(requests)
        self._clock = clock
        self._may_block = may_block  # a synchronous worker waits for slow clients; an event loop must not
        self._started = [False] * len(requests)
        self._active = set(range(len(requests)))

    def send_step(self, items: Sequence[Any], is_batched: bool) -> bool:
        now_s = self._clock()
        for j in sorted(self._active):
            request = self._requests[j]
            reason = request.drop_reason(now_s)
            if reason is not None:
                self._active.discard(j)
                if reason is DropReason.TIMED_OUT:
                    push(_stream_reply(request), TIMED_OUT_OUTCOME)
                else:
                    abandon(request.reply, reason)
                continue
            item = items[j]
            if item is None and is_batched:
                continue  # nothing for this request at this step
            if self._may_block:
                wait_s = None if request.deadline_s is None else max(0.0, request.deadline_s - now_s)
                if not wait_for_room(request.reply, wait_s):  # the client fell behind until the deadline
                    self._active.discard(j)
                    push(_stream_reply(request), TIMED_OUT_OUTCOME)
                    continue
            data, media_type = encode_chunk(item)
            push(_stream_reply(request), data if self._started[j] else StreamStart(media_type, data))
            self._started[j] = True
        return bool(self._active)

    def fail(self, outcome: Outcome) -> None:
        for j in self._active:
            push(_stream_reply(self._requests[j]), outcome)
        self._active.clear()

    def finish(self) -> None:
        for j in self._active:
            push(_stream_reply(self._requests[j]), STREAM_END)
        self._active.clear()


def _stream_reply(request: InferenceRequest) -> StreamReply[StreamItem] | ChannelReply:
    reply = request.reply
    assert isinstance(reply, StreamReply | ChannelReply), "a streaming endpoint's requests carry a StreamReply"
    return reply


def decode_failed(requests: Sequence[InferenceRequest], failed: Iterable[tuple[int, Outcome]]) -> None:
    """Answer stream requests whose decode_request raised (before any chunk: a plain error response)."""
    for i, outcome in failed:
        push(_stream_reply(requests[i]), outcome)


def close_quietly(*generators: Any) -> None:
    """Close generators so their `finally` blocks run now, on this worker, not at garbage collection."""
    for generator in generators:
        close = getattr(generator, "close", None)
        if callable(close):
            close()


def stream(hooks: Hooks, requests: Sequence[InferenceRequest], fail: Fail, clock: Callable[[], float]) -> None:
    """Run a streaming batch: predict and encode_response are generators; chunks leave as they come."""
    inputs: list[Any] = []
    live: list[InferenceRequest] = []
    failed: list[tuple[int, Outcome]] = []
    for i, request in enumerate(requests):
        try:
            inputs.append(hooks.decode_request(request.payload, request.context))
            live.append(request)
        except Exception as exc:
            failed.append((i, fail(exc)))
    decode_failed(requests, failed)
    if not live:
        return
    fanout = StreamFanout(live, clock)
    contexts = hooks.contexts(live)
    predicted: Any = None
    per_step: Any = None
    encoded: Any = None
    try:
        predicted = hooks.predict(hooks.batch(inputs, contexts), contexts)
        if hooks.is_batched:
            # LitServe's batched streaming: predict yields one batch output per step, unbatch turns the
            # step stream into lists (one entry per request), encode_response maps that stream.
            per_step = hooks.unbatch(predicted, contexts) if hooks.has_custom_unbatch else map(list, predicted)
            encoded = hooks.encode_response(per_step, contexts)
            for step in encoded:
                if not fanout.send_step(check_batch_size(step, len(live)), True):
                    break
        else:
            encoded = hooks.encode_response(predicted, contexts)
            for chunk in encoded:
                if not fanout.send_step((chunk,), False):
                    break
    except Exception as exc:
        fanout.fail(fail(exc))
    finally:
        close_quietly(encoded, per_step, predicted)
    fanout.finish()
