"""What only process mode has: worker processes that can die, restart, be orphaned and be reaped."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from typing import Any

import numpy as np
import pytest
import requests
from pydantic import BaseModel, Field

from litserve import LitAPI, LitServer, RequestFailedError, WorkerSetupError
from litserve.status import WorkerState
from tests.apis import FailingSetupAPI, GatedPredictAPI, SquareAPI
from tests.helpers import free_port, post, wait_until
from tests.sync import CrossEvent, CrossLog, CrossSemaphore

pytestmark = pytest.mark.timeout(120)


def is_gone(pid: int) -> bool:
    """True once `pid` is not running (exited, or a zombie waiting to be reaped by someone else)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class PidAPI(LitAPI):
    def setup(self, device: str) -> None:
        self.pid = os.getpid()

    def predict(self, x: Any) -> Any:
        return {"x": x, "pid": self.pid}


def test_two_cpu_devices_get_one_process_each_and_stop_reaps_them() -> None:
    server = LitServer(PidAPI(), accelerator="cpu", devices=2, worker_mode="process").start(port=0)
    try:
        workers = server.status.workers
        pids = {w.pid for w in workers}
        assert len(workers) == 2 and len(pids) == 2 and os.getpid() not in pids
        assert [w.device for w in workers] == ["cpu", "cpu"]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: post(server, i).json(), range(40)))
        assert [a["x"] for a in answers] == list(range(40))
        assert {a["pid"] for a in answers} <= pids
        assert requests.get(server.url + "/info", timeout=10).json()["server"]["worker_mode"] == "process"
    finally:
        server.stop()
    assert all(is_gone(pid) for pid in pids if pid is not None)


def test_one_request_at_a_time_stays_with_the_same_worker_process() -> None:
    # At low load the process that answered last takes the next request too, its model still in
    # cache, instead of the processes taking turns.
    with LitServer(PidAPI(), accelerator="cpu", devices=2, worker_mode="process").start(port=0) as server:
        answers = [post(server, i).json() for i in range(12)]
    assert [a["x"] for a in answers] == list(range(12))
    assert len({a["pid"] for a in answers}) == 1


class GatedPidAPI(LitAPI):
    """Batched: predict() announces each batch and waits for the gate, then answers with its pid."""

    def __init__(self) -> None:
        super().__init__(max_batch_size=4, batch_timeout=0.0)
        self.entered = CrossSemaphore()
        self.gate = CrossEvent()

    def setup(self, device: str) -> None:
        self.pid = os.getpid()

    def predict(self, xs: Any) -> Any:
        self.entered.release()
        assert self.gate.wait(20), "the test never opened the predict gate"
        return [{"x": x, "pid": self.pid} for x in xs]


def test_a_request_goes_to_an_idle_worker_process_before_a_busy_one_with_room() -> None:
    # The busy process could hold three more requests (max_batch_size=4), but an idle one starts now.
    api = GatedPidAPI()
    with LitServer(api, accelerator="cpu", devices=2, worker_mode="process").start(port=0) as server:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, server, 1)
            assert api.entered.acquire(20)
            second = pool.submit(post, server, 2)
            assert api.entered.acquire(20), "the second request waited behind the first one's batch"
            api.gate.set()
            answers = [first.result(20).json(), second.result(20).json()]
    assert [a["x"] for a in answers] == [1, 2]
    assert answers[0]["pid"] != answers[1]["pid"]


class CrashingAPI(SquareAPI):
    """predict() of {"input": "crash"} kills its process once the test says so; setup() is counted."""

    def __init__(self) -> None:
        super().__init__()
        self.setups = CrossLog()
        self.entered = CrossSemaphore()
        self.second_setup_gate = CrossEvent()

    def setup(self, device: str) -> None:
        self.setups.append(os.getpid())
        if len(self.setups.values()) > 1:
            assert self.second_setup_gate.wait(20), "the test never let the restarted worker finish setup()"
        super().setup(device)

    def predict(self, x: Any) -> Any:
        if x == "crash":
            self.entered.release()
            threading.Event().wait(30)  # held here until the test kills this process
        return super().predict(x)


def test_a_killed_worker_process_fails_only_its_requests_and_is_started_again() -> None:
    api = CrashingAPI()
    with LitServer(api, accelerator="cpu", worker_mode="process").start(port=0) as server:
        first_pid = server.status.workers[0].pid
        assert first_pid is not None
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            doomed = pool.submit(post, server, {"input": "crash"})
            assert api.entered.acquire(20)
            waiting = [pool.submit(post, server, {"input": i}) for i in range(5)]
            assert wait_until(lambda: server.status.endpoints[0].in_flight == 6)
            os.kill(first_pid, signal.SIGKILL)
            assert (doomed.result(20).status_code, doomed.result(20).json()) == (
                500,
                {"detail": "Internal server error"},
            )
            # While the new process runs setup() again, the server is not ready.
            assert wait_until(lambda: server.status.workers[0].restarts == 1)
            assert requests.get(server.url + "/health", timeout=10).status_code == 503
            api.second_setup_gate.set()
            assert [f.result(20).json() for f in waiting] == [{"output": i * i} for i in range(5)]
        status = server.status
        worker = status.workers[0]
        assert worker.pid != first_pid and worker.state is WorkerState.IDLE
        assert requests.get(server.url + "/health", timeout=10).text == "ok"
        endpoint = status.endpoints[0]
        assert (endpoint.ok, endpoint.server_errors) == (5, 1)
        assert status.last_error is not None and "exited" in status.last_error.summary
        assert len(api.setups.values()) == 2
    assert is_gone(first_pid)


def test_without_restarts_a_dead_worker_process_leaves_the_server_not_ready() -> None:
    api = CrashingAPI()
    with LitServer(api, accelerator="cpu", worker_mode="process", restart_workers=False, timeout=2).start(
        port=0
    ) as server:
        pid = server.status.workers[0].pid
        assert pid is not None
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            doomed = pool.submit(post, server, {"input": "crash"})
            assert api.entered.acquire(20)
            waiting = pool.submit(post, server, {"input": 3})  # held by the process, waiting to start
            assert wait_until(lambda: server.status.endpoints[0].in_flight == 2)
            assert wait_until(lambda: server.status.endpoints[0].queue_depth == 1)  # not in the endpoint's queue
            os.kill(pid, signal.SIGKILL)
            assert doomed.result(20).status_code == 500
            assert waiting.result(20).status_code == 500  # no process will come for it: not left to time out
        assert wait_until(lambda: server.status.workers[0].state is WorkerState.FAILED)
        assert requests.get(server.url + "/health", timeout=10).status_code == 503
        assert post(server, {"input": 2}).status_code == 504  # nobody left to run it


def test_setup_failing_in_a_worker_process_raises_the_users_error_with_its_traceback() -> None:
    server = LitServer(FailingSetupAPI(), accelerator="cpu", worker_mode="process")
    with pytest.raises(WorkerSetupError, match="model weights not found") as caught:
        server.start(port=0)
    cause = caught.value.__cause__
    assert isinstance(cause, RuntimeError)
    assert "in the worker process" in str(cause.__cause__) and "Traceback" in str(cause.__cause__)
    assert [t.name for t in threading.enumerate() if t.name.startswith("litserve-")] == []


class Item(BaseModel):
    text: str = Field(alias="inputText")


class AliasAPI(LitAPI):
    def decode_request(self, request: Item) -> str:
        return request.text

    def predict(self, x: str) -> str:
        return x.upper()


def test_body_models_with_aliases_cross_to_the_worker_process(lit_server: Any) -> None:
    server = lit_server(AliasAPI(), worker_mode="process")
    assert post(server, {"inputText": "hi"}).json() == "HI"
    assert post(server, {"text": "hi"}).status_code == 422
    assert server.status.workers[0].restarts == 0


@pytest.mark.integration
def test_worker_processes_exit_when_the_server_process_is_killed_and_never_run_main(tmp_path: Any) -> None:
    marker = tmp_path / "main-body-ran"
    script = tmp_path / "serve.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, threading
            with open({str(marker)!r}, "a") as f:  # the script's body: must run once, here only
                f.write(str(os.getpid()) + "\\n")
            from litserve import LitAPI, LitServer

            class Echo(LitAPI):
                def predict(self, x):
                    return x

            if __name__ == "__main__":
                server = LitServer(Echo(), accelerator="cpu", devices=2, worker_mode="process")
                server.start(port={free_port()})
                assert server.client().predict([1]) == [1]
                print(" ".join(str(w.pid) for w in server.status.workers), flush=True)
                threading.Event().wait(60)
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        child_pids = [int(pid) for pid in line.split()]
        assert len(child_pids) == 2, line
        parent.kill()  # SIGKILL: no atexit, no stop()
        parent.wait(10)
        assert wait_until(lambda: all(is_gone(pid) for pid in child_pids), 20), "a worker process outlived its server"
        assert marker.read_text().split() == [str(parent.pid)]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()


def test_ctrl_c_in_a_terminal_lets_the_worker_process_finish_what_it_holds(tmp_path: Any) -> None:
    """A terminal's Ctrl+C goes to the whole foreground process group: the worker processes as well as
    the server. The server stops gracefully; its worker processes must not die of the same SIGINT first."""
    entered, gate, port = tmp_path / "entered", tmp_path / "gate", free_port()
    script = tmp_path / "serve.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, time
            from litserve import LitAPI, LitServer

            class Slow(LitAPI):
                def predict(self, x):
                    open({str(entered)!r}, "w").close()
                    deadline = time.monotonic() + 30
                    while not os.path.exists({str(gate)!r}) and time.monotonic() < deadline:
                        time.sleep(0.01)
                    return x

            if __name__ == "__main__":
                LitServer(Slow(), accelerator="cpu", worker_mode="process").run(port={port}, generate_client_file=False)
            """
        )
    )
    server = subprocess.Popen(
        [sys.executable, str(script)], stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True
    )
    assert server.stderr is not None
    log = _LogTail(server.stderr)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: _answers(url + "/health"), 60), "the server never became ready"
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(requests.post, url + "/predict", json={"input": 7}, timeout=60)
            assert wait_until(entered.exists, 20)
            os.killpg(server.pid, signal.SIGINT)  # as the terminal does
            assert wait_until(lambda: "stopping on request" in log.text(), 20)  # the server heard it
            gate.touch()
            answer = held.result(30)
        assert (answer.status_code, answer.json()) == (200, {"input": 7})
        assert server.wait(30) == 0
        log.reader.join(10)
        assert "KeyboardInterrupt" not in log.text() and "Traceback" not in log.text(), log.text()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        log.reader.join(10)
        server.stderr.close()


class _LogTail:
    """What a process wrote to a pipe so far, read by a thread until the pipe ends."""

    def __init__(self, stream: Any) -> None:
        self._lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self._lines.extend(iter(stream.readline, "")), daemon=True)
        self.reader.start()

    def text(self) -> str:
        return "".join(self._lines)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_the_status_views_show_each_worker_process() -> None:
    from litserve.notebook import status_html, status_text

    with LitServer(SquareAPI(), accelerator="cpu", devices=2, worker_mode="process").start(port=0) as server:
        status = server.status
        pids = [w.pid for w in status.workers]
        text, page = status_text(status), status_html(status)
        for pid in pids:
            assert f"pid {pid}, 0 restarts" in text
            assert f"<td>{pid}</td><td>0</td>" in page


def _cuda_devices() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_devices() < 2, reason="needs two CUDA devices")
def test_each_worker_process_sees_its_own_gpu() -> None:
    class DeviceAPI(LitAPI):
        def setup(self, device: str) -> None:
            import torch as child_torch

            self.tensor = child_torch.ones(1, device=device)

        def predict(self, x: Any) -> Any:
            import torch as child_torch

            return {"device": str(self.tensor.device), "current": child_torch.cuda.current_device(), "pid": os.getpid()}

    with LitServer(DeviceAPI(), accelerator="cuda", devices=2, worker_mode="process").start(port=0) as server:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: post(server, i).json(), range(32)))
        by_pid: dict[int, set[str]] = {}
        for answer in answers:
            by_pid.setdefault(answer["pid"], set()).add(answer["device"])
            assert answer["device"] == f"cuda:{answer['current']}"
        assert sorted(d for devices in by_pid.values() for d in devices) == ["cuda:0", "cuda:1"]
        assert [w.device for w in server.status.workers] == ["cuda:0", "cuda:1"]


# --- the socket to a worker process: failures on the way -------------------------------------------------


def _book_on_a_socket(credits: int, capacity: int | None = None) -> tuple[Any, Any, Any, Any, Any]:
    """An in-flight book and its channel over one end of a socket pair, on a loop this thread runs."""
    from litserve.engine.bridge import LoopHandle
    from litserve.engine.messages import InferenceRequest
    from litserve.engine.request_queue import RequestQueue
    from litserve.hooks import plan_hooks
    from litserve.process.book import InFlightBook
    from litserve.process.channel import Channel
    from litserve.process.wire import FrameReader
    from litserve.status import ErrorLog, WorkerCounters

    source: RequestQueue[InferenceRequest] = RequestQueue()
    book = InFlightBook(
        "litserve-proxy-cpu-0", source, plan_hooks(SquareAPI()), credits, WorkerCounters(), ErrorLog(), None, capacity
    )
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    loop = asyncio.new_event_loop()
    closed = loop.create_future()
    handle = LoopHandle(loop, threading.get_ident())  # this thread plays the loop's
    channel = Channel(ours, FrameReader(), handle, book.receive, lambda: closed.set_result(True))
    channel.open()  # as right after a handshake
    return source, book, (channel, handle), theirs, (loop, closed)


def _queue(source: Any, *inputs: int) -> list[concurrent.futures.Future[Any]]:
    from litserve.engine.bridge import FutureReply
    from litserve.engine.messages import Cancellation, InferenceRequest

    futures: list[concurrent.futures.Future[Any]] = []
    for i in inputs:
        futures.append(concurrent.futures.Future())
        source.put_nowait(InferenceRequest({"input": i}, FutureReply(futures[-1]), None, Cancellation()))
    return futures


def test_a_write_to_a_worker_process_that_just_died_puts_the_request_back_and_stops_sending() -> None:
    """The child died and its end of stream is not read yet: the next write fails. That request must
    wait for the restarted child, and the rest of the queue must not be sent to the dead one."""
    source, book, (channel, handle), theirs, (loop, closed) = _book_on_a_socket(credits=4)
    theirs.close()  # the child is gone
    try:
        futures = _queue(source, *range(100))
        book.attach(channel, handle)
        assert source.qsize() == 100
        assert not any(f.done() for f in futures)
        assert source.get_nowait().payload == {"input": 0}  # back at the head, in order
        assert loop.run_until_complete(asyncio.wait_for(closed, 10))  # then its end of stream ends the channel
    finally:
        theirs.close()
        loop.close()


def test_a_dead_worker_process_fails_only_what_it_could_have_started_and_the_rest_waits_for_the_next() -> None:
    """It holds its capacity (one running here) and one more waiting inside it; its workers take them in
    the order they were sent. When it dies, the oldest one fails; the one that waited goes back to the
    head of the queue, ahead of what never left it."""
    from litserve.engine.messages import Outcome

    source, book, (channel, handle), theirs, (loop, _) = _book_on_a_socket(credits=2, capacity=1)
    try:
        running, waited, queued = _queue(source, 1, 2, 3)
        book.attach(channel, handle)
        assert book.held == 2 and source.qsize() == 1
        assert source.parked == 1 and source.depth() == 2  # the one waiting inside still counts as queued
        assert book.fail_all(Outcome(500, b"died"), keep_unstarted=True) == 1
        assert source.parked == 0 and source.depth() == 2
        assert running.result(0).status == 500 and not waited.done() and not queued.done()
        assert [source.get_nowait().payload for _ in range(2)] == [{"input": 2}, {"input": 3}]
        assert book.held == 0
    finally:
        channel.close()
        theirs.close()
        loop.close()


def test_a_stopping_server_answers_everything_a_worker_process_held() -> None:
    from litserve.engine.messages import Outcome

    source, book, (channel, handle), theirs, (loop, _) = _book_on_a_socket(credits=2, capacity=1)
    try:
        held = _queue(source, 1, 2)
        book.attach(channel, handle)
        assert book.fail_all(Outcome(503, b"stopping")) == 2
        assert [f.result(0).status for f in held] == [503, 503] and source.qsize() == 0
    finally:
        channel.close()
        theirs.close()
        loop.close()


def test_answers_a_worker_process_sent_before_dying_still_reach_their_requests() -> None:
    """Two answers arrive in one read; handling the first sends the next request, which fails (the
    process is gone). The second answer must still be delivered, not replaced by a 500."""
    from litserve.engine.messages import Outcome
    from litserve.process.messages import Answer, Request, decode, encode
    from litserve.process.wire import FrameReader, send_all

    source, book, (channel, handle), theirs, (loop, closed) = _book_on_a_socket(credits=2)
    try:
        first, second = _queue(source, 1, 2)
        book.attach(channel, handle)  # both are sent
        reader, sent = FrameReader(), []
        while len(sent) < 2:
            sent += [decode(wire_form) for wire_form in reader.feed(theirs.recv(1 << 16))]
        assert [type(m) for m in sent] == [Request, Request]
        (third,) = _queue(source, 3)  # waits: no credit left
        send_all(
            theirs,
            [
                *encode(Answer(sent[0].request_id, Outcome(200, b"1"))),
                *encode(Answer(sent[1].request_id, Outcome(200, b"4"))),
            ],
        )
        theirs.close()  # and the process dies
        assert loop.run_until_complete(asyncio.wait_for(closed, 10))
        assert (first.result(0).body, second.result(0).body) == (b"1", b"4")
        assert not third.done() and source.get_nowait().payload == {"input": 3}  # back in the queue
    finally:
        theirs.close()
        loop.close()


class ArraysAPI(LitAPI):
    def decode_request(self, request: Any) -> Any:
        return request["arrays"]

    def predict(self, arrays: Any) -> Any:
        return float(sum(a.sum() for a in arrays))

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


def test_a_payload_of_thousands_of_arrays_crosses_to_the_worker_process(start_server: Any) -> None:
    """Each array is its own out-of-band buffer: more than one sendmsg() may carry (IOV_MAX)."""
    server = start_server(ArraysAPI())
    arrays = [np.full(3, i, dtype=np.float64) for i in range(3000)]
    assert server.predict({"arrays": arrays}) == {"output": 3.0 * sum(range(3000))}


def test_requests_a_worker_process_holds_when_stop_must_kill_it_are_answered() -> None:
    api = GatedPredictAPI()
    server = LitServer(api, accelerator="cpu", worker_mode="process", shutdown_timeout=0.5).start(port=0)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(server.predict, {"input": 2})
            assert api.entered.acquire(20)
            server.stop()  # the child is stuck in predict past the stop deadline
            with pytest.raises(RequestFailedError) as caught:
                held.result(20)
        assert caught.value.status_code == 503
    finally:
        api.gate.set()
        server.stop()


def test_a_payload_the_worker_process_cannot_unpickle_fails_alone_and_frees_its_slot(tmp_path: Any) -> None:
    """A payload of a class the worker process cannot import (here: made importable in the server only
    after the worker process started; in real life, a class from a script's __main__)."""
    (tmp_path / "late_module.py").write_text("class Late:\n    pass\n")
    api = SquareAPI()  # max_batch_size=1, one worker: the child may hold one request at a time
    with LitServer(api, accelerator="cpu", worker_mode="process").start(port=0) as server:
        sys.path.insert(0, str(tmp_path))
        try:
            import late_module

            with pytest.raises(RequestFailedError) as caught:
                server.predict({"input": late_module.Late()})
            assert caught.value.status_code == 500
            assert server.status.last_error is not None
            assert "late_module" in server.status.last_error.summary
            assert server.predict({"input": 3}) == {"output": 9}  # its slot came back
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop("late_module", None)


def test_a_stop_is_never_undone_by_a_later_state_change() -> None:
    """join() can land while the loop opens a restarted process's channel or sees one die: whatever
    the loop then writes, the worker stays stopping (no restart), and what it held is answered 503."""
    from litserve.engine.bridge import FutureReply
    from litserve.engine.messages import Cancellation, InferenceRequest
    from litserve.engine.request_queue import RequestQueue
    from litserve.hooks import plan_hooks
    from litserve.process.messages import ChildInit
    from litserve.process.supervisor import ChildState, ProcessWorker
    from litserve.status import ErrorLog

    source: RequestQueue[InferenceRequest] = RequestQueue()
    worker = ProcessWorker(
        "litserve-proxy-cpu-0",
        ChildInit(b"", "cpu", ("w",), ()),
        source,
        ErrorLog(),
        plan_hooks(SquareAPI()),
        2,
        1,
        True,
    )
    worker._stopping.set()  # what join() does first
    worker._set_state(ChildState.SERVING, WorkerState.IDLE)  # the loop opening a channel
    assert worker.state is ChildState.STOPPING
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    worker.book._pending[1] = InferenceRequest({"input": 1}, FutureReply(future), None, Cancellation())
    worker._channel_closed()  # the process ended
    assert worker.state is ChildState.STOPPING
    assert future.result(0).status == 503


def test_when_the_http_loop_dies_worker_processes_end_and_waiting_callers_are_answered(worker_mode: str) -> None:
    """Serving failed and the loop ended without a stop: in process mode nothing can reach the worker
    processes any more, so a predict() without a timeout must be answered at once, not wait forever;
    worker threads need no loop and go on serving predict()."""
    server = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode, timeout=False).start(port=0)
    try:
        running = server._life.running
        assert running is not None
        ended: concurrent.futures.Future[None] = concurrent.futures.Future()

        def die() -> None:  # what the HTTP thread's exit hook does, on its thread
            running.pool.loop_ended()
            ended.set_result(None)

        running.http._loop.call_soon_threadsafe(die)  # type: ignore[union-attr]
        ended.result(10)
        if worker_mode == "thread":
            assert server.predict({"input": 2}) == {"output": 4}
        else:
            with pytest.raises(RequestFailedError) as caught:
                server.predict({"input": 2})
            assert caught.value.status_code == 503
            assert wait_until(lambda: all(w.state is WorkerState.STOPPED for w in server.status.workers))
    finally:
        server.stop()
    assert server.state.value == "stopped"
