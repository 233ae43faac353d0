"""Our own bookkeeping around devices, checked on CPU: what is CUDA itself is in test_gpu*.py.

Covered here: which errors count as sticky, what a sticky error does to a worker (thread: FAILED and
/health 503; process: the process exits and is started again), that a failed setup() lets go of what
it built, that the pipeline settles before encoding, how a coroutine is stepped with a device entered,
the `accelerator="mps"` check, the warning for more workers than streams, and the CPU path of
`DeviceRuntime` (no stream, nothing entered, nothing waited for).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import traceback
import weakref
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import pytest
import requests

from litserve import LitAPI, LitServer, WorkerSetupError
from litserve.engine.device_errors import is_sticky_device_error
from litserve.engine.device_runtime import DeviceRuntime, _Stepped
from litserve.engine.devices import resolve_devices, settle_callers_tensors, warn_if_streams_shared
from litserve.engine.messages import Cancellation, DropReason, InferenceRequest, Outcome, Reply, StreamItem
from litserve.engine.pipeline import Hooks, answer, stream
from litserve.exceptions import INTERNAL_ERROR, NO_WORKER_LEFT
from litserve.hooks import plan_hooks
from litserve.status import WorkerState
from tests.helpers import Shared, post, wait_until

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.timeout(120)

STICKY = "CUDA error: device-side assert triggered\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side assertions."


# --- which errors are sticky ----------------------------------------------------------------------


def _chained(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as caught:
        return caught


class _Unprintable(RuntimeError):
    def __str__(self) -> str:
        raise ValueError("no text")


@pytest.mark.parametrize(
    ("exc", "sticky"),
    [
        (torch.AcceleratorError(STICKY), True),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), True),
        (RuntimeError("CUDA error: unspecified launch failure"), True),
        (_chained(ValueError("predict failed"), RuntimeError("CUDA error: misaligned address")), True),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), False),
        (torch.AcceleratorError("CUDA error: invalid argument"), False),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (ValueError("device-side assert triggered"), False),  # not an error torch raises for CUDA
        (_Unprintable(), False),
    ],
)
def test_sticky_cuda_errors_are_told_from_others(exc: BaseException, sticky: bool) -> None:
    assert is_sticky_device_error(exc) is sticky


def test_an_exception_chain_with_a_cycle_ends() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert not is_sticky_device_error(a)


# --- what a sticky error does to a worker ---------------------------------------------------------


class StickyAPI(LitAPI):
    """predict raises what torch raises after a device-side assert when asked to; else echoes."""

    def predict(self, x: Any) -> Any:
        if x["input"] == "assert":
            raise torch.AcceleratorError(STICKY)
        return x["input"]


class AsyncStickyAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(enable_async=True)

    async def predict(self, x: Any) -> Any:
        if x["input"] == "assert":
            raise torch.AcceleratorError(STICKY)
        return x["input"]


STICKY_APIS = pytest.mark.parametrize("make_api", [StickyAPI, AsyncStickyAPI], ids=["sync", "async"])


@STICKY_APIS
def test_a_sticky_error_fails_its_worker_thread_and_health_says_so(make_api: Any) -> None:
    with LitServer(make_api(), accelerator="cpu", workers_per_device=2, timeout=10).start(port=0) as server:
        assert post(server, {"input": "assert"}).status_code == 500
        assert wait_until(lambda: [w.state for w in server.status.workers].count(WorkerState.FAILED) == 1)
        assert requests.get(server.url + "/health", timeout=10).status_code == 503
        # The other worker still serves; the failed one takes nothing more.
        assert [post(server, {"input": i}).json() for i in range(4)] == [0, 1, 2, 3]
        assert "device-side assert" in str(server.status.last_error)
    assert [w.state for w in server.status.workers].count(WorkerState.FAILED) == 1


@STICKY_APIS
def test_a_sticky_error_restarts_its_worker_process(make_api: Any) -> None:
    with LitServer(make_api(), accelerator="cpu", worker_mode="process", timeout=10).start(port=0) as server:
        first_pid = server.status.workers[0].pid
        assert post(server, {"input": "assert"}).status_code == 500
        assert wait_until(lambda: server.status.workers[0].restarts == 1)
        assert wait_until(lambda: server.status.workers[0].state is WorkerState.IDLE)
        assert requests.get(server.url + "/health", timeout=10).text == "ok"
        assert post(server, {"input": 3}).json() == 3
        assert server.status.workers[0].pid != first_pid
        assert "sticky CUDA error" in str(server.status.last_error)


# --- a failed setup() lets go of what it built ----------------------------------------------------


class Weights:
    """Stands for a model's memory: what matters is whether anything still refers to it."""


class OutOfMemoryInSetupAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__()
        self.built = Shared([])

    def setup(self, device: str) -> None:
        self.model = Weights()
        half_built = Weights()
        self.built.value += [weakref.ref(self.model), weakref.ref(half_built)]
        raise RuntimeError("CUDA out of memory (while building the model)")

    def predict(self, x: Any) -> Any:
        return x


def test_a_failed_setup_keeps_its_error_but_not_its_model(worker_mode: str) -> None:
    api = OutOfMemoryInSetupAPI()
    server = LitServer(api, accelerator="cpu", worker_mode=worker_mode)
    with pytest.raises(WorkerSetupError, match="out of memory") as caught:
        server.start(port=0)
    text = "".join(traceback.format_exception(caught.value))
    assert "raise RuntimeError" in text and "in setup" in text  # the traceback still names setup()'s line
    if worker_mode == "thread":  # a worker process's memory goes with the process
        gc.collect()
        assert len(api.built.value) == 2
        assert [ref() for ref in api.built.value] == [None, None]


# --- the pipeline settles the device before encoding ----------------------------------------------


class _Replies:
    """Replies that keep what they are given, for driving the pipeline without a server."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    @property
    def batch_key(self) -> Hashable:
        return self

    def deliver(self, outcome: Outcome) -> None:
        self.items.append(outcome)

    def deliver_batch(self, answers: Sequence[tuple[Reply, Outcome]]) -> None:
        self.items.extend(outcome for _, outcome in answers)

    def push(self, item: StreamItem) -> None:
        self.items.append(item)

    def abandon(self, reason: DropReason) -> None:
        self.items.append(reason)

    def wait_for_room(self) -> None:
        pass


class OrderAPI(LitAPI):
    def __init__(self, is_stream: bool) -> None:
        super().__init__(stream=is_stream)
        self.calls: list[str] = []

    def predict(self, x: Any) -> Any:
        self.calls.append("predict")
        if not self.stream:
            return x
        return self._steps()

    def _steps(self) -> Iterator[int]:
        for i in range(2):
            self.calls.append(f"yield {i}")
            yield i

    def encode_response(self, output: Any) -> Any:
        if not self.stream:
            self.calls.append("encode")
            return output
        return self._encoded(output)

    def _encoded(self, outputs: Iterator[int]) -> Iterator[dict[str, int]]:
        for output in outputs:
            self.calls.append(f"encode {output}")
            yield {"output": output}


def _hooks_with_settle(api: OrderAPI) -> Hooks:
    return Hooks.bind(api, plan_hooks(api), settle=lambda _value, _context: api.calls.append("settle"))


def _fail(exc: Exception) -> Outcome:
    return Outcome.failure(INTERNAL_ERROR)


def test_an_answer_is_encoded_only_after_the_device_settled() -> None:
    api = OrderAPI(is_stream=False)
    request = InferenceRequest({"input": 1}, _Replies(), None, Cancellation())
    [outcome] = answer(_hooks_with_settle(api), [request], _fail)
    assert outcome.status == 200
    assert api.calls == ["predict", "settle", "encode"]


def test_each_streamed_item_is_encoded_only_after_the_device_settled() -> None:
    api = OrderAPI(is_stream=True)
    replies = _Replies()
    stream(_hooks_with_settle(api), [InferenceRequest({"input": 1}, replies, None, Cancellation())], _fail)
    assert api.calls == ["predict", "yield 0", "settle", "encode 0", "yield 1", "settle", "encode 1"]
    assert len(replies.items) == 3  # two chunks and the end


# --- a coroutine run with the worker's device entered at each step --------------------------------


def test_a_coroutine_runs_each_step_with_the_device_entered_and_other_tasks_without() -> None:
    current = threading.local()
    current.device = None

    @contextlib.contextmanager
    def enter() -> Iterator[None]:
        before, current.device = current.device, "worker's"
        try:
            yield
        finally:
            current.device = before

    seen: list[tuple[str, str | None]] = []

    async def health() -> bool:
        seen.append(("health", current.device))
        await asyncio.sleep(0)
        seen.append(("health", current.device))
        return True

    async def other() -> None:
        seen.append(("other", current.device))

    async def main() -> bool:
        task = asyncio.get_running_loop().create_task(other())
        verdict = await _Stepped(health(), enter)
        await task
        return verdict

    assert asyncio.run(main()) is True
    assert seen == [("health", "worker's"), ("other", None), ("health", "worker's")]
    assert current.device is None


def test_a_cancellation_reaches_a_stepped_coroutine_with_the_device_entered() -> None:
    current = threading.local()
    current.device = None
    seen: list[str | None] = []

    @contextlib.contextmanager
    def enter() -> Iterator[None]:
        current.device = "worker's"
        try:
            yield
        finally:
            current.device = None

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append(current.device)
            raise

    async def waits_on_device() -> None:
        await _Stepped(waits(), enter)

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(waits_on_device())
        await asyncio.sleep(0)  # the task starts and waits
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert seen == ["worker's"]


# --- the CPU path and the checks around devices ---------------------------------------------------


def test_on_cpu_the_runtime_has_nothing_to_enter_or_wait_for() -> None:
    runtime = DeviceRuntime("cpu")
    runtime.bind_thread()
    runtime.bind_other_thread()
    runtime.after_setup()
    assert runtime.stream is None and runtime.executor("w") is None and runtime.settle_hook() is None
    coroutine = asyncio.sleep(0)
    assert runtime.on_device(coroutine) is coroutine
    asyncio.run(coroutine)
    with runtime.entered(), runtime.running():
        runtime.settle()
    runtime.release()


def test_callers_cpu_tensors_need_no_waiting() -> None:
    settle_callers_tensors({"x": torch.ones(2), "rest": [torch.zeros(1), {"deep": torch.ones(1)}]})


def test_mps_is_refused_where_torch_has_none() -> None:
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(ValueError, match="sees no MPS device"):
        resolve_devices("mps", 1)


def test_more_workers_than_streams_on_a_gpu_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="litserve.engine.devices"):
        warn_if_streams_shared(["cpu"], 64)
        warn_if_streams_shared(["cuda:0"], 32)
        assert caplog.records == []
        warn_if_streams_shared(["cuda:0"], 33)
    assert "share a stream" in caplog.text


@STICKY_APIS
def test_with_no_worker_left_requests_get_503_at_once_instead_of_waiting(make_api: Any) -> None:
    # No timeout: a request queued for a worker that will never come would wait forever.
    with LitServer(make_api(), accelerator="cpu", workers_per_device=1, timeout=False).start(port=0) as server:
        assert post(server, {"input": "assert"}).status_code == 500
        assert wait_until(lambda: [w.state for w in server.status.workers] == [WorkerState.FAILED])
        refused = post(server, {"input": 1}, timeout=10)
        assert (refused.status_code, refused.json()) == (503, {"detail": NO_WORKER_LEFT.detail})
        assert requests.get(server.url + "/health", timeout=10).status_code == 503
