"""JSON in and out: compact bodies, and the conversions users expect for model outputs.

Two things JSON cannot carry get a fixed treatment here, so every body the server sends is JSON:
NaN and ±Infinity are refused (`NonFiniteNumberError`: the request gets a 500, as FastAPI's
JSONResponse refuses them too), and a lone surrogate in a string (valid in a Python `str` and in a
JSON request body as `"\\ud800"`, but not UTF-8) is replaced by U+FFFD.
"""

from __future__ import annotations

import json
import re
from _json import make_encoder
from json.encoder import encode_basestring
from typing import Any

__all__ = ["NonFiniteNumberError", "decode_json", "encode_json", "error_body"]

# The C encoder json.JSONEncoder.encode builds on every call (with a dict to find circular references),
# built once: every answer and every stream chunk is encoded here (0.5 instead of 1.4 µs for a small
# object). Without the markers, a circular structure ends in RecursionError instead of ValueError: a
# 500 either way. Compact, UTF-8 (not ASCII-escaped), NaN refused.
_encode_to_parts = make_encoder(None, lambda o: _to_jsonable(o), encode_basestring, None, ":", ",", False, False, False)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_FALLBACK_DETAIL = b'{"detail":"Internal server error"}'


class NonFiniteNumberError(ValueError):
    """A value to send as JSON holds NaN or ±Infinity, which JSON has no way to write."""


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
    """Compact UTF-8 JSON, e.g. b'{"output":16.0}'.

    Raises TypeError for objects it cannot convert, NonFiniteNumberError for NaN or ±Infinity.
    Lone surrogates in strings become U+FFFD.
    """
    try:
        text = "".join(_encode_to_parts(obj, 0))
    except ValueError as exc:
        if str(exc).startswith("Out of range float values"):
            raise NonFiniteNumberError(
                "the value holds NaN or Infinity, which JSON cannot carry; return None or a finite number"
            ) from exc
        raise
    try:
        return text.encode()
    except UnicodeEncodeError:  # rare, so the replacement costs nothing on the usual path
        return _LONE_SURROGATE.sub("\ufffd", text).encode()


def decode_json(body: bytes | str) -> Any:
    """Parse a request body; raises ValueError when it is not JSON (including an empty body).

    JSON nested deeper than Python's recursion limit is refused the same way: it is the client's input.
    """
    try:
        return json.loads(body)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def error_body(detail: Any) -> bytes:
    """`{"detail": ...}`, falling back to the detail's text when it is not JSON-able. Never raises:
    an error answer must always be sendable, whatever its detail holds."""
    try:
        return encode_json({"detail": detail})
    except Exception:  # not JSON-able (or NaN inside): its text, which always encodes
        pass
    try:
        return encode_json({"detail": str(detail)})
    except Exception:  # a __str__ that raises
        return _FALLBACK_DETAIL
