"""Hot swap: new LitAPIs take over a running server's socket and open connections (`litserve.runtime.swap`)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import http.client
import json
import logging
import socket
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest
import requests

from litserve import LitAPI, LitServer, ServerState, ServerStateError, WorkerSetupError
from tests.helpers import Shared, port_is_free, post, wait_until
from tests.sync import CrossEvent, CrossSemaphore

pytestmark = pytest.mark.timeout(120)


class Tagged(LitAPI):
    """Answers {"output": x, "decoded_by": tag, "version": tag}: decode and encode each stamp their version, so
    an answer that crossed two versions would show it."""

    def __init__(self, tag: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tag = tag

    def decode_request(self, request: Any) -> Any:
        return (request["input"], self.tag)

    def predict(self, x: Any) -> Any:
        return x

    def encode_response(self, output: Any) -> Any:
        value, decoded_by = output
        return {"output": value, "decoded_by": decoded_by, "version": self.tag}


class GatedTagged(Tagged):
    """predict() announces each call, then waits until the test opens the gate."""

    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self.entered = CrossSemaphore()
        self.gate = CrossEvent()

    def predict(self, x: Any) -> Any:
        self.entered.release()
        assert self.gate.wait(20), "the test never opened the predict gate"
        return x


class GatedSetupTagged(Tagged):
    """setup() announces itself, then waits until the test opens the gate."""

    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self.entered = CrossEvent()
        self.gate = CrossEvent()

    def setup(self, device: str) -> None:
        self.entered.set()
        assert self.gate.wait(20), "the test never opened the setup gate"


class FailingSetupTagged(Tagged):
    def setup(self, device: str) -> None:
        raise RuntimeError("v2 weights not found")


class Model:
    """Stands for a model's weights: the test holds only weak references to it."""


class ModelTagged(Tagged):
    """setup() makes a Model and tells the test about it through a weak reference (thread mode only)."""

    def __init__(self, tag: str, models: Shared) -> None:
        super().__init__(tag)
        self.models = models

    def setup(self, device: str) -> None:
        self.model = Model()
        self.models.value.append(weakref.ref(self.model))


def server_of(api: LitAPI | list[LitAPI], worker_mode: str, **kwargs: Any) -> LitServer:
    return LitServer(api, accelerator="cpu", worker_mode=worker_mode, **kwargs)


def post_on(session: requests.Session, url: str, value: int) -> tuple[requests.Response, int]:
    """POST {"input": value} over `session`; the answer and the local port of the TCP connection it came on
    (a new connection has a new local port)."""
    response = session.post(url + "/predict", json={"input": value}, timeout=30, stream=True)
    local_port = int(response.raw.connection.sock.getsockname()[1])
    assert response.content  # read the body now: the connection goes back to the session's pool
    return response, local_port


@dataclass
class Caller:
    """A keep-alive session to a server that notes the local port of every connection it used."""

    session: requests.Session = field(default_factory=requests.Session)
    local_ports: set[int] = field(default_factory=set)

    def version(self, server: LitServer, value: int = 1) -> str:
        response, local_port = post_on(self.session, server.url, value)
        self.local_ports.add(local_port)
        answer = response.json()
        assert answer["decoded_by"] == answer["version"] and answer["output"] == value, answer
        return str(answer["version"])


@dataclass
class LoadClient:
    """One client posting in a loop over one keep-alive session, recording each answer's version."""

    url: str
    session: requests.Session = field(default_factory=requests.Session)
    versions: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    local_ports: set[int] = field(default_factory=set)
    seen: dict[str, threading.Event] = field(default_factory=lambda: {"v1": threading.Event(), "v2": threading.Event()})

    def run(self, stop: threading.Event, limit: int = 5000) -> None:
        for value in range(limit):
            if stop.is_set():
                return
            try:
                response, local_port = post_on(self.session, self.url, value)
                self.local_ports.add(local_port)
                answer = response.json()
                if (
                    response.status_code != 200
                    or answer["output"] != value
                    or answer["decoded_by"] != answer["version"]
                ):
                    self.failures.append(f"{response.status_code} {answer}")
                    return
            except Exception as exc:  # any failed request fails the test
                self.failures.append(repr(exc))
                return
            self.versions.append(answer["version"])
            if self.versions.count(answer["version"]) >= 5:
                self.seen[answer["version"]].set()


def test_a_swap_under_load_fails_no_request_and_keeps_the_connections(worker_mode: str) -> None:
    server = server_of(Tagged("v1"), worker_mode).start(port=0)
    port, stop = server.port, threading.Event()
    clients = [LoadClient(server.url) for _ in range(4)]
    with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
        running = [pool.submit(client.run, stop) for client in clients]
        try:
            assert all(client.seen["v1"].wait(30) for client in clients)
            assert server.swap(Tagged("v2")) is server
            assert all(client.seen["v2"].wait(30) for client in clients)
        finally:
            stop.set()
            for future in running:
                future.result(60)
    try:
        for client in clients:
            assert client.failures == []
            assert set(client.versions) == {"v1", "v2"}
            first_v2 = client.versions.index("v2")
            assert set(client.versions[first_v2:]) == {"v2"}, "a v1 answer came after this client saw v2"
            assert len(client.local_ports) == 1, "the client had to reconnect"
            client.session.close()
        assert server.port == port
        total = sum(len(client.versions) for client in clients)
        assert wait_until(lambda: server.status.endpoints[0].ok == total)  # the counts went on across the swap
    finally:
        server.stop()


def test_requests_queued_or_running_at_the_switch_finish_on_the_old_version(
    worker_mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = GatedTagged("v1")
    server = server_of(v1, worker_mode).start(port=0)
    before = server._life.running
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        try:
            running = pool.submit(post, server, {"input": 1})
            assert v1.entered.acquire(20)
            queued = pool.submit(post, server, {"input": 2})
            assert wait_until(lambda: server.status.endpoints[0].in_flight == 2)
            with caplog.at_level(logging.INFO, logger="litserve"):
                swapped = pool.submit(server.swap, Tagged("v2"))
                assert wait_until(lambda: server._life.running is not before)  # switched; v1 still busy
                assert not swapped.done()  # it waits for v1's requests
                assert Caller().version(server, 3) == "v2"
                v1.gate.set()
                assert running.result(20).json()["version"] == "v1"
                assert queued.result(20).json()["version"] == "v1"
                swapped.result(20)
        finally:
            v1.gate.set()
            server.stop()
    assert f"swapped GatedTagged for Tagged on http://127.0.0.1:{before.port}: 2 requests finished" in caplog.text


def answer_on(sock: socket.socket) -> tuple[int, Any]:
    """Read one HTTP answer from a raw socket (the connection stays open)."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, json.loads(response.read())


def test_a_body_still_being_read_at_the_switch_is_answered_by_the_old_version(worker_mode: str) -> None:
    server = server_of(Tagged("v1"), worker_mode).start(port=0)
    before = server._life.running
    assert before is not None and before.version is not None
    body = json.dumps({"input": 5}).encode()
    head = f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with (
        concurrent.futures.ThreadPoolExecutor(1) as pool,
        socket.create_connection(("127.0.0.1", server.port), 20) as sock,
    ):
        try:
            sock.sendall(head + body[:3])
            assert wait_until(lambda: before.version is not None and before.version.calls == 1)  # v1 reads the body
            swapped = pool.submit(server.swap, Tagged("v2"))
            assert wait_until(lambda: server._life.running is not before)
            assert not swapped.done()  # it waits for the request v1 is reading
            sock.sendall(body[3:])
            status, answer = answer_on(sock)
            assert (status, answer["version"]) == (200, "v1")
            swapped.result(20)
            sock.sendall(head + body)  # the same connection, now served by v2
            status, answer = answer_on(sock)
            assert (status, answer["version"]) == (200, "v2")
        finally:
            server.stop()


def test_a_failing_setup_raises_and_the_old_version_keeps_serving(worker_mode: str) -> None:
    server = server_of(Tagged("v1"), worker_mode).start(port=0)
    try:
        caller = Caller()
        assert caller.version(server) == "v1"
        with pytest.raises(WorkerSetupError, match="v2 weights not found"):
            server.swap(FailingSetupTagged("v2"))
        assert server.state is ServerState.RUNNING
        assert caller.version(server) == "v1"
        # The same through a re-run cell: the new server fails, the old one serves on.
        newcomer = server_of(FailingSetupTagged("v2"), worker_mode)
        with pytest.raises(WorkerSetupError):
            newcomer.start(port=server.port)
        assert (newcomer.state, server.state) == (ServerState.FAILED, ServerState.RUNNING)
        assert caller.version(server) == "v1"
        assert len(caller.local_ports) == 1
    finally:
        server.stop()


def test_rerunning_the_cell_on_the_same_port_swaps_in_place(worker_mode: str) -> None:
    old = server_of(Tagged("v1"), worker_mode).start(port=0)
    port = old.port
    assert port is not None
    new = server_of(Tagged("v2"), worker_mode)
    try:
        caller = Caller()
        assert caller.version(old) == "v1"
        new.start(port=port)
        assert (old.state, new.state, new.port) == (ServerState.STOPPED, ServerState.RUNNING, port)
        assert caller.version(new) == "v2"
        old.stop()  # the old object owns nothing any more: this must not close the shared socket
        assert caller.version(new) == "v2"
        assert len(caller.local_ports) == 1  # no reconnect was needed
    finally:
        new.stop()
        old.stop()
    assert port_is_free(port)


@dataclass
class TakeOver:
    """A re-run cell taking over while v1 holds a request: `new.start()` runs in `pool` and waits for v1."""

    v1: GatedTagged
    old: LitServer
    new: LitServer
    port: int
    pool: concurrent.futures.ThreadPoolExecutor
    held: concurrent.futures.Future[requests.Response]
    started: concurrent.futures.Future[LitServer]


@contextlib.contextmanager
def taking_over_while_v1_holds_a_request(worker_mode: str) -> Iterator[TakeOver]:
    v1 = GatedTagged("v1")
    old = server_of(v1, worker_mode).start(port=0)
    port = old.port
    assert port is not None
    new = server_of(Tagged("v2"), worker_mode)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        try:
            held = pool.submit(post, old, {"input": 1})
            assert v1.entered.acquire(20)
            started = pool.submit(new.start, port=port)  # returns once v1's request is answered
            assert wait_until(lambda: new.state is ServerState.RUNNING)  # from the switch on
            yield TakeOver(v1, old, new, port, pool, held, started)
        finally:
            v1.gate.set()
            new.stop()
            old.stop()
    assert port_is_free(port)


def test_a_rerun_cell_serves_and_runs_while_the_old_version_drains(worker_mode: str) -> None:
    with taking_over_while_v1_holds_a_request(worker_mode) as take:
        # The new server is RUNNING and healthy, though the old version still drains.
        assert not take.started.done()
        assert requests.get(f"http://127.0.0.1:{take.port}/health", timeout=10).status_code == 200
        assert Caller().version(take.new) == "v2"
        take.v1.gate.set()
        assert take.held.result(20).json()["version"] == "v1"
        assert take.started.result(20) is take.new
        assert (take.old.state, take.new.state) == (ServerState.STOPPED, ServerState.RUNNING)


def test_stopping_the_new_server_while_the_old_version_drains_stops_everything(worker_mode: str) -> None:
    with taking_over_while_v1_holds_a_request(worker_mode) as take:
        stopped = take.pool.submit(take.new.stop)
        assert wait_until(lambda: take.new.state is not ServerState.RUNNING)
        take.v1.gate.set()
        take.held.result(30)  # answered or refused at the stop: either way, it returns
        take.started.result(30)
        stopped.result(30)
        assert take.new.state is ServerState.STOPPED  # a stop during the drain is not undone by start() returning
    assert [t.name for t in threading.enumerate() if t.name.startswith("litserve-")] == []


def test_rerunning_the_cell_with_another_worker_mode_restarts_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    old = server_of(Tagged("v1"), "thread").start(port=0)
    port = old.port
    new = server_of(Tagged("v2"), "process")
    try:
        caller = Caller()
        assert caller.version(old) == "v1"
        with caplog.at_level(logging.INFO, logger="litserve"):
            new.start(port=port)
        assert (old.state, new.state, new.port) == (ServerState.STOPPED, ServerState.RUNNING, port)
        assert caller.version(new) == "v2"
        assert len(caller.local_ports) == 2  # a restart closes the connection (the check above would see it)
    finally:
        new.stop()
        old.stop()
    lines = [r.getMessage() for r in caplog.records if "no hot swap" in r.getMessage()]
    assert lines == [
        f"stopping the LitServer on port {port} and starting the new one "
        "(no hot swap: worker_mode changes from 'thread' to 'process')"
    ]


def test_the_old_workers_threads_and_models_are_gone_after_a_swap() -> None:
    models = Shared([])
    server = server_of(ModelTagged("v1", models), "thread", workers_per_device=2).start(port=0)
    try:
        old_workers = [t for t in threading.enumerate() if t.name.startswith("litserve-worker-")]
        assert len(old_workers) == 2 and len(models.value) == 2
        server.swap(Tagged("v2"))
        assert [t.name for t in old_workers if t.is_alive()] == []
        gc.collect()
        assert [ref for ref in models.value if ref() is not None] == [], "v1's model copies are still referenced"
        assert Caller().version(server) == "v2"
    finally:
        server.stop()


def test_the_old_worker_processes_exit_after_a_swap() -> None:
    server = server_of(Tagged("v1"), "process").start(port=0)
    try:
        old_pids = {w.pid for w in server.status.endpoints[0].workers}
        assert None not in old_pids
        old_threads = [t for t in threading.enumerate() if t.name.startswith("litserve-") and t.name != "litserve-http"]
        server.swap(Tagged("v2"))
        children = {child.pid for child in psutil.Process().children(recursive=True)}
        assert old_pids & children == set()
        assert [t.name for t in old_threads if t.is_alive()] == []
        new_pids = {w.pid for w in server.status.endpoints[0].workers}
        assert new_pids & old_pids == set() and new_pids <= children
    finally:
        server.stop()


def test_stop_after_a_swap_stops_everything_and_frees_the_port(worker_mode: str) -> None:
    server = server_of(Tagged("v1"), worker_mode).start(port=0)
    port = server.port
    assert port is not None
    server.swap(Tagged("v2"))
    server.swap([Tagged("v3"), Tagged("other", api_path="/other")])
    assert post(server, {"input": 1}, path="/other").json()["version"] == "other"
    server.stop()
    assert server.state is ServerState.STOPPED
    assert [t.name for t in threading.enumerate() if t.name.startswith("litserve-")] == []
    assert port_is_free(port)
    with pytest.raises(ServerStateError, match="stopped"):
        server.swap(Tagged("v4"))


def test_stop_during_a_swap_aborts_it_without_leaving_workers(worker_mode: str) -> None:
    server = server_of(Tagged("v1"), worker_mode).start(port=0)
    port = server.port
    v2 = GatedSetupTagged("v2")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        try:
            swapped = pool.submit(server.swap, v2)
            assert v2.entered.wait(20)
            stopped = pool.submit(server.stop)
            assert wait_until(lambda: server.state is ServerState.STOPPING)
            v2.gate.set()
            stopped.result(30)
            with pytest.raises(ServerStateError, match="stop\\(\\) was called during the swap"):
                swapped.result(30)
        finally:
            v2.gate.set()
            server.stop()
    assert server.state is ServerState.STOPPED
    assert port is not None and port_is_free(port)


def test_stop_while_a_swap_waits_for_the_old_version_stops_both(worker_mode: str) -> None:
    v1 = GatedTagged("v1")
    server = server_of(v1, worker_mode).start(port=0)
    port, before = server.port, server._life.running
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        try:
            running = pool.submit(post, server, {"input": 1})
            assert v1.entered.acquire(20)
            swapped = pool.submit(server.swap, Tagged("v2"))
            assert wait_until(lambda: server._life.running is not before)  # switched; waiting for v1's request
            stopped = pool.submit(server.stop)
            assert wait_until(lambda: server.state is ServerState.STOPPING)
            v1.gate.set()
            assert running.result(30).json()["version"] == "v1"
            assert swapped.result(30) is server
            stopped.result(30)
        finally:
            v1.gate.set()
            server.stop()
    assert server.state is ServerState.STOPPED
    assert [t.name for t in threading.enumerate() if t.name.startswith("litserve-")] == []
    assert port is not None and port_is_free(port)


def test_two_swaps_at_once_run_one_after_the_other(worker_mode: str) -> None:
    server = server_of(Tagged("v1"), worker_mode).start(port=0)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            swaps = [pool.submit(server.swap, Tagged(tag)) for tag in ("v2", "v3")]
            for swap in swaps:
                swap.result(30)
        assert Caller().version(server) in ("v2", "v3")
        assert len(server.status.endpoints[0].workers) == 1
        if worker_mode == "thread":
            assert len([t for t in threading.enumerate() if t.name.startswith("litserve-worker-")]) == 1
        else:
            alive = {child.pid for child in psutil.Process().children(recursive=True)}
            assert {w.pid for w in server.status.endpoints[0].workers} <= alive
    finally:
        server.stop()


def test_counts_go_on_across_a_swap_in_the_status_and_metrics() -> None:
    server = server_of(Tagged("v1"), "thread").start(port=0)
    try:
        caller = Caller()
        assert [caller.version(server) for _ in range(2)] == ["v1", "v1"]
        server.swap([Tagged("v2"), Tagged("new", api_path="/new")])
        assert caller.version(server) == "v2"
        assert post(server, {"input": 1}, path="/new").status_code == 200
        ok = {e.path: e.ok for e in server.status.endpoints}
        assert ok == {"/predict": 3, "/new": 1}
        # The totals the workers keep (batch sizes; dropped requests likewise) count the retired v1 workers too.
        batches = {e.path: e.batch_sizes for e in server.status.endpoints}
        assert batches == {"/predict": ((1, 3),), "/new": ((1, 1),)}
        metrics = requests.get(server.url + "/metrics", timeout=10).text
        assert 'litserve_requests_total{code="200",endpoint="/predict"} 3.0' in metrics
        assert 'litserve_requests_total{code="200",endpoint="/new"} 1.0' in metrics
    finally:
        server.stop()


def test_swap_checks_its_apis_and_needs_a_server_on_a_socket() -> None:
    server = server_of(Tagged("v1"), "thread")
    with pytest.raises(ServerStateError, match="created"):
        server.swap(Tagged("v2"))
    server.start(port=0)
    try:
        with pytest.raises(ValueError, match="/health"):
            server.swap(Tagged("v2", api_path="/health"))
        with pytest.raises(TypeError, match="LitAPI"):
            server.swap("not an api")  # type: ignore[arg-type]
        assert Caller().version(server) == "v1"
    finally:
        server.stop()


class CudaTagged(Tagged):
    """setup() puts `mib` MiB of weights on its CUDA device."""

    def __init__(self, tag: str, mib: int) -> None:
        super().__init__(tag)
        self.mib = mib

    def setup(self, device: str) -> None:
        import torch

        self.weights = torch.zeros(self.mib * 2**18, device=device)  # 4-byte floats


@pytest.mark.gpu
def test_a_swap_on_cuda_frees_the_old_workers_device_memory() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    server = server_of(CudaTagged("v1", mib=512), "thread", devices=1).start(port=0)
    try:
        before = torch.cuda.memory_allocated(0)
        assert before >= 512 * 2**20
        server.swap(CudaTagged("v2", mib=16))
        assert torch.cuda.memory_allocated(0) <= before - 480 * 2**20  # v1's weights are gone
        assert torch.cuda.memory_reserved(0) < 480 * 2**20  # and returned to the driver
        assert Caller().version(server) == "v2"
    finally:
        server.stop()
