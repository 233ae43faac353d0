"""JSON in and out: compact bodies, and the conversions users expect for model outputs."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["decode_json", "encode_json", "error_body"]

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=lambda o: _to_jsonable(o))


def _to_jsonable(obj: Any) -> Any:
    model_dump = getattr(obj, "model_dump", None)  # pydantic v2 models
    if callable(model_dump):
        return model_dump(mode="json")
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars, torch tensors
    if callable(tolist):
        return tolist()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable; return dicts, lists, numbers or strings")


def encode_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON, e.g. b'{"output":16.0}'. Raises TypeError for objects it cannot convert."""
    return _encoder.encode(obj).encode()


def decode_json(body: bytes | str) -> Any:
    """Parse a request body; raises ValueError when it is not JSON (including an empty body).

    JSON nested deeper than Python's recursion limit is refused the same way: it is the client's input.
    """
    try:
        return json.loads(body)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def error_body(detail: Any) -> bytes:
    """`{"detail": ...}`, falling back to the detail's text when it is not JSON-able."""
    try:
        return encode_json({"detail": detail})
    except (TypeError, ValueError):
        return encode_json({"detail": str(detail)})
