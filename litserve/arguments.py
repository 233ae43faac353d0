"""Checks for LitServer arguments that take one instance of a base class or a list of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["instances_of"]

T = TypeVar("T")


def instances_of(value: T | Sequence[T] | None, base: type[Any], argument: str, how_to: str) -> tuple[T, ...]:
    """`value` (None, one `base` instance, or a list of them) as a tuple; a TypeError that says what was wrong.

    `how_to` ends the message for a wrong item, e.g. "subclass litserve.Callback and pass an instance, ...".
    """
    if value is None:
        return ()
    name = f"litserve.{base.__name__}"
    items: Any = [value] if isinstance(value, base) else value
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise TypeError(f"{argument} must be a {name} or a list of them, got {type(value).__name__}")
    for item in items:
        if not isinstance(item, base):
            raise TypeError(f"{argument} must be {name} instances, got {item!r}; {how_to}")
    return tuple(items)
