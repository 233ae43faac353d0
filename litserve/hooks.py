"""What a LitAPI's hooks ask for, found once at start: never inspected per request."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from litserve.api import LitAPI

__all__ = ["CONTEXT_HOOKS", "HookPlan", "plan_hooks", "validate_hooks"]

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


def _first_parameter_model(hook: Callable[..., Any]) -> type[BaseModel] | None:
    parameters = list(inspect.signature(hook).parameters.values())
    if not parameters:
        return None
    try:
        hints = typing.get_type_hints(hook)
    except Exception:  # an annotation that does not resolve: treat the body as plain JSON
        return None
    hint = hints.get(parameters[0].name)
    if inspect.isclass(hint) and issubclass(hint, BaseModel):
        return hint
    return None


def _takes_context(hook: Callable[..., Any]) -> bool:
    return "context" in inspect.signature(hook).parameters


def plan_hooks(api: LitAPI) -> HookPlan:
    authorize = getattr(api, "authorize", None)
    spec_model = None if api.spec is None else api.spec.request_model
    return HookPlan(
        body_model=spec_model or _first_parameter_model(api.decode_request),
        context_hooks=frozenset(name for name in CONTEXT_HOOKS if _takes_context(getattr(api, name))),
        authorize=authorize if callable(authorize) else None,
    )


def _is_generator(hook: Callable[..., Any]) -> bool:
    return inspect.isgeneratorfunction(hook) or inspect.isasyncgenfunction(hook)


def _is_async(hook: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(hook) or inspect.isasyncgenfunction(hook)


def validate_hooks(api: LitAPI) -> None:
    """Check that the hooks agree with `stream` and `enable_async`, with a message that says what to change."""
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
