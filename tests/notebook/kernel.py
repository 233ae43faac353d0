"""A real Jupyter kernel for tests: run cells, read their outputs, interrupt them."""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager


@dataclass
class CellResult:
    """What one cell produced, as a notebook would show it."""

    status: str = "ok"
    stdout: str = ""
    stderr: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)  # execute_result / display_data bundles
    error: str | None = None

    @property
    def text(self) -> str:
        """The last result's text/plain (a cell's value)."""
        return str(self.results[-1].get("text/plain", "")) if self.results else ""


class Kernel:
    """An ipykernel started for one test and always shut down by it."""

    def __init__(self) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel()
        self.client: BlockingKernelClient = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, code: str, timeout_s: float = 60.0, until_stderr: str | None = None) -> CellResult:
        """Execute `code` as a cell and collect its outputs until the kernel is idle again.

        With `until_stderr`, interrupt the kernel (as the notebook's stop button does) as soon as
        that text has appeared on the cell's stderr, then keep collecting until the cell ends.
        """
        msg_id = self.client.execute(code)
        result = CellResult()
        interrupted = False
        while True:
            try:
                message = self.client.get_iopub_msg(timeout=timeout_s)
            except queue.Empty as exc:
                raise TimeoutError(f"the cell did not finish within {timeout_s} s:\n{code}\n{result}") from exc
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    result.stdout += content["text"]
                else:
                    result.stderr += content["text"]
                    if until_stderr is not None and until_stderr in result.stderr and not interrupted:
                        self.manager.interrupt_kernel()
                        interrupted = True
            elif kind in ("execute_result", "display_data"):
                result.results.append(content["data"])
            elif kind == "error":
                result.status = "error"
                result.error = "\n".join(content["traceback"])
            elif kind == "status" and content["execution_state"] == "idle":
                return result
