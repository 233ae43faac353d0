"""The one status-code table."""

from __future__ import annotations

import pytest

from litserve import HTTPException
from litserve.exceptions import INTERNAL_ERROR, ErrorResponse, error_response, is_client_error


class StarletteStyle(Exception):
    def __init__(self, status_code: int, detail: str) -> None:
        self.status_code = status_code
        self.detail = detail


class WerkzeugStyle(Exception):
    code = 418
    description = "short and stout"


def test_our_http_exception_keeps_status_and_detail() -> None:
    assert error_response(HTTPException(404, "no such item")) == ErrorResponse(404, "no such item")
    assert error_response(HTTPException(429)) == ErrorResponse(429, "Too Many Requests")


def test_foreign_http_exceptions_are_understood() -> None:
    assert error_response(StarletteStyle(409, "conflict")) == ErrorResponse(409, "conflict")
    assert error_response(WerkzeugStyle()) == ErrorResponse(418, "short and stout")


@pytest.mark.parametrize("exc", [ValueError("secret path /home/x"), KeyError("k"), StarletteStyle(200, "ok")])
def test_anything_else_is_an_opaque_500(exc: Exception) -> None:
    assert error_response(exc) is INTERNAL_ERROR
    assert not is_client_error(exc)


def test_error_responses_validate_their_status() -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        ErrorResponse(200, "fine")
