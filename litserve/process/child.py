"""The worker process: `python -m litserve.runtime.child FD`, started by `runtime.process`.

It runs the same worker threads as thread mode on its own request queue, which its idle workers fill
by reading the socket themselves (`ChildQueue`). The parent sends requests, cancellations, health
checks and "stop" over the socket; answers go back through `bridge.ChannelReply`. When the
parent goes away (even killed), the socket reads end of stream and this process exits at once.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["ChildInit", "main"]


@dataclass(frozen=True, slots=True)
class ChildInit:
    """The first message: everything a worker process needs to start its workers."""

    api_bytes: bytes  # the LitAPI, cloudpickled by value so notebook-defined classes work
    device: str
    worker_names: tuple[str, ...]
    sys_path: tuple[str, ...]


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    # Imported here so `python -m` starts fast enough to read its first message promptly.
    from litserve.runtime.ipc import Link, LinkClosedError

    link = Link(sock)
    try:
        init: ChildInit = link.recv()
    except LinkClosedError:
        os._exit(0)
    sys.path[:] = list(init.sys_path)
    # Errors travel to the server process, which logs them and keeps the last one for its status;
    # logging them here as well would print every traceback twice.
    quiet = logging.getLogger("litserve")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    try:
        _serve(link, init)
    except LinkClosedError:
        pass
    # Worker threads may still sit in a user's hook; the parent is gone or asked us to stop.
    os._exit(0)


def _serve(link: Any, init: ChildInit) -> None:
    import cloudpickle

    from litserve.engine.bridge import ChannelReply
    from litserve.engine.messages import Cancellation, InferenceRequest, Outcome, StreamEnd
    from litserve.engine.worker import Worker
    from litserve.exceptions import INTERNAL_ERROR
    from litserve.hooks import plan_hooks
    from litserve.runtime.child_queue import ChildQueue
    from litserve.runtime.ipc import BadFrame, LinkClosedError
    from litserve.status import ErrorLog

    try:
        api = cloudpickle.loads(init.api_bytes)
        plan = plan_hooks(api)
    except BaseException as exc:
        link.send(("setup_failed", f"{type(exc).__name__}: {exc}", _format(exc), _pickled(exc)))
        return
    cancellations: dict[int, Cancellation] = {}
    stop_wait_s: list[float | None] = []  # the time "stop" gives the workers to finish, once it came

    def send(message: Any) -> None:
        # Workers answer through here; a request's cancellation is forgotten with its final message.
        kind = message[0]
        if kind == "results":
            for request_id, _ in message[1]:
                cancellations.pop(request_id, None)
        elif kind in ("result", "dropped") or (kind == "chunk" and isinstance(message[2], Outcome | StreamEnd)):
            cancellations.pop(message[1], None)
        link.send(message)

    def handle(message: Any) -> InferenceRequest | None:
        # On whichever thread read the message (see ChildQueue), often a worker: nothing may escape.
        try:
            return take(message)
        except LinkClosedError:
            raise
        except BaseException as exc:  # noqa: B036 - even SystemExit from a user's health() must not end a worker
            errors.record("litserve-worker-process", exc)
            return None

    def take(message: Any) -> InferenceRequest | None:
        # A request to queue, or None when the message was dealt with here.
        if isinstance(message, BadFrame):  # e.g. a payload whose class this process cannot import
            errors.record("litserve-worker-process", message.error)
            if message.tag:  # a request: answer it, so the server gives its slot back
                link.send(("result", message.tag, Outcome.failure(INTERNAL_ERROR)))
            return None
        kind = message[0]
        if kind == "request":
            _, request_id, payload, deadline_s, context, model_data, handed_s = message
            try:
                if model_data is not None and plan.body_model is not None:
                    payload = plan.body_model.model_validate(model_data)
            except Exception as exc:  # fail this request only; the process keeps serving
                errors.record("litserve-worker-process", exc)
                link.send(("result", request_id, Outcome.failure(INTERNAL_ERROR)))
                return None
            cancellation = Cancellation()
            cancellations[request_id] = cancellation
            reply = ChannelReply(request_id, send)
            return InferenceRequest(payload, reply, deadline_s, cancellation, context, handed_s)
        if kind == "cancel":
            cancelled = cancellations.get(message[1])
            if cancelled is not None:
                cancelled.cancel(message[2])
        elif kind == "health":
            link.send(("health", message[1], _all_healthy(workers)))
        elif kind == "stop":
            stop_wait_s.append(message[1])
            requests.close()
        return None

    requests = ChildQueue(link, handle, consumers=len(init.worker_names))
    errors = ErrorLog(on_record=lambda record: link.send(("error", record)))
    workers = [Worker(name, copy.deepcopy(api), init.device, requests, errors, plan) for name in init.worker_names]
    for worker in workers:
        worker.start()
    for worker in workers:
        failure = worker.ready.exception()
        if failure is not None:
            link.send(("setup_failed", f"{type(failure).__name__}: {failure}", _format(failure), _pickled(failure)))
            return
    link.send(("ready", os.getpid()))
    requests.serve()  # until "stop" came; LinkClosedError when the server went away
    for worker in workers:
        worker.join(stop_wait_s[0])
    link.send(("stopped",))


def _all_healthy(workers: list[Any]) -> bool:
    import asyncio
    import inspect

    async def settle(verdict: Any) -> Any:
        return await verdict

    for worker in workers:
        try:
            verdict = worker.is_healthy()
            if inspect.isawaitable(verdict):
                verdict = asyncio.run(settle(verdict))
        except Exception:  # a failing health() means "not ready", as in thread mode
            return False
        if not verdict:
            return False
    return True


def _pickled(exc: BaseException) -> bytes | None:
    import cloudpickle

    try:
        return bytes(cloudpickle.dumps(exc))
    except Exception:  # an exception that cannot travel: the summary and traceback text still do
        return None


def _format(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))


if __name__ == "__main__":
    main()
