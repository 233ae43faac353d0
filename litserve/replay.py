"""`server.replay(request_id)`: run a request the inspector kept through the hooks again, in the calling thread.

The hooks run exactly as a worker runs them (the engine's own pipeline programs, `engine.pipeline`:
decode_request -> batch -> predict -> unbatch -> encode_response, a batched LitAPI getting a batch of one),
but on a private copy of the LitAPI, set up once per endpoint on the server's first device and kept for
later replays, so live traffic never waits for a replay nor sees its state. A hook that raises raises
here, in the caller, with its own traceback: `%debug` lands in the hook, and `breakpoint()` in a hook
stops in the calling thread. (An `enable_async` LitAPI runs on its own event loop in a helper thread,
since a notebook's thread already runs one.) In process mode too the replay runs here, in the calling
process, on a local copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Hashable, Iterator, Sequence
from typing import Any, final

from litserve.api import LitAPI
from litserve.engine.messages import Cancellation, DropReason, InferenceRequest, Outcome, StreamItem, StreamStart
from litserve.engine.pipeline import NDJSON, Hooks, answer_program, stream_program
from litserve.engine.pool import copy_api
from litserve.engine.steps import Program, run_async, run_sync
from litserve.exceptions import ReplayError
from litserve.hooks import plan_hooks
from litserve.request_context import RequestContext

__all__ = ["Replayer"]


class _Raise(BaseException):
    """Carries a hook's exception past the pipeline's own error handling, to be raised in the caller."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _raise(exc: Exception) -> Outcome:
    raise _Raise(exc)


@final
class _CollectingReply:
    """A replayed stream's reply: keeps what the worker would have sent."""

    def __init__(self) -> None:
        self.items: list[StreamItem] = []

    @property
    def batch_key(self) -> Hashable:
        return id(self)

    def deliver(self, outcome: Outcome) -> None:
        self.items.append(outcome)

    def deliver_batch(self, answers: Sequence[tuple[Any, Outcome]]) -> None:
        self.items.extend(outcome for _, outcome in answers)

    def push(self, item: StreamItem) -> None:
        self.items.append(item)

    def abandon(self, reason: DropReason) -> None:  # pragma: no cover - a replay is never cancelled
        pass

    def wait_for_room(self) -> None:
        pass


@contextlib.contextmanager
def _on_device(device: str) -> Iterator[None]:
    if device.startswith("cuda"):  # pragma: no cover - needs CUDA (tests/engine/test_gpu.py's machines)
        import torch

        with torch.cuda.device(device):
            yield
    else:
        yield


@final
class Replayer:
    """A server's replay copies: one LitAPI copy per endpoint path, set up on `device` at its first replay."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._lock = threading.Lock()  # one replay at a time (they share the copies)
        self._copies: dict[str, tuple[LitAPI, LitAPI, Hooks]] = {}  # path -> (the server's api, its copy, hooks)

    def replay(self, api: LitAPI, payload_json: bytes) -> Any:
        """Run `payload_json` (as the route had parsed it) through a copy of `api`; return what a client gets.

        A plain endpoint returns its answer as decoded JSON; a streaming one, the list of its chunks (JSON
        lines decoded, text as str, bytes as bytes). A hook's exception is raised as it is.
        """
        if api.spec is not None:
            raise ReplayError(f"{api.api_path} speaks {type(api.spec).__name__}; replay supports plain endpoints")
        plan = plan_hooks(api)
        payload = json.loads(payload_json)
        if plan.body_model is not None:
            payload = plan.body_model.model_validate(payload)
        context = RequestContext("POST", api.api_path, {}, {}, None) if plan.wants_context else None
        reply = _CollectingReply()
        request = InferenceRequest(payload, reply, None, Cancellation(), context, queued_s=time.monotonic())
        with self._lock, _on_device(self.device):
            copy, hooks = self._copy(api, plan)
            if api.stream:
                self._run(copy, stream_program(hooks, [request], _raise, may_block=True))
                return _chunks(reply.items)
            outcome = self._run(copy, answer_program(hooks, [request], _raise))[0]
        return json.loads(outcome.body)

    def _copy(self, api: LitAPI, plan: Any) -> tuple[LitAPI, Hooks]:
        found = self._copies.get(api.api_path)
        if found is None or found[0] is not api:  # a new LitAPI on that path (the server swapped it)
            copy = copy_api(api)
            copy.device = self.device
            copy.setup(self.device)
            found = (api, copy, Hooks.bind(copy, plan, worker="replay"))
            self._copies[api.api_path] = found
        return found[1], found[2]

    def _run(self, api: LitAPI, program: Program[Any]) -> Any:
        error: Exception | None = None
        try:
            if api.enable_async:
                return _in_helper_thread(program)
            return run_sync(program)
        except _Raise as wrapped:
            error = wrapped.error
        raise error  # outside the except block: the hook's exception, not chained to ours

    def clear(self) -> None:
        """Forget the copies (their models go with them)."""
        with self._lock:
            self._copies.clear()


def _in_helper_thread(program: Program[Any]) -> Any:
    result: list[Any] = []
    failure: list[BaseException] = []

    def main() -> None:
        try:
            result.append(asyncio.run(run_async(program)))
        except BaseException as exc:  # noqa: B036 - handed to the caller, who raises it
            failure.append(exc)

    thread = threading.Thread(target=main, name="litserve-replay", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _chunks(items: Sequence[StreamItem]) -> list[Any]:
    chunks: list[Any] = []
    media_type = ""
    for item in items:
        if isinstance(item, StreamStart):
            media_type, data = item.media_type, item.data
        elif isinstance(item, bytes):
            data = item
        else:  # the end (a failure would have been raised)
            continue
        if media_type == NDJSON:
            chunks.extend(json.loads(line) for line in data.splitlines() if line.strip())
        elif media_type.startswith("text/"):
            chunks.append(data.decode())
        else:
            chunks.append(data)
    return chunks
