"""The chaos suite at small scale: faults mixed into a concurrent load never lose, mix up or miscount an answer.

The large run is `python benchmarks/chaos.py` (20,000 requests at concurrency 256).
"""

from __future__ import annotations

import pytest

from tests.chaos import chaos_server, run_chaos

TOTAL = 400
CONCURRENCY = 32


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("batching", "api_key"), [(True, True), (False, False)], ids=["batched+key", "plain"])
def test_a_chaos_load_loses_mixes_and_miscounts_nothing(worker_mode: str, batching: bool, api_key: bool) -> None:
    server = chaos_server(worker_mode, batching=batching, api_key=api_key).start(port=0)
    try:
        report = run_chaos(server, TOTAL, CONCURRENCY, seed=7)
    finally:
        server.stop()
    assert not report.problems(), report.summary() + "\n" + "\n".join(report.problems())
    assert report.statuses.count(200) >= TOTAL * 0.6  # most of the load was ordinary requests, and served
