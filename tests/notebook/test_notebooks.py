"""Every notebook in notebooks/ runs top to bottom on a real kernel, and says what it should."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from litserve.engine.devices import resolve_devices
from litserve.utils import is_package_installed

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(300)]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def run_notebook(name: str) -> dict[str, Any]:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    outputs: dict[str, Any] = {}
    for cell in notebook.cells:
        for tag in cell.get("metadata", {}).get("tags", []):
            outputs[tag] = cell.outputs
    return outputs


def value(outputs: list[Any]) -> str:
    results = [o for o in outputs if o["output_type"] == "execute_result"]
    assert results, f"the cell has no value: {outputs}"
    return str(results[-1]["data"]["text/plain"])


def printed(outputs: list[Any]) -> str:
    return "".join(o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == "stdout")


def test_every_notebook_is_saved_without_outputs() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} was saved with outputs"


def test_quickstart() -> None:
    out = run_notebook("quickstart.ipynb")
    assert "litserve running" in value(out["start"])
    assert "application/vnd.jupyter.widget-view+json" in out["start"][-1]["data"]
    assert value(out["requests"]) == "{'output': 16.0}"
    assert value(out["client"]) == "{'output': 9.0}"
    assert value(out["apredict"]) == "{'output': 4.0}"
    assert value(out["in_process"]) == "{'output': 25}"
    assert "application/vnd.jupyter.widget-view+json" in out["widget"][-1]["data"]
    # Three HTTP requests so far (requests, client, apredict); server.predict skips HTTP.
    assert value(out["status"]) == "(3, 0, 3)"
    assert value(out["restart"]) == "('stopped', {'output': 8.0})"
    assert value(out["stop"]) == "'stopped'"


def test_batching_and_streaming() -> None:
    out = run_notebook("batching_and_streaming.ipynb")
    assert value(out["batch_answers"]) == "([{'output': 0}, {'output': 1}, {'output': 4}, {'output': 9}], 32)"
    assert value(out["batch_sizes"]) == "(32, True)"
    assert value(out["stream"]) == "['HELLO', 'FROM', 'A', 'NOTEBOOK']"
    assert value(out["stop_stream"]) == "'stopped'"


def test_pytorch_model() -> None:
    out = run_notebook("pytorch_model.ipynb")
    # The notebook asks for accelerator="auto": its first device is what auto resolves to on this machine.
    assert value(out["define"]) == repr(resolve_devices("auto", "auto")[0])
    assert value(out["predict"]) == "(2, 1.0)"
    assert value(out["same"]) == "True"
    assert value(out["stop"]) == "'stopped'"


def test_process_mode() -> None:
    out = run_notebook("process_mode.ipynb")
    assert value(out["start"]) == "[('cpu', True), ('cpu', True)]"
    assert value(out["answers"]) == "([0, 10, 20, 30, 40, 50, 60, 70], True)"
    assert value(out["stop"]) == "'stopped'"


def test_openai_chat() -> None:
    out = run_notebook("openai_chat.ipynb")
    assert value(out["start"]).startswith("'http://127.0.0.1:")
    assert value(out["whole"]) == "('notebook a in works streaming', 'stop')"
    assert value(out["context"]) == "('notebook a', 'length')"  # max_tokens reached predict's context
    # Each token was printed as its chunk arrived, in the order predict yielded them.
    assert value(out["stream"]) == "['notebook', ' a', ' in', ' works', ' streaming']"
    assert printed(out["stream"]) == "notebook a in works streaming"
    assert value(out["models"]) == "['ReverseChat']"
    assert value(out["wrong_key"]) == "(401, 'invalid_api_key')"
    assert "application/vnd.jupyter.widget-view+json" in out["widget"][-1]["data"]
    # Three answers (whole, cut short, streamed) and the refused key; /v1/models is not counted.
    assert value(out["status"]) == "('/v1/chat/completions', 3, 1)"
    assert out["stop"] == []
    assert value(out["stopped"]) == "('stopped', False)"


@pytest.mark.skipif(not is_package_installed("ray"), reason="Ray Serve is not installed (pip install 'litserve[ray]')")
def test_scale_out_ray() -> None:
    out = run_notebook("scale_out_ray.ipynb")
    assert value(out["cluster"]) == "3"
    assert value(out["deploy"]).startswith("<RayDeployment 'litserve' http://127.0.0.1:8123")
    assert value(out["requests"]) == "{'output': 16.0}"
    assert value(out["handle"]) == "{'output': 9.0}"
    assert value(out["status"]) == "('RUNNING', 2)"
    assert value(out["nodes"]) == "2"
    assert value(out["shutdown"]) == "'NOT_STARTED'"
    assert value(out["back"]) == "{'output': 25.0}"
    assert value(out["down"]) == "False"


def test_iterate_in_a_notebook() -> None:
    out = run_notebook("iterate_in_a_notebook.ipynb")
    assert value(out["v1"]) == "1"
    # Re-running the start cell swapped the model in place: the old object stopped, same port, same client.
    assert value(out["swap"]) == "(2, 'stopped', True)"
    assert "RequestFailedError 500" in printed(out["requests"])
    assert "<table" in out["requests"][-1]["data"]["text/html"]
    assert value(out["failed"]) == "(500, 'RuntimeError', 1)"
    assert printed(out["replay"]) == "replayed: RuntimeError\n"
    assert value(out["replay"]) == "True"
    assert "<svg" in out["benchmark"][-1]["data"]["text/html"]
    assert value(out["benchmark_counts"]) == "([1, 8], True, 0)"
    assert value(out["tuned"]) == "(2, True, True)"
    assert value(out["stop"]) == "'stopped'"
