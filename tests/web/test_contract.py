"""Every row of WIRE.md's "What a request gets" table.

Rows about what a request gets run on Quart's in-process test client (`start_app`); rows about the
socket, concurrency, stopping and time keep a real server (`start_server`)."""

from __future__ import annotations

import concurrent.futures
import hmac
import io
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from pydantic import BaseModel
from werkzeug.datastructures import FileStorage

from litserve import HTTPException, LitAPI, LitServer
from litserve.request_context import RequestContext
from litserve.runtime.sockets import is_loopback
from litserve.testing import serving
from tests.apis import GatedPredictAPI, SquareAPI
from tests.app_client import AppClient
from tests.helpers import post, raw_request, wait_until
from tests.sync import CrossEvent, CrossSemaphore

Start = Callable[..., LitServer]
StartApp = Callable[..., AppClient]


# --- success and malformed bodies --------------------------------------------------------------------


def test_success_is_compact_json(start_app: StartApp) -> None:
    response = start_app(SquareAPI()).post({"input": 4.0})
    assert (response.status_code, response.headers["content-type"], response.content) == (
        200,
        "application/json",
        b'{"output":16.0}',
    )


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe", b'{"input": 1'])
def test_body_that_is_not_json_is_400(start_app: StartApp, body: bytes) -> None:
    server = start_app(SquareAPI())
    response = server.post(data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"detail": "Request body is not valid JSON"}
    assert server.status.endpoints[0].client_errors == 1


class Item(BaseModel):
    name: str
    count: int


class Out(BaseModel):
    label: str


class ModelAPI(LitAPI):
    def decode_request(self, request: Item) -> str:
        assert isinstance(request, Item)
        return request.name * request.count

    def predict(self, x: str) -> str:
        return x

    def encode_response(self, output: str) -> Out:
        return Out(label=output)


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"name": "a", "count": 1'])
def test_body_that_is_not_json_is_400_on_a_pydantic_endpoint_too(start_app: StartApp, body: bytes) -> None:
    server = start_app(ModelAPI())
    response = server.post(data=body, headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (400, {"detail": "Request body is not valid JSON"})
    assert server.post({"name": "a"}).status_code == 422  # JSON the model refuses stays a 422


def test_pydantic_model_validates_and_serialises(start_app: StartApp) -> None:
    server = start_app(ModelAPI())
    assert server.post({"name": "ab", "count": 2}).json() == {"label": "abab"}


def test_pydantic_rejection_is_422_with_its_errors_and_no_urls(start_app: StartApp) -> None:
    server = start_app(ModelAPI())
    response = server.post({"name": "ab", "count": "many"})
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert [(e["type"], e["loc"], e["input"]) for e in errors] == [("int_parsing", ["count"], "many")]
    assert all(set(e) == {"type", "loc", "msg", "input"} for e in errors)
    assert "url" not in response.text
    assert server.post(data=b"{oops").status_code == 400  # not JSON at all: WIRE.md says 400, not 422


# --- forms, files and the request context ---------------------------------------------------------------


class FormAPI(LitAPI):
    def decode_request(self, request: Any) -> Any:
        upload = request["file"]
        return {"name": request["name"], "file": upload.filename, "size": len(upload.read())}

    def predict(self, x: Any) -> Any:
        return x


def test_multipart_fields_and_files_reach_decode_request(start_app: StartApp) -> None:
    server = start_app(FormAPI())
    upload = FileStorage(io.BytesIO(b"\x89PNG" * 10), filename="cat.png", content_type="image/png")
    response = server.post(form={"name": "cat"}, files={"file": upload})
    assert response.json() == {"name": "cat", "file": "cat.png", "size": 40}


class UrlencodedAPI(LitAPI):
    def predict(self, x: Any) -> Any:
        return dict(x)


def test_urlencoded_form_reaches_decode_request(start_app: StartApp) -> None:
    assert start_app(UrlencodedAPI()).post(form={"a": "1", "b": "two"}).json() == {"a": "1", "b": "two"}


class ContextAPI(LitAPI):
    def decode_request(self, request: Any, context: RequestContext) -> Any:
        context["seen_in_decode"] = request["input"]
        return request["input"]

    def predict(self, x: Any, context: RequestContext) -> Any:
        return {
            "x": x,
            "user": context.headers.get("x-user"),
            "q": context.query_params.get("q"),
            "path": context.path,
            "method": context.method,
            "from_decode": context["seen_in_decode"],
        }


def test_hooks_that_ask_for_context_see_headers_query_and_path(start_app: StartApp) -> None:
    server = start_app(ContextAPI())
    response = server.post({"input": 5}, query_string={"q": "hello"}, headers={"X-User": "ada"})
    assert response.json() == {
        "x": 5,
        "user": "ada",
        "q": "hello",
        "path": "/predict",
        "method": "POST",
        "from_decode": 5,
    }


# --- API keys and authorize() ---------------------------------------------------------------------------

INVALID_KEY = {"detail": "Invalid API Key. Check that you are passing a correct 'X-API-Key' in your header."}


def test_api_key_from_the_environment_is_read_at_start(monkeypatch: pytest.MonkeyPatch, worker_mode: str) -> None:
    server = LitServer(SquareAPI(), accelerator="cpu", worker_mode=worker_mode)
    monkeypatch.setenv("LIT_SERVER_API_KEY", "s3cret")  # set after construction: read by start()
    with server.start(port=0):
        assert post(server, {"input": 2}).status_code == 401
        assert post(server, {"input": 2}).json() == INVALID_KEY
        assert post(server, {"input": 2}, headers={"X-API-Key": "wrong"}).status_code == 401
        assert post(server, {"input": 2}, headers={"X-API-Key": "s3cret"}).json() == {"output": 4}
        assert requests.get(server.url + "/health", timeout=10).status_code == 200
        assert requests.get(server.url + "/info", timeout=10).status_code == 401
        assert requests.get(server.url + "/", timeout=10).status_code == 401
        info = requests.get(server.url + "/info", headers={"X-API-Key": "s3cret"}, timeout=10)
        assert info.status_code == 200
        assert server.status.endpoints[0].client_errors == 3  # the three refused POSTs


def test_api_key_argument(start_app: StartApp) -> None:
    server = start_app(SquareAPI(), api_key="k")
    assert server.post({"input": 3}).status_code == 401
    assert server.post({"input": 3}, headers={"X-API-Key": "k"}).json() == {"output": 9}


def test_the_api_key_is_compared_in_constant_time(start_app: StartApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key check, right or wrong, as a header or a bearer token, goes through `hmac.compare_digest`
    (its time does not depend on where the strings differ); a plain `==` would never reach it."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    server = start_app(SquareAPI(), api_key="s3cret")
    assert server.post({"input": 3}, headers={"X-API-Key": "s3creT"}).status_code == 401
    assert server.post({"input": 3}, headers={"X-API-Key": "s3cret"}).json() == {"output": 9}
    assert compared == [(b"s3creT", b"s3cret"), (b"s3cret", b"s3cret")]
    compared.clear()
    assert server.get("/info", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert compared == [(b"s3cret", b"s3cret")]


class BearerAPI(SquareAPI):
    def authorize(self, request: RequestContext) -> bool:
        if request.headers.get("authorization") == "Bearer banned":
            raise HTTPException(403, "banned")
        return request.headers.get("authorization") == "Bearer good"


def test_authorize_hook_replaces_the_key_check(start_app: StartApp) -> None:
    server = start_app(BearerAPI(), api_key="ignored-for-this-api")
    assert server.post({"input": 3}, headers={"Authorization": "Bearer good"}).json() == {"output": 9}
    refused = server.post({"input": 3}, headers={"Authorization": "Bearer bad"})
    assert (refused.status_code, refused.json()) == (401, {"detail": "Unauthorized"})
    banned = server.post({"input": 3}, headers={"Authorization": "Bearer banned"})
    assert (banned.status_code, banned.json()) == (403, {"detail": "banned"})


def test_only_loopback_hosts_count_as_private() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.5")


# --- body limit -----------------------------------------------------------------------------------------


def test_body_larger_than_the_limit_is_413(start_app: StartApp) -> None:
    server = start_app(SquareAPI(), max_payload_size="1KB")
    response = server.post(data=b'{"input": "' + b"x" * 2000 + b'"}', headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (413, {"detail": "Payload too large"})
    assert server.post({"input": 3}).json() == {"output": 9}
    assert server.status.endpoints[0].client_errors == 1


def test_chunked_body_without_a_length_is_counted_too(start_server: Start) -> None:
    server = start_server(SquareAPI(), max_payload_size=1024)

    def chunks() -> Iterator[bytes]:
        yield b'{"input": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}'

    response = post(server, data=chunks(), headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (413, {"detail": "Payload too large"})


def test_bad_size_argument_is_explained() -> None:
    with pytest.raises(ValueError, match="not a size"):
        LitServer(SquareAPI(), accelerator="cpu", max_payload_size="lots")


# --- errors raised by hooks -----------------------------------------------------------------------------


class StarletteStyleError(Exception):
    def __init__(self, status_code: int, detail: Any) -> None:
        self.status_code = status_code
        self.detail = detail


class WerkzeugStyleError(Exception):
    code = 409
    description = "already exists"


class RaisingAPI(LitAPI):
    def decode_request(self, request: Any) -> Any:
        kind = request["kind"]
        if kind == "ours":
            raise HTTPException(404, "no such model")
        if kind == "starlette":
            raise StarletteStyleError(429, {"retry": "later"})
        if kind == "werkzeug":
            raise WerkzeugStyleError()
        return kind

    def predict(self, x: Any) -> Any:
        if x == "crash":
            raise RuntimeError("secret internals at /srv/model.bin")
        return x


@pytest.mark.parametrize(
    ("kind", "status", "detail"),
    [
        ("ours", 404, "no such model"),
        ("starlette", 429, {"retry": "later"}),
        ("werkzeug", 409, "already exists"),
    ],
)
def test_http_exceptions_from_hooks_keep_their_status(start_app: StartApp, kind: str, status: int, detail: Any) -> None:
    response = start_app(RaisingAPI()).post({"kind": kind})
    assert (response.status_code, response.json()) == (status, {"detail": detail})


def test_other_exceptions_are_an_opaque_500_and_kept_as_last_error(
    start_app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_app(RaisingAPI())
    with caplog.at_level(logging.ERROR, logger="litserve"):
        response = server.post({"kind": "crash"})
    assert (response.status_code, response.json()) == (500, {"detail": "Internal server error"})
    assert "secret" not in response.text
    last = server.status.last_error
    assert last is not None and "RuntimeError: secret internals" in last.summary
    assert "Traceback" in last.traceback
    # Logged with its traceback (in process mode the worker process's traceback, as text).
    assert [r for r in caplog.records if r.exc_info is not None or "Traceback" in r.getMessage()]
    assert server.post({"kind": "fine"}).json() == "fine"


class MismatchAPI(LitAPI):
    """Returns one output too few for any batch of more than one; its first predict waits for the gate."""

    def __init__(self) -> None:
        super().__init__(max_batch_size=4, batch_timeout=0.5)
        self.arrived = CrossSemaphore()
        self.gate = CrossEvent()

    def predict(self, x: Any) -> Any:
        self.arrived.release()
        assert self.gate.wait(10)
        return x[:-1] if len(x) > 1 else x

    def unbatch(self, output: Any) -> list[Any]:
        return list(output)


def test_batch_size_mismatch_fails_that_batch_with_500(start_server: Start) -> None:
    api = MismatchAPI()
    server = start_server(api)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        alone = pool.submit(post, server, 0)
        assert api.arrived.acquire(timeout=10)  # a batch of one runs; the next three queue as one batch
        together = [pool.submit(post, server, i) for i in (1, 2, 3)]
        assert wait_until(lambda: server.status.endpoints[0].in_flight == 4)
        api.gate.set()
        assert (alone.result(10).status_code, alone.result(10).json()) == (200, 0)
        for future in together:
            response = future.result(10)
            assert (response.status_code, response.json()) == (500, {"detail": "Batch size mismatch"})
    assert server.status.endpoints[0].batch_sizes == ((1, 1), (3, 1))


# --- overload, shutdown, timeouts -------------------------------------------------------------------------


def test_full_queue_is_503_with_retry_after(worker_mode: str) -> None:
    api = GatedPredictAPI()
    with (
        serving(api, worker_mode=worker_mode, max_queue_size=1) as server,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        running = pool.submit(post, server, {"input": 1})
        assert api.entered.acquire(timeout=10)  # the worker holds request 1
        queued = pool.submit(post, server, {"input": 2})
        assert wait_until(lambda: server.status.endpoints[0].queue_depth == 1)
        refused = post(server, {"input": 3})
        assert (refused.status_code, refused.json()) == (503, {"detail": "Server is overloaded"})
        assert refused.headers["Retry-After"] == "1"
        api.gate.set()
        assert running.result(10).json() == {"output": 1}
        assert queued.result(10).json() == {"output": 4}


def test_requests_reaching_a_stopping_server_get_503(start_server: Start) -> None:
    server = start_server(SquareAPI())
    # The gate is what stop() closes first; closing it alone holds the server in that moment.
    server._life.running.gate.close()  # type: ignore[union-attr]
    response = post(server, {"input": 1})
    assert (response.status_code, response.json()) == (503, {"detail": "Server is shutting down"})


def test_predict_outliving_the_timeout_is_504_and_the_server_goes_on(worker_mode: str) -> None:
    api = GatedPredictAPI()
    with serving(api, worker_mode=worker_mode, timeout=0.3, workers_per_device=2) as server:
        response = post(server, {"input": 2})
        assert (response.status_code, response.json()) == (504, {"detail": "Request timed out"})
        api.gate.set()  # the late result is discarded quietly
        assert post(server, {"input": 3}).json() == {"output": 9}
        endpoint = server.status.endpoints[0]
        assert (endpoint.timed_out, endpoint.ok) == (1, 1)


def test_queued_request_past_its_deadline_is_never_run(worker_mode: str) -> None:
    api = GatedPredictAPI()
    with serving(api, worker_mode=worker_mode, timeout=0.3) as server, concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, server, {"input": 1})
        assert api.entered.acquire(timeout=10)
        second = pool.submit(post, server, {"input": 2})  # waits in the queue behind the first
        assert first.result(10).status_code == 504
        assert second.result(10).status_code == 504
        api.gate.set()
        assert wait_until(lambda: server.status.endpoints[0].dropped_timed_out == 1)
        assert api.calls.values() == [1]


def test_clients_that_hang_up_while_queued_are_never_predicted(worker_mode: str) -> None:
    api = GatedPredictAPI()
    with serving(api, worker_mode=worker_mode) as server, concurrent.futures.ThreadPoolExecutor(1) as pool:
        port = server.port
        assert port is not None
        blocking = pool.submit(post, server, {"input": 1})
        assert api.entered.acquire(timeout=10)
        sockets = [raw_request(port, "/predict", b'{"input": %d}' % i) for i in (2, 3, 4)]
        assert wait_until(lambda: server.status.endpoints[0].queue_depth == 3)
        for sock in sockets:
            sock.close()
        assert wait_until(lambda: server.status.endpoints[0].cancelled == 3)
        api.gate.set()
        assert blocking.result(10).json() == {"output": 1}
        assert wait_until(lambda: server.status.endpoints[0].dropped_cancelled == 3)
        assert post(server, {"input": 5}).json() == {"output": 25}
        assert api.calls.values() == [1, 5]


# --- unknown routes -------------------------------------------------------------------------------------


def test_unknown_path_and_wrong_method_are_json(start_app: StartApp) -> None:
    server = start_app(SquareAPI())
    missing = server.get("/nope")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    wrong = server.get("/predict")
    assert (wrong.status_code, wrong.json()) == (405, {"detail": "Method Not Allowed"})
    assert "POST" in wrong.headers["Allow"]


def test_root_and_info(start_server: Start) -> None:
    server = start_server(SquareAPI(max_batch_size=2, batch_timeout=0.01), model_metadata={"name": "square"})
    assert requests.get(server.url + "/", timeout=10).text == "litserve running"
    info = requests.get(server.url + "/info", timeout=10).json()
    assert info["model"] == {"name": "square"}
    assert info["server"]["max_batch_size"] == {"/predict": 2}
    assert info["server"]["stream"] == {"/predict": False}
    assert info["server"]["devices"] == ["cpu"]


class UnhealthyAPI(SquareAPI):
    def __init__(self) -> None:
        super().__init__()
        self.healthy = CrossEvent()

    async def health(self) -> bool:  # async health checks are awaited
        return self.healthy.is_set()


def test_health_asks_the_litapi(start_app: StartApp) -> None:
    api = UnhealthyAPI()
    server = start_app(api)
    assert server.get("/health").status_code == 503
    api.healthy.set()
    assert server.get("/health").text == "ok"


def test_headers_past_the_limit_are_431_and_the_server_goes_on(start_server: Start) -> None:
    server = start_server(SquareAPI())
    assert server.port is not None
    sock = raw_request(server.port, "/predict", b'{"input": 2}', {"X-Big": "a" * 70_000})
    try:
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 431")  # Hypercorn's limit: 16 KiB of request head
    assert post(server, {"input": 3}).json() == {"output": 9}


class RaisingHealthAPI(SquareAPI):
    def health(self) -> bool:
        raise RuntimeError("probe failed")


def test_a_health_check_that_raises_is_not_ready(start_app: StartApp) -> None:
    server = start_app(RaisingHealthAPI())
    for _ in range(3):  # in process mode a worker may be the thread that reads the check: it must live on
        response = server.get("/health")
        assert (response.status_code, response.text) == (503, "not ready")
    assert server.post({"input": 3}).json() == {"output": 9}


class StreamUntilDeadlineAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(stream=True)
        self.gate = CrossEvent()

    def predict(self, x: Any) -> Iterator[Any]:
        yield {"first": True}
        self.gate.wait(10)
        yield {"second": True}


def test_a_stream_cut_by_its_deadline_counts_as_timed_out(start_server: Start) -> None:
    api = StreamUntilDeadlineAPI()
    server = start_server(api, timeout=1.0)  # far more than the first chunk takes, even in a loaded worker process
    response = post(server, {})
    assert response.content.splitlines()[-1] == b'{"error":"Request timed out","status":504}'
    api.gate.set()
    endpoint = server.status.endpoints[0]
    assert (endpoint.ok, endpoint.timed_out, endpoint.requests) == (0, 1, 1)  # one request, counted once
