"""What a LitAPI's hooks ask for, found once at start: never inspected per request."""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from litserve.api import LitAPI

logger = logging.getLogger(__name__)

__all__ = ["CONTEXT_HOOKS", "HookPlan", "find_body_model", "plan_hooks", "plan_with_model", "validate_hooks"]

# Hooks that may declare a `context` parameter to receive the request's RequestContext.
CONTEXT_HOOKS = ("decode_request", "batch", "predict", "unbatch", "encode_response")


@dataclass(frozen=True, slots=True)
class HookPlan:
    """The request body model (from decode_request's annotation), hooks taking `context`, `authorize`."""

    body_model: type[BaseModel] | None
    context_hooks: frozenset[str]
    authorize: Callable[..., Any] | None

    @property
    def wants_context(self) -> bool:
        return bool(self.context_hooks) or self.authorize is not None


def find_body_model(api: LitAPI) -> type[BaseModel] | None:
    """The pydantic model that validates request bodies: the spec's, or decode_request's first annotation.

    Resolved here, in the server process: a worker process gets the model class with the LitAPI, since
    its copy of a class shipped by value cannot resolve string annotations (`from __future__ import
    annotations`). An annotation that names nothing where the LitAPI is defined (a name imported under
    `TYPE_CHECKING`) means the parsed JSON, as FastAPI users expect; `validate_hooks` warns about it.
    """
    spec_model = None if api.spec is None else api.spec.request_model
    return spec_model or _first_parameter_model(api.decode_request)


def _first_parameter_model(hook: Callable[..., Any]) -> type[BaseModel] | None:
    parameters = list(inspect.signature(hook).parameters.values())
    if not parameters or parameters[0].annotation is inspect.Parameter.empty:
        return None
    try:
        hint = typing.get_type_hints(hook).get(parameters[0].name)
    except Exception:  # another parameter's annotation may be the one that fails: try this one alone
        hint = _resolve_one(hook, parameters[0].annotation)
    if inspect.isclass(hint) and issubclass(hint, BaseModel):
        return hint
    return None


def _resolve_one(hook: Callable[..., Any], annotation: Any) -> Any:
    """The annotation's value, evaluated where the hook was defined (as get_type_hints does); None when
    it names nothing there."""
    if not isinstance(annotation, str):
        return annotation
    owner = getattr(hook, "__func__", hook)
    try:
        return eval(annotation, getattr(owner, "__globals__", {}))
    except Exception:
        return None


def _warn_if_unresolved(api: LitAPI) -> None:
    hook = api.decode_request
    parameters = list(inspect.signature(hook).parameters.values())
    if api.spec is not None or not parameters:
        return
    annotation = parameters[0].annotation
    if isinstance(annotation, str) and _resolve_one(hook, annotation) is None:
        logger.warning(
            "%s.decode_request annotates its request as %r, which names nothing in its module: bodies reach it "
            "as parsed JSON, not validated; import the model at the top of the module to validate them",
            type(api).__name__,
            annotation,
        )


def _takes_context(hook: Callable[..., Any]) -> bool:
    return "context" in inspect.signature(hook).parameters


def plan_hooks(api: LitAPI) -> HookPlan:
    """What `api`'s hooks ask for, its body model found here (in the server process)."""
    return plan_with_model(api, find_body_model(api))


def plan_with_model(api: LitAPI, body_model: type[BaseModel] | None) -> HookPlan:
    """What `api`'s hooks ask for, with the body model the server process found (in a worker process)."""
    authorize = getattr(api, "authorize", None)
    return HookPlan(
        body_model=body_model,
        context_hooks=frozenset(name for name in CONTEXT_HOOKS if _takes_context(getattr(api, name))),
        authorize=authorize if callable(authorize) else None,
    )


def _is_generator(hook: Callable[..., Any]) -> bool:
    return inspect.isgeneratorfunction(hook) or inspect.isasyncgenfunction(hook)


def _is_async(hook: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(hook) or inspect.isasyncgenfunction(hook)


def validate_hooks(api: LitAPI) -> None:
    """Check that the hooks agree with `stream` and `enable_async`, with a message that says what to change
    (and warn when decode_request's annotation names nothing: its bodies are then not validated)."""
    _warn_if_unresolved(api)
    name = type(api).__name__
    predict = api.predict
    overrides_encode = type(api).encode_response is not LitAPI.encode_response
    if api.stream:
        if not _is_generator(predict):
            raise ValueError(
                f"{name} has stream=True, so predict must be a generator: replace `return ...` with `yield ...` "
                "(or set stream=False)"
            )
        if overrides_encode and not _is_generator(api.encode_response):
            raise ValueError(
                f"{name} has stream=True, so encode_response must be a generator too: "
                "`for output in outputs: yield {...}`"
            )
    else:
        for hook_name in ("predict", "encode_response"):
            if _is_generator(getattr(api, hook_name)):
                raise ValueError(
                    f"{name}.{hook_name} is a generator but stream=False; pass stream=True to stream its chunks "
                    f"({name}(stream=True)) or return a value instead of yielding"
                )
    if api.enable_async and not _is_async(predict):
        raise ValueError(f"{name} has enable_async=True, so predict must be `async def` (or set enable_async=False)")
    if not api.enable_async:
        for hook_name in ("decode_request", "predict", "encode_response", "batch", "unbatch"):
            if _is_async(getattr(api, hook_name)):
                raise ValueError(f"{name}.{hook_name} is async; pass enable_async=True to run async hooks")
