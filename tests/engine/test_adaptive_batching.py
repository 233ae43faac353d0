"""The adaptive batch window on a real server, in both worker modes: a lone request does not sit out
`batch_timeout`, and requests that queue while a batch runs still go together in the next one."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import requests

from litserve import LitServer
from tests.apis import GatedPredictAPI
from tests.helpers import post, wait_until

Start = Callable[..., LitServer]
WINDOW_S = 30.0  # far longer than any client here waits: a request that sat it out fails the test
CLIENT_TIMEOUT_S = 10.0


class BatchedGatedAPI(GatedPredictAPI):
    """Batched; each batch's predict announces itself and waits for the test's gate."""

    def predict(self, xs: Any) -> Any:
        self.calls.append(len(xs))
        self.entered.release()
        assert self.gate.wait(CLIENT_TIMEOUT_S), "the test never opened the predict gate"
        return [x * x for x in xs]


def test_a_lone_request_does_not_wait_out_the_batch_window(start_server: Start) -> None:
    api = BatchedGatedAPI(max_batch_size=8, batch_timeout=WINDOW_S)
    api.gate.set()
    server = start_server(api, timeout=WINDOW_S * 2)
    for x in range(3):  # one client at a time: each request runs alone, at once
        response = post(server, {"input": x}, timeout=CLIENT_TIMEOUT_S)
        assert response.json() == {"output": x * x}
    assert server.status.endpoints[0].batch_sizes == ((1, 3),)


def test_requests_queued_while_a_batch_runs_go_together_next(start_server: Start) -> None:
    api = BatchedGatedAPI(max_batch_size=8, batch_timeout=WINDOW_S)
    server = start_server(api, timeout=WINDOW_S * 2)
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        first = pool.submit(post, server, {"input": 1}, timeout=CLIENT_TIMEOUT_S * 2)
        assert api.entered.acquire(CLIENT_TIMEOUT_S)  # the first runs alone and holds the worker
        rest = [pool.submit(post, server, {"input": x}, timeout=CLIENT_TIMEOUT_S * 2) for x in range(2, 6)]
        assert wait_until(lambda: server.status.endpoints[0].in_flight == 5, CLIENT_TIMEOUT_S)
        api.gate.set()
        answers: list[requests.Response] = [first.result(), *(future.result() for future in rest)]
    assert [answer.json()["output"] for answer in answers] == [x * x for x in range(1, 6)]
    assert api.calls.values() == [1, 4]  # the four that waited went in one batch, without a window to sit out
