"""The request inspector (`server.requests`) and replay (`server.replay`), on real servers in both worker modes."""

from __future__ import annotations

import concurrent.futures
import json
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel, Field

from litserve import HTTPException, LitAPI, LitServer, OpenAISpec, ReplayError
from litserve.inspector import PayloadSummary, RequestLog, RequestRecord
from litserve.inspector_view import RequestsView
from litserve.test_examples.openai_spec_example import TestAPI
from litserve.web.options import check_web_options
from tests.apis import GatedPredictAPI, SquareAPI
from tests.helpers import gathering, post, raw_request, wait_until

Start = Callable[..., LitServer]


class PickyAPI(SquareAPI):
    """Squares; a negative input is the client's fault (400), 13 breaks predict (500)."""

    def decode_request(self, request: Any) -> Any:
        if request["input"] < 0:
            raise HTTPException(400, "negative input")
        return request["input"]

    def predict(self, x: Any) -> Any:
        if x == 13:
            raise ValueError("thirteen is unlucky")
        return x**2


class BatchedAPI(SquareAPI):
    def predict(self, xs: Any) -> Any:
        return [x**2 for x in xs]


class CountdownStreamAPI(LitAPI):
    """Streams n, n-1, ..., 1; an input of 0 breaks the generator after its first chunk."""

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, n: int) -> Iterator[int]:
        if n == 0:
            yield -1
            raise RuntimeError("the countdown broke")
        yield from range(n, 0, -1)

    def encode_response(self, outputs: Iterator[int]) -> Iterator[dict[str, int]]:
        for value in outputs:
            yield {"left": value}


class WhereAPI(SquareAPI):
    def encode_response(self, output: Any) -> Any:
        return {"output": output, "thread": threading.current_thread().name}


def _record(server: LitServer, index: int = -1) -> RequestRecord:
    return server.requests[index]


# --- the log's bounds ----------------------------------------------------------------------------------


def _add(log: RequestLog, payload: Any) -> None:
    recorder = log.recorder("/predict")
    recorder.hold(payload)
    from litserve.engine.messages import Outcome

    recorder.answered(Outcome(200, b"{}"), 0.001)


def test_the_log_keeps_the_last_n_requests_and_only_their_payloads() -> None:
    log = RequestLog(3)
    for i in range(10):
        _add(log, {"input": i})
    records = log.records()
    assert [r.id for r in records] == [8, 9, 10]
    assert [log.find(r.id)[1] for r in records] == [b'{"input":7}', b'{"input":8}', b'{"input":9}']
    assert log.find(1) == (None, None)
    assert log.kept_bytes == 3 * len(b'{"input":7}')


def test_the_kept_payloads_stay_under_their_byte_budget() -> None:
    log = RequestLog(100, max_payload_bytes=100, max_kept_bytes=250)
    for i in range(10):
        _add(log, {"text": "x" * 80, "i": i})  # 97 bytes of JSON each: two fit in 250
    assert len(log.records()) == 10  # every record stays; the oldest lost their payloads
    assert log.kept_bytes <= 250
    assert [log.is_kept(r.id) for r in log.records()] == [False] * 8 + [True] * 2
    summary = log.records()[0].payload
    assert summary == PayloadSummary("dict", 97, summary.head, True) and summary.head.startswith('{"text":"xxx')


def test_a_payload_over_the_limit_is_summarised_never_kept() -> None:
    log = RequestLog(10, max_payload_bytes=64)
    _add(log, {"blob": "y" * 10_000})
    record = log.records()[0]
    assert record.payload is not None and not record.payload.is_kept
    assert record.payload.size_bytes == len(json.dumps({"blob": "y" * 10_000}, separators=(",", ":")))
    assert len(record.payload.head) <= 80
    assert log.kept_bytes == 0 and log.find(record.id)[1] is None


def test_a_payload_that_is_not_json_is_summarised() -> None:
    log = RequestLog(10)
    _add(log, {"x": float("nan")})
    record = log.records()[0]
    assert record.payload == PayloadSummary("dict", -1, "{'x': nan}", False)


# --- options ---------------------------------------------------------------------------------------------


def test_the_inspector_is_off_in_a_script_by_default() -> None:
    server = LitServer(SquareAPI(), accelerator="cpu")
    assert not server.requests.is_enabled and len(server.requests) == 0
    assert server.requests.to_dict()["enabled"] is False
    assert "inspect_requests=100" in repr(server.requests) and "inspect_requests" in server.requests._repr_html_()
    with pytest.raises(ReplayError, match="inspector is off"):
        server.replay(1)


def test_the_inspector_is_on_in_a_notebook_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ipython = types.ModuleType("IPython")
    fake_ipython.get_ipython = lambda: object()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert check_web_options().inspect_requests == 100
    assert check_web_options(inspect_requests=0).inspect_requests == 0


@pytest.mark.parametrize("bad", [-1, 1.5, True, "100"])
def test_bad_inspector_options_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="inspect_requests"):
        LitServer(SquareAPI(), accelerator="cpu", inspect_requests=bad)
    with pytest.raises(ValueError, match="inspect_payload_bytes"):
        LitServer(SquareAPI(), accelerator="cpu", inspect_requests=5, inspect_payload_bytes=bad)


def test_when_off_no_endpoint_records(start_server: Start) -> None:
    server = start_server(SquareAPI(), inspect_requests=0)
    assert post(server, {"input": 3}).json() == {"output": 9}
    assert all(endpoint.counters.inspector is None for endpoint in server._life.serving("test").endpoints)
    assert len(server.requests) == 0


# --- what a record holds ------------------------------------------------------------------------------------


def test_a_record_holds_the_requests_facts(start_server: Start) -> None:
    server = start_server(SquareAPI(), inspect_requests=10)
    assert post(server, {"input": 3}).json() == {"output": 9}
    record = _record(server)
    assert (record.path, record.status, record.outcome, record.is_stream) == ("/predict", 200, "ok", False)
    # The worker thread's name (in process mode, the thread's inside the device's worker process).
    assert record.worker == "litserve-worker-cpu-0"
    assert record.batch_size == 1 and record.batch_id is not None and record.batch_id.startswith(record.worker)
    assert record.queue_wait_s is not None and record.predict_s is not None and record.elapsed_s >= record.predict_s
    assert record.error is None and record.payload is not None and record.payload.is_kept
    assert record.to_dict()["payload"] == {"type": "dict", "size_bytes": 11, "head": '{"input":3}', "kept": True}


def test_requests_of_one_batch_share_its_id(start_server: Start) -> None:
    server = start_server(BatchedAPI(max_batch_size=2, batch_timeout=5), inspect_requests=10)
    with gathering(server), concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda x: post(server, {"input": x}).json(), [2, 3]))
    assert sorted(a["output"] for a in answers) == [4, 9]
    first, second = server.requests
    assert first.batch_id == second.batch_id is not None and first.batch_size == second.batch_size == 2


def test_failed_requests_carry_their_error_and_traceback(start_server: Start) -> None:
    server = start_server(PickyAPI(), inspect_requests=10)
    assert post(server, {"input": 13}).status_code == 500
    assert post(server, {"input": -1}).status_code == 400
    broken, refused = server.requests
    assert (broken.status, broken.outcome) == (500, "server_error")
    assert broken.error is not None and broken.error.summary == "ValueError: thirteen is unlucky"
    assert 'raise ValueError("thirteen is unlucky")' in broken.error.traceback
    assert __file__ in broken.error.traceback and "in predict" in broken.error.traceback
    assert (refused.status, refused.outcome) == (400, "client_error")
    assert refused.error is not None and refused.error.type_name == "litserve.exceptions.HTTPException"
    assert "in decode_request" in refused.error.traceback
    # The batch predict failed in is shown (which worker, how big); a request decode refused ran in none.
    assert broken.batch_id is not None and broken.worker is not None and broken.batch_size == 1
    assert refused.batch_id is None and refused.worker is None


def test_a_refused_request_is_recorded_without_a_payload(start_server: Start) -> None:
    server = start_server(SquareAPI(), inspect_requests=10, api_key="secret")
    assert post(server, {"input": 3}).status_code == 401
    record = _record(server)
    assert (record.status, record.outcome, record.payload, record.error) == (401, "client_error", None, None)
    with pytest.raises(ReplayError, match="not kept"):
        server.replay(record.id)


def test_streams_are_recorded_when_they_end(start_server: Start) -> None:
    server = start_server(CountdownStreamAPI(stream=True), inspect_requests=10)
    assert post(server, {"input": 2}).text.splitlines() == ['{"left":2}', '{"left":1}']
    broken = post(server, {"input": 0}).text.splitlines()
    assert broken[0] == '{"left":-1}' and "error" in json.loads(broken[-1])
    done, failed = server.requests
    assert (done.status, done.outcome, done.is_stream, done.error) == (200, "ok", True, None)
    assert (failed.status, failed.outcome) == (200, "server_error")
    assert failed.error is not None and failed.error.summary == "RuntimeError: the countdown broke"


def test_the_inspector_bounds_hold_on_a_server(start_server: Start) -> None:
    server = start_server(SquareAPI(), inspect_requests=3, inspect_payload_bytes=20)
    for x in range(5):
        post(server, {"input": x})
    post(server, {"input": 1, "padding": "z" * 50})
    padded = len('{"input":1,"padding":""}') + 50
    assert [r.payload.size_bytes for r in server.requests if r.payload] == [11, 11, padded]
    assert len(server.requests) == 3 and server.requests.to_dict()["kept_bytes"] == 22
    last = _record(server)
    assert last.payload is not None and not last.payload.is_kept
    with pytest.raises(ReplayError, match="was not kept .*raise inspect_payload_bytes"):
        server.replay(last.id)
    with pytest.raises(ReplayError, match="not among the last 3"):
        server.replay(1)


# --- views ------------------------------------------------------------------------------------------------


def test_requests_render_as_a_table_with_every_value_escaped(start_server: Start) -> None:
    server = start_server(PickyAPI(), inspect_requests=10)
    post(server, {"input": 4, "note": "<script>"})
    post(server, {"input": 13})
    view = server.requests
    page = view._repr_html_()
    assert "<table>" in page and "&lt;script&gt;" in page and "<script>" not in page
    assert "ValueError: thirteen is unlucky" in page and "<details>" in page
    assert "ValueError: thirteen is unlucky" in repr(view) and "/predict" in repr(view)
    assert json.loads(json.dumps(view.to_dict()))["requests"][1]["traceback"].startswith("Traceback")
    assert view.by_id(view[0].id) is view[0]
    with pytest.raises(KeyError):
        view.by_id(999)
    assert "last requests" in server._repr_mimebundle_()["text/html"]


def test_an_empty_or_off_inspector_adds_nothing_to_the_status_view(start_server: Start) -> None:
    server = start_server(SquareAPI(), inspect_requests=10)
    assert "last requests" not in server._repr_mimebundle_()["text/html"]
    assert isinstance(server.requests, RequestsView) and len(server.requests) == 0


# --- replay ------------------------------------------------------------------------------------------------


def test_replay_gives_the_answer_http_gave(start_server: Start) -> None:
    server = start_server(SquareAPI(), inspect_requests=10)
    answer = post(server, {"input": 7}).json()
    assert server.replay(_record(server).id) == answer


class AliasedBody(BaseModel):
    value: int = Field(alias="input")


class AliasedAPI(LitAPI):
    def decode_request(self, request: AliasedBody) -> int:
        return request.value

    def predict(self, x: int) -> int:
        return x * x

    def encode_response(self, output: int) -> dict[str, int]:
        return {"output": output}


def test_replay_of_a_model_with_aliases_sends_it_as_the_client_did(start_server: Start) -> None:
    server = start_server(AliasedAPI(), inspect_requests=10)
    answer = post(server, {"input": 6}).json()
    assert server.replay(_record(server).id) == answer == {"output": 36}


def test_replay_copies_go_at_stop_and_at_a_swap(start_server: Start) -> None:
    server = start_server(SquareAPI(), inspect_requests=10)
    post(server, {"input": 3})
    server.replay(_record(server).id)
    assert server._replays._copies  # set up once, kept for later replays
    server.swap(SquareAPI())
    assert not server._replays._copies  # the swapped-out LitAPI's copy (and its model) went with it
    post(server, {"input": 3})
    server.replay(_record(server).id)
    server.stop()
    assert not server._replays._copies


def test_replay_of_a_batched_api_runs_a_batch_of_one(start_server: Start) -> None:
    server = start_server(BatchedAPI(max_batch_size=4, batch_timeout=0.01), inspect_requests=10)
    answer = post(server, {"input": 5}).json()
    assert server.replay(_record(server).id) == answer == {"output": 25}


def test_replay_raises_the_hooks_own_error_in_the_caller(start_server: Start) -> None:
    server = start_server(PickyAPI(), inspect_requests=10)
    post(server, {"input": 13})
    post(server, {"input": -1})
    broken, refused = server.requests
    with pytest.raises(ValueError, match="thirteen is unlucky") as raised:
        server.replay(broken.id)
    tb = raised.value.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    assert tb is not None and tb.tb_frame.f_code.co_name == "predict"  # where %debug lands
    with pytest.raises(HTTPException, match="negative input"):
        server.replay(refused.id)


def test_replay_runs_in_the_calling_thread_on_its_own_copy(start_server: Start) -> None:
    server = start_server(WhereAPI(), inspect_requests=10)
    over_http = post(server, {"input": 2}).json()
    replayed = server.replay(_record(server).id)
    assert replayed == {"output": 4, "thread": threading.current_thread().name} != over_http
    assert server.replay(_record(server).id) == replayed  # the copy is set up once and kept
    assert len(server.requests) == 1  # a replay is not live traffic


def test_replay_of_a_stream_returns_its_chunks(start_server: Start) -> None:
    server = start_server(CountdownStreamAPI(stream=True), inspect_requests=10)
    post(server, {"input": 3})
    post(server, {"input": 0})
    done, broken = server.requests
    assert server.replay(done.id) == [{"left": 3}, {"left": 2}, {"left": 1}]
    with pytest.raises(RuntimeError, match="the countdown broke"):
        server.replay(broken.id)


# --- the other counting places ------------------------------------------------------------------------------


def test_a_client_that_left_is_recorded_cancelled(start_server: Start) -> None:
    api = GatedPredictAPI()
    server = start_server(api, inspect_requests=10)
    sock = raw_request(server.port or 0, "/predict", b'{"input": 2}')
    try:
        assert api.entered.acquire(timeout=10)
    finally:
        sock.close()
    assert wait_until(lambda: len(server.requests) == 1)
    api.gate.set()
    record = server.requests[0]
    assert (record.status, record.outcome, record.error) == (499, "cancelled", None)
    assert record.payload is not None and record.payload.head == '{"input":2}'
    assert server.status.endpoints[0].cancelled == 1


def test_a_body_over_the_limit_is_recorded_with_its_status(start_server: Start) -> None:
    server = start_server(SquareAPI(), inspect_requests=10, max_payload_size=100)
    assert post(server, {"input": 1, "padding": "p" * 500}).status_code == 413
    assert [(r.status, r.outcome, r.payload) for r in server.requests] == [(413, "client_error", None)]


def test_an_openai_spec_request_is_recorded_but_not_replayed(start_server: Start) -> None:
    server = start_server(TestAPI(spec=OpenAISpec()), inspect_requests=10)
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert post(server, chat, path="/v1/chat/completions").status_code == 200
    record = server.requests[0]
    assert (record.path, record.status, record.outcome) == ("/v1/chat/completions", 200, "ok")
    assert record.payload is not None and record.payload.type_name.endswith("ChatCompletionRequest")
    with pytest.raises(ReplayError, match="OpenAISpec"):
        server.replay(record.id)


class AsyncSquareAPI(LitAPI):
    def __init__(self) -> None:
        super().__init__(enable_async=True)

    async def decode_request(self, request: Any) -> Any:
        return request["input"]

    async def predict(self, x: Any) -> Any:
        if x == 13:
            raise ValueError("thirteen is unlucky")
        return x**2

    async def encode_response(self, output: Any) -> Any:
        return {"output": output}


def test_replay_of_an_async_api_runs_on_its_own_loop(start_server: Start) -> None:
    server = start_server(AsyncSquareAPI(), inspect_requests=10)
    answer = post(server, {"input": 6}).json()
    assert post(server, {"input": 13}).status_code == 500
    done, broken = server.requests
    assert server.replay(done.id) == answer == {"output": 36}
    with pytest.raises(ValueError, match="thirteen"):
        server.replay(broken.id)
