"""start/stop/run over real sockets and real threads."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest
import requests

from litserve import (
    LitAPI,
    LitServer,
    PortInUseError,
    RequestFailedError,
    ServerState,
    ServerStateError,
    WorkerSetupError,
)
from litserve.runtime import registry
from tests.apis import FailingSetupAPI, GatedPredictAPI, GatedSetupAPI, SquareAPI
from tests.helpers import free_port, open_fd_count, port_is_free, post, wait_until
from tests.sync import CrossEvent, CrossSemaphore


def test_start_returns_a_ready_server_and_stop_frees_everything(worker_mode: str) -> None:
    server = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode).start(port=0)
    try:
        assert server.state is ServerState.RUNNING
        response = post(server, {"input": 4.0})
        assert response.status_code == 200
        assert response.content == b'{"output":16.0}'
        assert requests.get(f"{server.url}/health", timeout=10).text == "ok"
    finally:
        server.stop()
    assert server.state is ServerState.STOPPED
    assert port_is_free(server.port or 0)


def test_start_stop_start_on_the_same_port(worker_mode: str) -> None:
    server = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode).start(port=0)
    port = server.port
    assert port is not None
    server.stop()
    server.start(port=port)
    try:
        assert post(server, {"input": 3}).json() == {"output": 9}
    finally:
        server.stop()
    other = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode).start(port=port)
    try:
        assert post(other, {"input": 5}).json() == {"output": 25}
    finally:
        other.stop()


def test_twenty_start_stop_cycles_leak_no_threads_or_sockets(worker_mode: str) -> None:
    server = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode, workers_per_device=2)
    server.start(port=0)
    port = server.port
    assert port is not None
    assert post(server, {"input": 2}).json() == {"output": 4}
    server.stop()
    threads_before = threading.active_count()
    fds_before = open_fd_count()
    for i in range(20):
        server.start(port=port)
        with requests.Session() as session:
            assert session.post(f"{server.url}/predict", json={"input": i}, timeout=30).json() == {"output": i * i}
        server.stop()
    assert threading.active_count() == threads_before
    assert open_fd_count() == fds_before
    assert port_is_free(port)


def test_start_and_stop_are_idempotent_and_start_is_chainable(worker_mode: str) -> None:
    server = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode)
    assert server.start(port=0) is server
    assert server.start() is server  # already running: unchanged
    server.stop()
    server.stop()
    assert server.state is ServerState.STOPPED


def test_start_on_another_port_while_running_says_to_stop_first(worker_mode: str) -> None:
    server = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode).start(port=0)
    try:
        with pytest.raises(ServerStateError, match="stop"):
            server.start(port=free_port())
    finally:
        server.stop()


def test_context_manager_stops_the_server(worker_mode: str) -> None:
    with LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode).start(port=0) as server:
        assert post(server, {"input": 6}).json() == {"output": 36}
        port = server.port
    assert server.state is ServerState.STOPPED
    assert port is not None and port_is_free(port)


def test_start_inside_a_running_event_loop(worker_mode: str) -> None:
    async def main() -> dict[str, float]:
        server = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode).start(port=0)
        try:
            loop = asyncio.get_running_loop()
            response = await loop.run_in_executor(None, post, server, {"input": 1.5})
            return dict(response.json())
        finally:
            server.stop()

    assert asyncio.run(main()) == {"output": 2.25}


class WhoAPI(LitAPI):
    def predict(self, x: Any) -> Any:
        return {"x": x, "worker": f"{os.getpid()}/{threading.current_thread().name}"}


def test_one_request_at_a_time_is_served_by_the_same_worker_thread() -> None:
    # The worker that went to sleep last takes the next request, its model still warm in cache. Each
    # request is sent once both workers sleep in the queue (an event the queue counts, not a time), so
    # every one goes to the same worker; taking turns, as a first-in-first-out wake-up does, would not.
    # (Worker processes: their threads' queue is `process.child_queue`, covered in test_child_queue.)
    with LitServer(WhoAPI(), accelerator="cpu", workers_per_device=2).start(port=0) as server:
        running = server._life.running
        assert running is not None
        queue = running.endpoints[0].queue
        answers = []
        for i in range(12):
            assert wait_until(lambda: queue.sleeping() == 2)
            answers.append(post(server, {"input": i}).json())
    assert [a["x"] for a in answers] == [{"input": i} for i in range(12)]
    served = collections.Counter(a["worker"] for a in answers)
    assert len(served) == 1, served


def test_failing_setup_raises_from_start_and_leaves_nothing_running(worker_mode: str) -> None:
    port = free_port()
    server = LitServer(FailingSetupAPI(), accelerator="cpu", worker_mode=worker_mode, workers_per_device=2)
    with pytest.raises(WorkerSetupError, match="model weights not found") as caught:
        server.start(port=port)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert server.state is ServerState.FAILED
    assert port_is_free(port)


def test_taken_port_raises_from_start(worker_mode: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode)
        with pytest.raises(PortInUseError, match=f"port {port}") as caught:
            server.start(port=port)
        assert isinstance(caught.value, OSError)
        assert server.state is ServerState.FAILED


def test_starting_on_a_port_held_by_another_litserver_replaces_it(worker_mode: str) -> None:
    first = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode).start(port=0)
    port = first.port
    assert port is not None
    second = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode)
    try:
        second.start(port=port)
        assert first.state is ServerState.STOPPED
        assert post(second, {"input": 7}).json() == {"output": 49}
    finally:
        second.stop()
        first.stop()


def test_health_is_503_until_every_setup_finished(worker_mode: str) -> None:
    api = GatedSetupAPI()
    port = free_port()
    server = LitServer(api, accelerator="cpu", worker_mode=worker_mode)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = pool.submit(server.start, port=port)
        try:
            assert api.entered.wait(10)
            # The port is bound and served while setup() runs: probes see "not ready".
            response = requests.get(f"http://127.0.0.1:{port}/health", timeout=10)
            assert (response.status_code, response.text) == (503, "not ready")
            assert not started.done()
        finally:
            api.gate.set()
        started.result(timeout=10)
    try:
        response = requests.get(f"{server.url}/health", timeout=10)
        assert (response.status_code, response.text) == (200, "ok")
    finally:
        server.stop()


def test_stop_lets_an_in_flight_request_finish(worker_mode: str) -> None:
    api = GatedPredictAPI()
    server = LitServer(api, accelerator="cpu", worker_mode=worker_mode, shutdown_timeout=10).start(port=0)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        in_flight = pool.submit(post, server, {"input": 5})
        assert api.entered.acquire(timeout=10)
        stopping = pool.submit(server.stop)
        # The listener closes at once: new connections are refused while the old request runs.
        with pytest.raises(requests.ConnectionError):
            for _ in range(100):
                requests.get(f"{server.url}/health", timeout=10)
        assert not stopping.done()
        api.gate.set()
        assert in_flight.result(timeout=10).json() == {"output": 25}
        stopping.result(timeout=10)
    assert server.state is ServerState.STOPPED


def test_two_hundred_concurrent_requests_each_get_their_own_answer(worker_mode: str) -> None:
    server = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode, workers_per_device=2).start(port=0)
    try:
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            answers = list(pool.map(lambda i: post(server, {"input": i}).json(), range(200)))
        assert answers == [{"output": i * i} for i in range(200)]
        endpoint = server.status.endpoints[0]
        assert endpoint.ok == 200
        assert sum(w.served for w in endpoint.workers) == 200
    finally:
        server.stop()


def test_two_workers_per_device_run_two_predicts_at_the_same_time(worker_mode: str) -> None:
    api = GatedPredictAPI()
    server = LitServer(api, accelerator="cpu", worker_mode=worker_mode, workers_per_device=2).start(port=0)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, server, {"input": 2})
            second = pool.submit(post, server, {"input": 3})
            # Both predicts are inside the hook together before either may finish.
            assert api.entered.acquire(timeout=10)
            assert api.entered.acquire(timeout=10)
            api.gate.set()
            assert {first.result(10).json()["output"], second.result(10).json()["output"]} == {4, 9}
        names = sorted(w.name for w in server.status.workers)
        if worker_mode == "thread":
            assert names == ["litserve-worker-cpu-0", "litserve-worker-cpu-1"]
        else:  # one worker process for the device, with both threads inside
            assert names == ["litserve-proxy-cpu-0"]
            assert server.status.workers[0].pid is not None
    finally:
        server.stop()


class _LineWatcher(logging.Handler):
    def __init__(self, line: str) -> None:
        super().__init__()
        self.line = line
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.line:
            self.seen.set()


def test_run_logs_startup_lines_and_returns_when_stopped_from_another_thread(worker_mode: str) -> None:
    server = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode)
    watcher = _LineWatcher("Application startup complete.")
    litserve_logger = logging.getLogger("litserve")
    litserve_logger.addHandler(watcher)
    runner = threading.Thread(target=server.run, kwargs={"port": free_port(), "generate_client_file": False})
    try:
        runner.start()
        assert watcher.seen.wait(30)
        assert post(server, {"input": 8}).json() == {"output": 64}
    finally:
        server.stop()
        runner.join(10)
        litserve_logger.removeHandler(watcher)
        litserve_logger.setLevel(logging.NOTSET)
    assert not runner.is_alive()
    assert server.state is ServerState.STOPPED


SLOW_SCRIPT = """
import os, sys
from litserve import LitAPI, LitServer

ENTERED, GATE = sys.argv[2], sys.argv[3]

class Slow(LitAPI):
    def predict(self, x):
        fd = os.open(ENTERED, os.O_WRONLY)
        os.write(fd, b"x")
        os.close(fd)
        with open(GATE, "rb") as gate:
            gate.read(1)
        return x

if __name__ == "__main__":
    LitServer(Slow(), accelerator="cpu", shutdown_timeout=30).run(port=int(sys.argv[1]), generate_client_file=False)
"""


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_second_sigterm_while_stopping_does_not_break_the_stop(tmp_path: Any) -> None:
    entered, gate = CrossSemaphore(), CrossEvent()
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SCRIPT)
    port = free_port()
    stopping = threading.Event()
    ready = threading.Event()
    lines: list[str] = []
    process = subprocess.Popen(
        [sys.executable, str(script), str(port), entered.path, gate.path],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "Application startup complete." in line:
                ready.set()
            if "stopping on request" in line:
                stopping.set()
        ready.set()
        stopping.set()

    reader = threading.Thread(target=read_stderr, name="stderr-of-slow")
    reader.start()
    try:
        assert ready.wait(60), "".join(lines)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(requests.post, f"http://127.0.0.1:{port}/predict", json=[1], timeout=60)
            assert entered.acquire(30)
            process.send_signal(signal.SIGTERM)
            assert stopping.wait(30)  # stop() now waits for the request in flight
            process.send_signal(signal.SIGTERM)  # ignored: the stop already under way must finish
            gate.set()
            assert in_flight.result(30).json() == [1]
        assert process.wait(30) == 0, "".join(lines)
        assert "Traceback" not in "".join(lines)
        assert "litserve stopped" in "".join(lines)
    finally:
        gate.set()
        if process.poll() is None:
            process.kill()
            process.wait(10)
        reader.join(10)
        if process.stderr is not None:
            process.stderr.close()


class StopFromHookAPI(SquareAPI):
    server: LitServer | None = None

    def predict(self, x: Any) -> Any:
        assert StopFromHookAPI.server is not None
        StopFromHookAPI.server.stop()  # must neither deadlock nor raise
        return super().predict(x)


def test_stop_called_from_a_hook_stops_the_server_after_answering() -> None:
    server = LitServer(StopFromHookAPI(), accelerator="cpu").start(port=0)
    StopFromHookAPI.server = server
    try:
        assert post(server, {"input": 2}).json() == {"output": 4}
        assert server._life.stopped.wait(20)
        assert server.state is ServerState.STOPPED
    finally:
        StopFromHookAPI.server = None
        server.stop()
        for thread in threading.enumerate():
            if thread.name == "litserve-stopper":
                thread.join(10)


def test_two_threads_stopping_at_once_both_return_when_it_is_stopped() -> None:
    api = GatedPredictAPI()
    server = LitServer(api, accelerator="cpu", shutdown_timeout=10).start(port=0)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        in_flight = pool.submit(post, server, {"input": 3})
        assert api.entered.acquire(10)
        first = pool.submit(server.stop)
        second = pool.submit(server.stop)
        api.gate.set()
        first.result(20)
        second.result(20)
        assert server.state is ServerState.STOPPED
        assert in_flight.result(10).json() == {"output": 9}


class _Holder:
    def __init__(self) -> None:
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1


def test_the_port_registry_forgets_only_its_own_server() -> None:
    old, new = _Holder(), _Holder()
    registry.remember(54321, old)
    assert registry.holder_of(54321) is old
    registry.remember(54321, new)
    registry.forget(54321, old)  # a late forget by the replaced server must not drop the new one
    assert registry.holder_of(54321) is new
    assert registry.holder_of(0) is None  # port 0 never collides
    registry.forget(54321, new)
    assert registry.holder_of(54321) is None


@pytest.mark.slow
def test_requests_still_queued_behind_a_stuck_worker_are_answered_at_stop() -> None:
    api = GatedPredictAPI()
    server = LitServer(api, accelerator="cpu", timeout=False, shutdown_timeout=0).start(port=0)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        stuck = pool.submit(server.predict, {"input": 1})
        assert api.entered.acquire(10)
        queued = pool.submit(server.predict, {"input": 2})
        try:
            server.stop()  # the worker cannot be joined: it is inside predict
            with pytest.raises(RequestFailedError) as caught:
                queued.result(10)
            assert (caught.value.status_code, caught.value.detail) == (503, "Server is shutting down")
        finally:
            api.gate.set()
        assert stuck.result(10) == {"output": 1}
    for thread in threading.enumerate():
        if thread.name.startswith("litserve-worker"):
            thread.join(10)
