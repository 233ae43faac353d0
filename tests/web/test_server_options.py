"""LitServe's server arguments: route paths, the shutdown API, track_requests, client.py, and the no-ops."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from litserve import Callback, LitServer, ServerState
from litserve.extensions import SHUTDOWN_KEY_ENV, note_unneeded
from tests.apis import GatedPredictAPI, SquareAPI
from tests.helpers import free_port, post, wait_until

Start = Callable[..., LitServer]


@pytest.fixture(autouse=True)
def no_shutdown_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SHUTDOWN_KEY_ENV, raising=False)


def _get(server: LitServer, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(server.url + path, timeout=10, **kwargs)


# --- route paths -------------------------------------------------------------------------------------


def test_health_and_info_move_to_their_paths(lit_server: Start) -> None:
    server = lit_server(SquareAPI(), healthcheck_path="/v1/health", info_path="/v1/info", model_metadata={"v": 2})
    assert (_get(server, "/v1/health").status_code, _get(server, "/v1/health").text) == (200, "ok")
    info = _get(server, "/v1/info")
    assert info.status_code == 200 and info.json()["model"] == {"v": 2}
    assert info.json()["server"]["devices"] == ["cpu"]
    assert _get(server, "/health").status_code == 404
    assert _get(server, "/info").status_code == 404


def test_info_shows_model_metadata_by_default(lit_server: Start) -> None:
    server = lit_server(SquareAPI(), model_metadata={"name": "square", "version": 1})
    assert _get(server, "/info").json()["model"] == {"name": "square", "version": 1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"healthcheck_path": "health"}, "must be a path starting with '/'"),
        ({"info_path": "/"}, "must be a path starting with '/'"),
        ({"info_path": "/info/"}, "must not end with '/'"),
        ({"healthcheck_path": "/predict"}, "already the api_path"),
        ({"healthcheck_path": "/x", "info_path": "/x"}, "already the healthcheck_path"),
        ({"healthcheck_path": "/metrics"}, "reserved"),
        ({"enable_shutdown_api": True, "shutdown_path": "/predict"}, "already the api_path"),
        ({"enable_shutdown_api": True, "shutdown_path": "shutdown"}, "must be a path"),
        ({"model_metadata": {"fn": print}}, "model_metadata must be JSON serializable"),
        ({"metrics_path": "/predict"}, "already the api_path"),
        ({"status_path": "/health"}, "reserved"),
        ({"docs_path": "/x", "openapi_path": "/x"}, "already the openapi_path"),
        ({"metrics_path": "metrics"}, "must be a path"),
        ({"read_timeout": 0}, "read_timeout must be a number of seconds > 0"),
        ({"read_timeout": float("nan")}, "read_timeout must be a number of seconds > 0"),
    ],
)
def test_bad_paths_and_metadata_are_refused_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LitServer(SquareAPI(), **kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"server_timing": "yes"}, {"allowed_hosts": "myhost"}, {"allowed_hosts": ["ok", ""]}], ids=str
)
def test_bad_web_options_are_type_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match=next(iter(kwargs))):
        LitServer(SquareAPI(), **kwargs)


def test_a_disabled_shutdown_path_is_not_reserved(lit_server: Start) -> None:
    api = SquareAPI(api_path="/shutdown")
    server = lit_server(api)  # enable_shutdown_api is off: /shutdown is the LitAPI's
    assert post(server, {"input": 2}, path="/shutdown").json() == {"output": 4}


# --- the shutdown API ----------------------------------------------------------------------------------


def test_the_shutdown_api_is_off_by_default(lit_server: Start) -> None:
    server = lit_server(SquareAPI())
    assert requests.post(server.url + "/shutdown", headers={"Authorization": "Bearer x"}, timeout=10).status_code == 404


@pytest.fixture
def shutdown_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(SHUTDOWN_KEY_ENV, "let-me-stop-it")
    return "let-me-stop-it"


@pytest.mark.parametrize("header", [None, "Bearer wrong", "let-me-stop-it", "Basic let-me-stop-it"])
def test_shutdown_without_the_key_is_401_and_the_server_runs_on(
    lit_server: Start, shutdown_key: str, header: str | None
) -> None:
    server = lit_server(SquareAPI(), enable_shutdown_api=True)
    headers = {} if header is None else {"Authorization": header}
    denied = requests.post(server.url + "/shutdown", headers=headers, timeout=10)
    assert denied.status_code == 401
    assert "Invalid Bearer token for Shutdown API" in denied.json()["detail"]
    assert denied.headers["WWW-Authenticate"] == "Bearer"
    assert _get(server, "/shutdown").status_code == 405
    assert post(server, {"input": 3}).json() == {"output": 9}


@pytest.fixture
def stopper_threads_joined() -> Iterator[None]:
    yield
    for thread in threading.enumerate():
        if thread.name == "litserve-stopper":
            thread.join(30)


def test_shutdown_with_the_key_answers_then_stops_cleanly(
    start_server: Start, shutdown_key: str, stopper_threads_joined: None
) -> None:
    api = GatedPredictAPI()
    server = start_server(api, enable_shutdown_api=True, shutdown_path="/admin/stop", shutdown_timeout=10)
    port = server.port
    with _pool() as pool:
        in_flight = pool.submit(post, server, {"input": 7})
        assert api.entered.acquire(10)
        stop = requests.post(
            server.url + "/admin/stop", headers={"Authorization": f"Bearer {shutdown_key}"}, timeout=10
        )
        assert (stop.status_code, stop.text) == (200, "Server is initiating graceful shutdown.")
        api.gate.set()
        assert in_flight.result(10).json() == {"output": 49}  # in-flight work still finishes
    assert wait_until(lambda: server.state is ServerState.STOPPED, 30)
    assert server.start(port=port).state is ServerState.RUNNING  # the port was freed: it starts again


def test_the_key_is_read_at_start_and_made_when_missing(
    lit_server: Start, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, stopper_threads_joined: None
) -> None:
    with caplog.at_level(logging.WARNING, logger="litserve"):
        server = lit_server(SquareAPI(), enable_shutdown_api=True)
    [warning] = [r.getMessage() for r in caplog.records if SHUTDOWN_KEY_ENV in r.getMessage()]
    made = warning.split("shutdown key is ")[1].split(" ")[0]
    assert len(made) >= 32
    monkeypatch.setenv(SHUTDOWN_KEY_ENV, "set-later")  # read at start, not at construction: not yet
    assert requests.post(server.url + "/shutdown", headers=_bearer("set-later"), timeout=10).status_code == 401
    assert requests.post(server.url + "/shutdown", headers=_bearer(made), timeout=10).status_code == 200
    assert wait_until(lambda: server.state is ServerState.STOPPED, 30)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_shutdown_ends_run(worker_mode: str, shutdown_key: str, stopper_threads_joined: None) -> None:
    server = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode, enable_shutdown_api=True)
    port = free_port()
    runner = threading.Thread(target=server.run, kwargs={"port": port, "generate_client_file": False})
    runner.start()
    try:
        assert wait_until(lambda: server.state is ServerState.RUNNING, 30)
        assert requests.post(f"http://127.0.0.1:{port}/shutdown", headers=_bearer(shutdown_key), timeout=10).ok
        runner.join(30)
        assert not runner.is_alive()
        assert server.state is ServerState.STOPPED
    finally:
        server.stop()
        runner.join(10)
        logging.getLogger("litserve").setLevel(logging.NOTSET)


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(2)


# --- track_requests ----------------------------------------------------------------------------------


def test_active_requests_is_none_unless_tracked(lit_server: Start) -> None:
    server = lit_server(SquareAPI())
    assert server.active_requests is None
    assert post(server, {"input": 1}).json() == {"output": 1}
    assert server.active_requests is None


def test_track_requests_counts_requests_being_served(start_server: Start) -> None:
    api = GatedPredictAPI()
    server = start_server(api, track_requests=True)
    with _pool() as pool:
        held = [pool.submit(post, server, {"input": i}) for i in (1, 2)]
        assert wait_until(lambda: server.active_requests == 2, 10)
        assert _get(server, "/health").status_code == 200  # the server's own routes are not counted
        assert server.active_requests == 2
        api.gate.set()
        assert [f.result(10).json() for f in held] == [{"output": 1}, {"output": 4}]
    assert wait_until(lambda: server.active_requests == 0, 10)


# --- client.py -----------------------------------------------------------------------------------------


def test_generate_client_file_on_the_constructor(
    lit_server: Start, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    lit_server(SquareAPI())  # default: start() writes nothing
    assert not (tmp_path / "client.py").exists()
    lit_server(SquareAPI(), generate_client_file=True, worker_mode="thread").stop()
    assert (tmp_path / "client.py").exists()
    (tmp_path / "client.py").unlink()
    server = LitServer(SquareAPI(), accelerator="cpu", generate_client_file=True)
    server.start(port=0, generate_client_file=False).stop()  # the call's own choice wins
    assert not (tmp_path / "client.py").exists()
    with pytest.raises(TypeError, match="generate_client_file"):
        LitServer(SquareAPI(), generate_client_file="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(("constructor", "written"), [(None, True), (False, False)])
def test_run_writes_client_py_unless_the_constructor_says_no(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, constructor: bool | None, written: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    started = threading.Event()

    class Started(Callback):  # on_server_start comes once start() is done, client.py included
        def on_server_start(self, *args: Any, **kwargs: Any) -> None:
            started.set()

    server = LitServer(SquareAPI(), accelerator="cpu", generate_client_file=constructor, callbacks=[Started()])
    runner = threading.Thread(target=server.run, kwargs={"port": free_port()})
    runner.start()
    try:
        assert started.wait(30)
        assert os.path.exists(tmp_path / "client.py") is written
    finally:
        server.stop()
        runner.join(10)
        logging.getLogger("litserve").setLevel(logging.NOTSET)


# --- accepted, not needed --------------------------------------------------------------------------------


def test_litserve_arguments_not_needed_here_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="litserve"):
        LitServer(SquareAPI(), fast_queue=True, disable_openapi_url=True, loop="auto")  # the docs switch is real now
        LitServer(SquareAPI(), fast_queue=False, loop=None)  # defaults: nothing to say
        note_unneeded({"num_api_servers": 4, "api_server_worker_type": "process"})
    lines = [r for r in caplog.records if "not needed by this server" in r.getMessage()]
    assert len(lines) == 2 and all(r.levelno == logging.INFO for r in lines)
    assert "fast_queue=True" in lines[0].getMessage() and "loop='auto'" in lines[0].getMessage()
    assert "disable_openapi_url" not in lines[0].getMessage()
    assert "num_api_servers=4" in lines[1].getMessage()


def test_run_accepts_litserve_arguments(caplog: pytest.LogCaptureFixture) -> None:
    server = LitServer(SquareAPI(), accelerator="cpu")
    port = free_port()
    kwargs = {"num_api_servers": 2, "api_server_worker_type": "thread", "generate_client_file": False}
    runner = threading.Thread(target=server.run, args=("127.0.0.1", port), kwargs=kwargs)
    with caplog.at_level(logging.INFO, logger="litserve"):
        runner.start()
        try:
            assert wait_until(lambda: server.state is ServerState.RUNNING, 30)
            assert post(server, {"input": 2}).json() == {"output": 4}
        finally:
            server.stop()
            runner.join(10)
            logging.getLogger("litserve").setLevel(logging.NOTSET)
    assert any("num_api_servers=2" in r.getMessage() for r in caplog.records)


def test_an_unknown_keyword_is_still_a_type_error() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'fast_queu'"):
        LitServer(SquareAPI(), fast_queu=True)


def test_the_first_five_arguments_keep_litserve_positions() -> None:
    server = LitServer(SquareAPI(), "cpu", 1, 2, 12.5).start(port=0)
    try:
        info = _get(server, "/info").json()["server"]
    finally:
        server.stop()
    assert (info["devices"], info["workers_per_device"], info["timeout"]) == (["cpu"], 2, 12.5)


def test_track_requests_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="track_requests must be True or False"):
        LitServer(SquareAPI(), track_requests="yes")  # type: ignore[arg-type]


def test_shutdown_keys_never_show_in_reprs() -> None:
    from litserve.extensions import ShutdownKey
    from litserve.web.shutdown import ShutdownApi

    assert "secret" not in repr(ShutdownApi("/shutdown", "secret", lambda: None))
    key = ShutdownKey()
    assert repr(key) == "ShutdownKey()"
