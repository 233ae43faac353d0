"""LitServe's FastAPI-style `authorize`: its `Depends(...)` and `Request` parameters, resolved from our request.

LitServe runs a LitAPI's `authorize` as a FastAPI dependency, so its users write::

    def authorize(self, auth: HTTPAuthorizationCredentials = Depends(HTTPBearer())):
        if auth.credentials != "1234":
            raise HTTPException(status_code=401, detail="Bad token")

Such an `authorize` works here unchanged when FastAPI is installed (it is not a dependency of ours).
Each `Depends`/`Security` parameter (as a default or in `Annotated[...]`) is called with what its own
parameters ask for, recursively, once per request and dependency; a parameter annotated as a
Starlette/FastAPI `Request` gets a Starlette `Request` built from the request's method, path, query and
headers (no body). FastAPI's security classes (`HTTPBearer`, `HTTPBasic`, `APIKeyHeader`,
`OAuth2PasswordBearer`, ...) are such callables, so a missing or invalid credential is answered with
their own `HTTPException` (status, detail, headers), through the one status-code table. As in
LitServe, such an `authorize` allows by returning (whatever it returns) and denies by raising.

Signatures are read once, when the server starts; FastAPI and Starlette are imported only then, and
only for an `authorize` that uses them. Our own `authorize(request)` (a RequestContext in, truthy or
falsy out) is left as it is.
"""

from __future__ import annotations

import inspect
import sys
import typing
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, final

from litserve.request_context import RequestContext

__all__ = ["prepare_authorize", "uses_fastapi"]

Authorize = Callable[[RequestContext], Any]


def _loaded(module: str, name: str) -> Any:
    """`module.name` if that module was already imported (by the user's code), else None: nothing is imported."""
    found = sys.modules.get(module)
    return None if found is None else getattr(found, name, None)


def _depends_of(parameter: inspect.Parameter, hint: Any) -> Any:
    """The FastAPI `Depends` declared for a parameter (its default, or Annotated metadata), or None."""
    depends_class = _loaded("fastapi.params", "Depends")
    if depends_class is None:
        return None
    if isinstance(parameter.default, depends_class):
        return parameter.default
    for extra in getattr(hint, "__metadata__", ()):
        if isinstance(extra, depends_class):
            return extra
    return None


def _is_request_class(hint: Any) -> bool:
    request_class = _loaded("starlette.requests", "HTTPConnection")
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        hint = typing.get_args(hint)[0]
    return request_class is not None and inspect.isclass(hint) and issubclass(hint, request_class)


def _hints(call: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations of what `call(...)` runs: a function, a class's __init__, an instance's __call__."""
    if inspect.isclass(call):
        target: Any = call.__init__
    elif inspect.isfunction(call) or inspect.ismethod(call):
        target = call
    else:
        target = type(call).__call__
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # an annotation that does not resolve: only Depends defaults can be seen
        return {}


def uses_fastapi(authorize: Callable[..., Any]) -> bool:
    """True when `authorize` declares FastAPI dependencies or a Starlette `Request` parameter."""
    hints = _hints(authorize)
    return any(
        _depends_of(p, hints.get(p.name)) is not None or _is_request_class(hints.get(p.name))
        for p in inspect.signature(authorize).parameters.values()
    )


@final
@dataclass(frozen=True, slots=True)
class _Argument:
    """A parameter filled from a dependency, or (without one) with the request; others keep their default."""

    name: str
    dependency: _Dependency | None


@final
@dataclass(frozen=True, slots=True)
class _Dependency:
    """A callable and how to fill its parameters, read once from its signature."""

    call: Callable[..., Any]
    arguments: tuple[_Argument, ...]
    use_cache: bool

    @classmethod
    def of(cls, call: Callable[..., Any], use_cache: bool = True) -> _Dependency:
        if inspect.isgeneratorfunction(call) or inspect.isasyncgenfunction(call):
            raise TypeError(f"{_name(call)} is a dependency with `yield`; authorize() supports plain dependencies")
        hints = _hints(call)
        arguments = []
        for parameter in inspect.signature(call).parameters.values():
            hint = hints.get(parameter.name)
            depends = _depends_of(parameter, hint)
            if depends is not None:
                target = depends.dependency or _annotated_type(hint)
                dependency = cls.of(target, depends.use_cache)
                arguments.append(_Argument(parameter.name, dependency))
            elif _is_request_class(hint):
                arguments.append(_Argument(parameter.name, None))
            elif parameter.default is inspect.Parameter.empty and parameter.kind not in _VARIADIC:
                raise TypeError(
                    f"{_name(call)}: parameter {parameter.name!r} is neither Depends(...) nor a Request; "
                    "authorize() here resolves only those (from the request's headers)"
                )
        return cls(call, tuple(arguments), use_cache)

    async def solve(self, request: Any, cache: dict[int, Any]) -> Any:
        """Call it with its dependencies solved first; `cache` (by the callable's id) lives for one request."""
        key = id(self.call)  # the plan keeps every callable alive; some (dataclass instances) are unhashable
        if self.use_cache and key in cache:
            return cache[key]
        kwargs: dict[str, Any] = {}
        for argument in self.arguments:  # each is a dependency or the request
            dependency = argument.dependency
            kwargs[argument.name] = request if dependency is None else await dependency.solve(request, cache)
        value = self.call(**kwargs)
        if inspect.isawaitable(value):
            value = await value
        if self.use_cache:
            cache[key] = value
        return value


_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _annotated_type(hint: Any) -> Callable[..., Any]:
    """`Depends()` without a callable depends on the parameter's own type (FastAPI's shortcut)."""
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    if not callable(hint):
        raise TypeError("Depends() without a callable needs a parameter annotated with one")
    return typing.cast(Callable[..., Any], hint)


def _name(call: Callable[..., Any]) -> str:
    return getattr(call, "__qualname__", None) or type(call).__name__


def starlette_request(context: RequestContext) -> Any:
    """A Starlette `Request` with the request's method, path, query string, headers and client (no body)."""
    from starlette.requests import Request

    scope = {
        "type": "http",
        "http_version": "1.1",
        "scheme": "http",
        "method": context.method,
        "path": context.path,
        "raw_path": context.path.encode("utf-8", "replace"),
        "root_path": "",
        "query_string": urllib.parse.urlencode(context.query_params).encode("ascii"),
        "headers": [
            (k.encode("latin-1", "replace"), v.encode("latin-1", "replace")) for k, v in context.headers.items()
        ],
        "client": None if context.client is None else (context.client, 0),
        "server": None,
    }
    return Request(scope)


def prepare_authorize(authorize: Callable[..., Any] | None) -> Authorize | None:
    """What the route calls for a LitAPI's `authorize`: itself, or an adapter for the FastAPI style.

    Raises:
        TypeError: the FastAPI-style signature asks for something that cannot come from headers.
    """
    if authorize is None or not uses_fastapi(authorize):
        return authorize
    dependency = _Dependency.of(authorize, use_cache=False)

    async def authorize_as_fastapi_dependency(context: RequestContext) -> bool:
        await dependency.solve(starlette_request(context), {})
        return True  # it did not raise: allowed, whatever it returned (as a FastAPI dependency)

    return authorize_as_fastapi_dependency
