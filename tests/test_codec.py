"""JSON out: compact UTF-8, the conversions model outputs need, and what JSON cannot carry refused or replaced."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from litserve.codec import NonFiniteNumberError, encode_json


class Point(BaseModel):
    x: int
    label: str


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ({"output": 16.0, "ok": True, "none": None}, b'{"output":16.0,"ok":true,"none":null}'),
        ("caf\u00e9", '"caf\u00e9"'.encode()),  # UTF-8, not \\u-escaped
        (7, b"7"),
        ([1, "two", [3.5]], b'[1,"two",[3.5]]'),
        ({"a": np.arange(3), "b": np.float32(0.5)}, b'{"a":[0,1,2],"b":0.5}'),  # tolist()
        ({"p": Point(x=1, label="q")}, b'{"p":{"x":1,"label":"q"}}'),  # model_dump(mode="json")
        ((1, 2), b"[1,2]"),
        ({"s": frozenset({3})}, b'{"s":[3]}'),
        ({"text": "a\ud800b"}, '{"text":"a\ufffdb"}'.encode()),  # a lone surrogate becomes U+FFFD
    ],
)
def test_values_encode_compactly(value: Any, encoded: bytes) -> None:
    assert encode_json(value) == encoded


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), [1.0, -float("inf")]])
def test_nan_and_infinity_are_refused(bad: Any) -> None:
    with pytest.raises(NonFiniteNumberError, match="NaN or Infinity"):
        encode_json({"output": bad})


def test_an_object_json_cannot_carry_names_its_type() -> None:
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        encode_json({"x": object()})


def test_a_circular_structure_raises_instead_of_hanging() -> None:
    looped: list[Any] = [1]
    looped.append(looped)
    with pytest.raises((RecursionError, ValueError)):
        encode_json(looped)


def test_encoding_is_safe_from_many_threads_at_once() -> None:
    """One encoder serves every worker thread: a shared object encoded by several at once stays whole."""
    import concurrent.futures

    shared = {"rows": [{"i": i, "v": [i] * 20} for i in range(200)]}
    expected = encode_json(shared)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: encode_json(shared), range(64)))
    assert all(result == expected for result in results)
