"""Callbacks: user code the server calls around setup, the hooks of each request, and its own lifecycle.

`Callback` is the base users subclass, with LitServe's hook names. `CallbackRunner` calls every
callback's method for an event and keeps serving when one raises (logged with its traceback).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from typing import Any

from litserve.arguments import instances_of

__all__ = ["WORKER_EVENTS", "Callback", "CallbackRunner", "EventTypes", "check_callbacks", "overrides"]

logger = logging.getLogger(__name__)


class EventTypes(enum.Enum):
    """Every event a callback can react to; the value is the `Callback` method's name."""

    BEFORE_SETUP = "on_before_setup"
    AFTER_SETUP = "on_after_setup"
    BEFORE_DECODE_REQUEST = "on_before_decode_request"
    AFTER_DECODE_REQUEST = "on_after_decode_request"
    BEFORE_ENCODE_RESPONSE = "on_before_encode_response"
    AFTER_ENCODE_RESPONSE = "on_after_encode_response"
    BEFORE_PREDICT = "on_before_predict"
    AFTER_PREDICT = "on_after_predict"
    ON_SERVER_START = "on_server_start"
    ON_SERVER_END = "on_server_end"
    ON_REQUEST = "on_request"
    ON_RESPONSE = "on_response"


# The events that happen in a worker (in its process, in process mode); the others happen in the server.
WORKER_EVENTS = (
    EventTypes.BEFORE_SETUP,
    EventTypes.AFTER_SETUP,
    EventTypes.BEFORE_DECODE_REQUEST,
    EventTypes.AFTER_DECODE_REQUEST,
    EventTypes.BEFORE_ENCODE_RESPONSE,
    EventTypes.AFTER_ENCODE_RESPONSE,
    EventTypes.BEFORE_PREDICT,
    EventTypes.AFTER_PREDICT,
)


class Callback:
    """Subclass and override the events you need; pass instances as `LitServer(..., callbacks=[...])`.

    Worker events run in the worker, with the worker's LitAPI copy as `lit_api=`:
    `on_before_setup`/`on_after_setup` once per worker around `setup()`, and around each call of
    `decode_request`, `predict` and `encode_response` (for a streaming hook, the "after" event comes
    when its stream is exhausted). Server events run in the server process: `on_server_start` and
    `on_server_end` (with `litserver=`) when `start()` brought the server up and when `stop()` ended
    it; `on_request` (with `active_requests=`, None unless `track_requests=True`, and `litserver=`)
    when a request arrives and `on_response` (with `litserver=`) once it is answered.

    In thread mode every worker calls the same callback objects; in process mode each worker process
    gets its own copy (shipped with the LitAPI) of each callback that overrides a worker event, so those
    must pickle (cloudpickle); the others stay in the server process. A callback that raises is logged
    with its traceback and kept as the status's last error; serving goes on. Callbacks run on the
    request path: keep them quick.

    Example:
        >>> class PredictTimer(Callback):
        ...     def on_before_predict(self, lit_api):
        ...         self.started_s = time.perf_counter()
        ...     def on_after_predict(self, lit_api):
        ...         lit_api.log("predict_s", time.perf_counter() - self.started_s)

    Stability: beta (the event names and arguments are LitServe's).
    """

    def on_before_setup(self, *args: Any, **kwargs: Any) -> None:
        """Before a worker runs `setup()`."""

    def on_after_setup(self, *args: Any, **kwargs: Any) -> None:
        """After a worker's `setup()` returned."""

    def on_before_decode_request(self, *args: Any, **kwargs: Any) -> None:
        """Before `decode_request`."""

    def on_after_decode_request(self, *args: Any, **kwargs: Any) -> None:
        """After `decode_request` returned."""

    def on_before_encode_response(self, *args: Any, **kwargs: Any) -> None:
        """Before `encode_response`."""

    def on_after_encode_response(self, *args: Any, **kwargs: Any) -> None:
        """After `encode_response` returned (its stream ended, when streaming)."""

    def on_before_predict(self, *args: Any, **kwargs: Any) -> None:
        """Before `predict`."""

    def on_after_predict(self, *args: Any, **kwargs: Any) -> None:
        """After `predict` returned (its stream ended, when streaming)."""

    def on_server_start(self, *args: Any, **kwargs: Any) -> None:
        """When `start()` brought the server up."""

    def on_server_end(self, *args: Any, **kwargs: Any) -> None:
        """When `stop()` ended the server."""

    def on_request(self, *args: Any, **kwargs: Any) -> None:
        """When a request reaches an endpoint."""

    def on_response(self, *args: Any, **kwargs: Any) -> None:
        """When a request's answer was sent (the whole stream, when streaming)."""


def check_callbacks(callbacks: Callback | Sequence[Callback] | None) -> tuple[Callback, ...]:
    """LitServer's `callbacks` argument as a tuple; a TypeError says what was wrong."""
    how_to = "subclass litserve.Callback and pass an instance, e.g. callbacks=[MyCallback()]"
    return instances_of(callbacks, Callback, "callbacks", how_to)


def overrides(callbacks: Sequence[Callback], *events: EventTypes) -> bool:
    """Whether any of `callbacks` does something on one of `events` (so the server must call them)."""
    return any(
        getattr(type(callback), event.value) is not getattr(Callback, event.value)
        for callback in callbacks
        for event in events
    )


class CallbackRunner:
    """Calls an event's method on every callback, in order; one that raises never stops the others.

    Args:
        callbacks: a Callback or a list of them.
        on_error: also told of each failure, with where it happened (e.g. to keep it in the status).

    Stability: beta.
    """

    def __init__(
        self,
        callbacks: Callback | Sequence[Callback] | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self._callbacks = check_callbacks(callbacks)
        self._on_error = on_error

    @property
    def callbacks(self) -> tuple[Callback, ...]:
        return self._callbacks

    def trigger_event(self, event_name: str | EventTypes, *args: Any, **kwargs: Any) -> None:
        """Call `event_name` (an `EventTypes` or its value) on every callback with these arguments."""
        name = event_name.value if isinstance(event_name, EventTypes) else event_name
        for callback in self._callbacks:
            try:
                getattr(callback, name)(*args, **kwargs)
            except Exception as exc:
                where = f"{type(callback).__name__}.{name}"
                logger.exception("callback %s raised; serving goes on", where)
                if self._on_error is not None:
                    self._on_error(where, exc)
