"""The scripts in examples/: each answers correctly in-process (lit_server) and runs as a real script.

In-process tests import each example by path and check its exact answer, computed here independently.
Integration tests run the scripts in subprocesses on a free port, as a user would, and stop them with
SIGINT (Ctrl+C) or SIGTERM. Every wait is bounded; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import requests

from tests.helpers import post

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = ("hello.py", "pytorch_linear.py", "numpy_model.py", "sklearn_model.py")

STARTUP_DEADLINE_S = 60.0
EXIT_DEADLINE_S = 30.0
REQUEST_TIMEOUT_S = 30.0


def load_example(name: str) -> ModuleType:
    """Import examples/<name>.py by path (examples/ is not a package), once per test session."""
    module_name = f"litserve_examples_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


# --- in-process: each example's LitAPI behind the lit_server fixture --------------------------------


@pytest.mark.parametrize(("value", "expected"), [(4.0, 16.0), (3, 9), (-1.5, 2.25)])
def test_hello_squares_the_input(lit_server, value, expected):
    hello = load_example("hello")
    server = lit_server(hello.SimpleLitAPI())

    response = post(server.url + "/predict", {"input": value})

    assert response.status_code == 200, response.text
    assert response.json() == {"output": expected}


def test_hello_matches_the_readme_answer_byte_for_byte(lit_server):
    hello = load_example("hello")
    server = lit_server(hello.SimpleLitAPI())

    response = post(server.url + "/predict", {"input": 4.0})

    assert response.status_code == 200
    assert response.text == '{"output":16.0}'


@pytest.mark.parametrize("value", [3.0, 0.0, -2.5, 10])
def test_pytorch_linear_computes_two_x_plus_one(lit_server, value):
    pytorch_linear = load_example("pytorch_linear")
    server = lit_server(pytorch_linear.PyTorchLitAPI())

    response = post(server.url + "/predict", {"input": value})

    assert response.status_code == 200, response.text
    assert response.json() == {"output": 2.0 * value + 1.0}  # exact in float32 for these inputs


def test_pytorch_linear_answers_seven_for_three(lit_server):
    pytorch_linear = load_example("pytorch_linear")
    server = lit_server(pytorch_linear.PyTorchLitAPI())

    assert post(server.url + "/predict", {"input": 3}).json() == {"output": 7.0}


def expected_numpy_output(x: list[float]) -> list[float]:
    """The example's layer recomputed by hand: W (3x4) then b (3,) drawn from default_rng(0)."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(3, 4)).tolist()
    bias = rng.normal(size=3).tolist()
    return [sum(w * v for w, v in zip(row, x, strict=True)) + b for row, b in zip(weight, bias, strict=True)]


@pytest.mark.parametrize("x", [[1.0, 2.0, 3.0, 4.0], [0, 0, 0, 0], [-1.5, 0.25, 8, -3]])
def test_numpy_model_applies_its_seeded_linear_layer(lit_server, x):
    numpy_model = load_example("numpy_model")
    server = lit_server(numpy_model.NumpyLitAPI())

    response = post(server.url + "/predict", {"input": x})

    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["output"]
    assert body["output"] == pytest.approx(expected_numpy_output(x), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(
    "payload",
    [{"input": [1.0, 2.0, 3.0]}, {"input": "1 2 3 4"}, {"input": [1, 2, "x", 4]}, {"features": [1, 2, 3, 4]}, [1, 2]],
)
def test_numpy_model_answers_400_to_a_bad_input(lit_server, payload):
    numpy_model = load_example("numpy_model")
    server = lit_server(numpy_model.NumpyLitAPI())

    response = post(server.url + "/predict", payload)

    assert response.status_code == 400, response.text
    assert response.json() == {"detail": '"input" must be a list of 4 numbers'}


@pytest.fixture(scope="module")
def iris_reference() -> tuple[Any, list[str]]:
    """The same model the example trains, trained here on its own: LogisticRegression on bundled iris."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    model = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)
    return model, [str(name) for name in iris.target_names]


@pytest.mark.parametrize(
    ("features", "label"),
    [([5.1, 3.5, 1.4, 0.2], "setosa"), ([6.0, 2.9, 4.5, 1.5], "versicolor"), ([6.7, 3.0, 5.2, 2.3], "virginica")],
)
def test_sklearn_model_classifies_iris(lit_server, iris_reference, features, label):
    sklearn_model = load_example("sklearn_model")
    server = lit_server(sklearn_model.SklearnLitAPI())
    reference, names = iris_reference

    response = post(server.url + "/predict", {"input": features})

    assert response.status_code == 200, response.text
    output = response.json()["output"]
    expected_class = int(reference.predict([features])[0])
    assert names[expected_class] == label  # the textbook answer for these flowers
    assert output["class"] == expected_class
    assert output["label"] == label
    assert output["probabilities"] == pytest.approx(reference.predict_proba([features])[0].tolist(), abs=1e-9)
    assert sum(output["probabilities"]) == pytest.approx(1.0)


def test_sklearn_model_answers_400_to_a_bad_input(lit_server):
    sklearn_model = load_example("sklearn_model")
    server = lit_server(sklearn_model.SklearnLitAPI())

    response = post(server.url + "/predict", {"input": [5.1, 3.5]})

    assert response.status_code == 400, response.text
    assert "4 measurements" in response.json()["detail"]


# --- integration: the scripts run as a user runs them -------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True if a new server could listen on the port (SO_REUSEADDR, as servers do: TIME_WAIT is no obstacle)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError:
            return False
        return True


class ScriptProcess:
    """A running example script, with its stderr read line by line in a thread."""

    READY = "Application startup complete."
    CLIENT_WRITTEN = "client.py; run it with: python client.py"

    def __init__(self, script: str, port: int, cwd: Path) -> None:
        self.port = port
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.client_written = threading.Event()
        self.stderr_closed = threading.Event()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl+C in the terminal running pytest does not reach it
        )
        self.reader = threading.Thread(target=self._read_stderr, name=f"stderr-of-{script}", daemon=True)
        self.reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        try:
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))
                if self.READY in line:
                    self.ready.set()
                if self.CLIENT_WRITTEN in line:
                    self.client_written.set()
        finally:
            self.stderr_closed.set()
            # Let waiters on readiness stop waiting: the process is gone (or closed stderr).
            self.ready.set()
            self.client_written.set()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self) -> None:
        assert self.ready.wait(STARTUP_DEADLINE_S), f"no {self.READY!r} within {STARTUP_DEADLINE_S} s:\n{self.stderr}"
        assert self.proc.poll() is None and not self.stderr_closed.is_set(), f"the script exited:\n{self.stderr}"

    def stop_with(self, signum: signal.Signals) -> int:
        """Send `signum` to the script (by the PID we started) and return its exit code."""
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=EXIT_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the script did not exit within {EXIT_DEADLINE_S} s of {signum.name}:\n{self.stderr}")
        self.reader.join(EXIT_DEADLINE_S)
        assert not self.reader.is_alive(), "stderr stayed open after the script exited"
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=EXIT_DEADLINE_S)
        self.reader.join(EXIT_DEADLINE_S)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@contextlib.contextmanager
def running_script(script: str, cwd: Path) -> Iterator[ScriptProcess]:
    """Start examples/<script> on a free port in `cwd`, wait until it is ready; always kill it at the end."""
    process = ScriptProcess(script, free_port(), cwd)
    try:
        process.wait_ready()
        yield process
    finally:
        process.kill()


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_hello_script_serves_the_generated_client_and_stops_on_ctrl_c(tmp_path):
    with running_script("hello.py", tmp_path) as server:
        assert f"litserve running on http://127.0.0.1:{server.port}" in server.stderr
        assert server.client_written.wait(STARTUP_DEADLINE_S)
        client_file = tmp_path / "client.py"
        assert client_file.is_file(), f"run() wrote no client.py in its working directory:\n{server.stderr}"
        assert f"http://127.0.0.1:{server.port}/predict" in client_file.read_text()
        assert not (EXAMPLES / "client.py").exists()

        client = subprocess.run(
            [sys.executable, "client.py"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=STARTUP_DEADLINE_S,
            check=False,
        )

        assert client.returncode == 0, client.stderr
        assert "Status: 200" in client.stdout
        assert '{"output":16.0}' in client.stdout

        assert not port_is_free(server.port)  # the script holds it (whether stop() frees it: test_lifecycle)
        code = server.stop_with(signal.SIGINT)

        assert code == 0, server.stderr
        assert "Traceback" not in server.stderr, server.stderr
        assert "litserve stopped" in server.stderr


def output_of(response: requests.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["output"], body
    return body["output"]


# script -> (request body, what the "output" of the answer must be; for sklearn, its class and label)
EXAMPLE_REQUESTS: dict[str, tuple[Any, Any]] = {
    "hello.py": ({"input": 4.0}, 16.0),
    "pytorch_linear.py": ({"input": 3.0}, 7.0),
    "numpy_model.py": ({"input": [1, 2, 3, 4]}, pytest.approx(expected_numpy_output([1, 2, 3, 4]))),
    "sklearn_model.py": ({"input": [5.1, 3.5, 1.4, 0.2]}, {"class": 0, "label": "setosa"}),
}


@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.parametrize("script", SCRIPTS)
def test_script_serves_and_stops_cleanly_on_sigterm(tmp_path, script):
    payload, expected = EXAMPLE_REQUESTS[script]
    with running_script(script, tmp_path) as server:
        output = output_of(post(f"http://127.0.0.1:{server.port}/predict", payload))

        if script == "sklearn_model.py":
            assert {key: output[key] for key in expected} == expected
        else:
            assert output == expected

        assert not port_is_free(server.port)  # the script holds it (whether stop() frees it: test_lifecycle)
        code = server.stop_with(signal.SIGTERM)

        assert code == 0, server.stderr
        assert "Traceback" not in server.stderr, server.stderr
        assert "litserve stopped" in server.stderr


@pytest.mark.integration
@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_names_host_and_port(script):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--help"],
        capture_output=True,
        text=True,
        timeout=STARTUP_DEADLINE_S,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "--port" in result.stdout and "--host" in result.stdout


@pytest.mark.integration
def test_importing_the_pytorch_example_does_not_import_torch():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('example', {str(EXAMPLES / 'pytorch_linear.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=STARTUP_DEADLINE_S, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
