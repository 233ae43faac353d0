"""litserve inside a real Jupyter kernel: cells that define, start, call, re-run, watch and stop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.helpers import free_port, port_is_free
from tests.notebook.kernel import Kernel

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(180)]

DEFINE_AND_START = """
from litserve import LitAPI, LitServer

class Doubler(LitAPI):
    def decode_request(self, request):
        return request["input"]
    def predict(self, x):
        return x * {factor}
    def encode_response(self, output):
        return {{"output": output}}

server = LitServer(Doubler(), accelerator="cpu").start(port={port})
server.state.value
"""


VERSIONED_CELL = """
from litserve import LitAPI, LitServer

class Versioned(LitAPI):
    def setup(self, device):
        self.version = "{version}"
    def decode_request(self, request):
        return request["input"]
    def predict(self, x):
        return x
    def encode_response(self, output):
        return {{"output": output, "version": self.version}}

server = LitServer(Versioned(), accelerator="cpu").start(port={port})
"""


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    with Kernel() as kernel:
        yield kernel


def test_a_cell_defined_api_serves_and_rerunning_the_cell_replaces_the_server(kernel: Kernel) -> None:
    port = free_port()
    first = kernel.run(DEFINE_AND_START.format(factor=2, port=port))
    assert first.status == "ok", first.error
    assert first.text == "'running'"
    call = kernel.run('import requests\nrequests.post(server.url + "/predict", json={"input": 21}).json()')
    assert call.text == "{'output': 42}"
    # Re-run the same cell, edited, on the same port: the old server is replaced, no "address in use".
    again = kernel.run("previous = server\n" + DEFINE_AND_START.format(factor=3, port=port))
    assert again.status == "ok", again.error
    replaced = kernel.run("previous.state.value, server.client().predict({'input': 21})")
    assert replaced.text == "('stopped', {'output': 63})"
    stopped = kernel.run(
        "server.stop()\n"
        "import threading\n"
        "server.state.value, sorted(t.name for t in threading.enumerate() if t.name.startswith('litserve-'))"
    )
    assert stopped.text == "('stopped', [])"
    assert port_is_free(port)


def test_rerunning_a_cell_in_a_real_kernel_swaps_the_api_in_place(kernel: Kernel) -> None:
    port = free_port()
    first = kernel.run(VERSIONED_CELL.format(version="v1", port=port))
    assert first.status == "ok", first.error
    url = f"http://127.0.0.1:{port}/predict"
    with requests.Session() as session:  # a client outside the kernel
        assert session.post(url, json={"input": 1}, timeout=30).json() == {"output": 1, "version": "v1"}
        again = kernel.run("previous = server\n" + VERSIONED_CELL.format(version="v2", port=port))
        assert again.status == "ok", again.error
        assert session.post(url, json={"input": 2}, timeout=30).json() == {"output": 2, "version": "v2"}
    states = kernel.run("previous.state.value, server.state.value, server.port")
    assert states.text == f"('stopped', 'running', {port})"
    stopped = kernel.run(
        "server.stop()\n"
        "import threading\n"
        "sorted(t.name for t in threading.enumerate() if t.name.startswith('litserve-'))"
    )
    assert stopped.text == "[]"
    assert port_is_free(port)


def test_await_and_the_panel_in_the_kernel(kernel: Kernel) -> None:
    started = kernel.run(DEFINE_AND_START.format(factor=2, port=0))
    assert started.status == "ok", started.error
    awaited = kernel.run("client = server.client()\nawait client.apredict({'input': 5})")
    assert awaited.text == "{'output': 10}"
    shown = kernel.run("server")
    assert "application/vnd.jupyter.widget-view+json" in shown.results[-1]
    assert "litserve running" in shown.results[-1]["text/plain"]
    panel = kernel.run(
        "panel = server.widget()\n"
        "for i in range(4):\n"
        "    client.predict({'input': i})\n"
        "server._panels.timers[-1]._refresh()\n"
        "'<td>5</td>' in panel.children[0].value"
    )
    assert panel.text == "True", panel
    stopped = kernel.run("server.stop()\n'stopped' in panel.children[0].value, server._panels.timers")
    assert stopped.text == "(True, [])"


def test_interrupting_the_kernel_stops_a_blocking_run(kernel: Kernel) -> None:
    port = free_port()
    kernel.run(DEFINE_AND_START.format(factor=2, port=0) + "\nserver.stop()")
    blocking = kernel.run(
        f"server = LitServer(Doubler(), accelerator='cpu')\nserver.run(port={port}, generate_client_file=False)",
        until_stderr="Application startup complete.",
    )
    assert blocking.status == "ok", blocking.error  # run() turns the interrupt into a clean stop
    assert "litserve running on http://127.0.0.1:" in blocking.stderr
    after = kernel.run("server.state.value")
    assert after.text == "'stopped'"
    assert port_is_free(port)


def test_a_cell_defined_api_serves_in_process_mode(kernel: Kernel) -> None:
    started = kernel.run(
        "import os\n"
        "from litserve import LitAPI, LitServer\n"
        "class Where(LitAPI):\n"
        "    def setup(self, device):\n"
        "        self.pid = os.getpid()\n"
        "    def predict(self, x):\n"
        "        return {'x': x * 2, 'pid': self.pid}\n"
        "server = LitServer(Where(), accelerator='cpu', devices=2, worker_mode='process').start(port=0)\n"
        "answers = [server.client().predict(i) for i in range(4)]\n"
        "[a['x'] for a in answers], all(a['pid'] != os.getpid() for a in answers), len(server.status.workers)"
    )
    assert started.status == "ok", started.error
    assert started.text == "([0, 2, 4, 6], True, 2)"
    stopped = kernel.run("server.stop()\nserver.state.value")
    assert stopped.text == "'stopped'"


def test_shutting_the_kernel_down_stops_its_servers(tmp_path: Any) -> None:
    port = free_port()
    report = tmp_path / "state-at-exit"
    with Kernel() as kernel:
        # Registered before the server starts, so it runs after litserve's own exit hook (LIFO).
        # It also checks the port from inside the kernel: after the kernel exits, a free port proves nothing.
        hook = kernel.run(
            "import atexit, socket\n"
            "def _port_is_free(port):\n"
            "    with socket.socket() as sock:\n"
            "        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "        try:\n"
            "            sock.bind(('127.0.0.1', port))\n"
            "        except OSError:\n"
            "            return False\n"
            "        return True\n"
            f"def _report():\n"
            f"    open({str(report)!r}, 'w').write(f'{{server.state.value}} {{_port_is_free({port})}}')\n"
            "atexit.register(_report)"
        )
        assert hook.status == "ok", hook.error
        started = kernel.run(DEFINE_AND_START.format(factor=2, port=port))
        assert started.status == "ok", started.error
        assert not port_is_free(port)
    # The kernel exited without anyone calling stop(): litserve's exit hook stopped the server.
    assert report.read_text() == "stopped True"
