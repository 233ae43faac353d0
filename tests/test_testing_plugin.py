"""litserve.testing: the fixture this suite uses everywhere, and the context manager for other runners."""

from __future__ import annotations

from collections.abc import Callable

from litserve import LitServer, ServerState
from litserve.testing import serving
from tests.apis import SquareAPI
from tests.helpers import post

pytest_plugins = ["pytester"]


def test_fixture_starts_on_a_free_port(lit_server: Callable[..., LitServer]) -> None:
    server = lit_server(SquareAPI())
    assert server.state is ServerState.RUNNING
    assert post(server, {"input": 2}).json() == {"output": 4}


def test_context_manager_always_stops() -> None:
    try:
        with serving(SquareAPI()) as server:
            raise KeyError("the test body failed")
    except KeyError:
        pass
    assert server.state is ServerState.STOPPED


def test_plugin_is_registered_by_entry_point_and_stops_the_server(pytester) -> None:  # type: ignore[no-untyped-def]
    pytester.makepyfile(
        """
        import requests
        from litserve import LitAPI

        class Echo(LitAPI):
            def predict(self, x):
                return x

        SERVERS = []

        def test_uses_fixture(lit_server):
            server = lit_server(Echo())
            SERVERS.append(server)
            assert requests.post(server.url + "/predict", json=[1, 2], timeout=30).json() == [1, 2]

        def test_server_was_stopped():
            assert SERVERS[0].state.value == "stopped"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
