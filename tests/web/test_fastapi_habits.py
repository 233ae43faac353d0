"""LitServe users' FastAPI habits work unchanged: `authorize` with FastAPI security dependencies, hooks
annotated with FastAPI/Starlette types, and gzip for large answers (LitServe's GZipMiddleware).

Every FastAPI-style `authorize` is checked against FastAPI itself: the same dependency on a FastAPI
route must give the same status, detail and `WWW-Authenticate` for the same headers.
"""

from __future__ import annotations

import base64
import gzip
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import pytest
import starlette.requests
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.security import (
    APIKeyHeader,
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
    OAuth2PasswordBearer,
)
from fastapi.testclient import TestClient

from litserve import LitAPI
from litserve.web.compression import GZIP_MIN_BYTES, THREAD_MIN_BYTES, accepts_gzip
from litserve.web.dependencies import uses_fastapi
from tests.apis import SquareAPI
from tests.app_client import AppClient

if TYPE_CHECKING:
    from no_such_module import NotImportedAtRuntime  # type: ignore[import-not-found]

StartApp = Callable[..., AppClient]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class BearerAPI(SquareAPI):
    def authorize(self, auth: HTTPAuthorizationCredentials = Depends(HTTPBearer())) -> None:
        if auth.scheme != "Bearer" or auth.credentials != "1234":
            raise HTTPException(status_code=401, detail="Bad token")


class BasicAPI(SquareAPI):
    def authorize(self, credentials: Annotated[HTTPBasicCredentials, Depends(HTTPBasic())]) -> None:
        if (credentials.username, credentials.password) != ("ada", "secret"):
            raise HTTPException(status_code=401, detail="Wrong user", headers={"WWW-Authenticate": "Basic"})


class ApiKeyAPI(SquareAPI):
    def authorize(self, key: str = Security(APIKeyHeader(name="X-Token"))) -> None:
        if key != "k-1":
            raise HTTPException(status_code=403, detail="Unknown key")


async def current_user(token: str = Depends(OAuth2PasswordBearer(tokenUrl="token"))) -> str:
    if token != "t-ada":
        raise HTTPException(status_code=401, detail="Expired token", headers={"WWW-Authenticate": "Bearer"})
    return "ada"


class NestedAPI(SquareAPI):
    """A dependency of a dependency, async, used twice: solved once per request (FastAPI's cache)."""

    def authorize(self, user: str = Depends(current_user), again: str = Depends(current_user)) -> None:
        assert user == again == "ada"


class RequestAPI(SquareAPI):
    """LitServe's `authorize(self, request: Request)`: a Starlette request, headers case-insensitive."""

    def authorize(self, request: Request) -> None:
        if request.headers.get("X-User") != "ada" or request.url.path != "/predict":
            raise HTTPException(status_code=401, detail="Who are you?")


class Caller:
    """A class dependency (`Depends()` on its annotation): FastAPI builds it from its own parameters."""

    def __init__(self, request: Request, strict: bool = True) -> None:
        self.user = request.headers.get("x-user")


class ClassDependencyAPI(SquareAPI):
    def authorize(self, caller: Annotated[Caller, "who calls", Depends()], verbose: bool = False) -> None:
        if caller.user != "ada":
            raise HTTPException(status_code=401, detail="Who are you?")


AUTH_CASES = [
    (BearerAPI, {"Authorization": "Bearer 1234"}),
    (BearerAPI, {"Authorization": "Bearer wrong"}),
    (BearerAPI, {"Authorization": "Basic 1234"}),
    (BearerAPI, {}),
    (BasicAPI, {"Authorization": _basic("ada", "secret")}),
    (BasicAPI, {"Authorization": _basic("bob", "secret")}),
    (BasicAPI, {"Authorization": "Basic not-base64!"}),
    (BasicAPI, {}),
    (ApiKeyAPI, {"X-Token": "k-1"}),
    (ApiKeyAPI, {"x-token": "k-2"}),
    (ApiKeyAPI, {}),
    (NestedAPI, {"Authorization": "Bearer t-ada"}),
    (NestedAPI, {"Authorization": "Bearer t-bob"}),
    (NestedAPI, {}),
    (RequestAPI, {"x-user": "ada"}),
    (RequestAPI, {"X-User": "bob"}),
    (ClassDependencyAPI, {"X-User": "ada"}),
    (ClassDependencyAPI, {}),
]


def _fastapi_answer(api: LitAPI, headers: dict[str, str]) -> tuple[int, Any, str | None]:
    """What FastAPI answers with `api.authorize` as a route dependency, as LitServe runs it."""
    app = FastAPI()

    @app.post("/predict", dependencies=[Depends(api.authorize)])
    def predict() -> dict[str, float]:
        return {"output": 4.0}

    with TestClient(app) as client:
        response = client.post("/predict", json={"input": 2.0}, headers=headers)
    return response.status_code, response.json(), response.headers.get("www-authenticate")


@pytest.mark.parametrize(("api_class", "headers"), AUTH_CASES)
def test_fastapi_style_authorize_answers_what_fastapi_answers(
    start_app: StartApp, api_class: type[LitAPI], headers: dict[str, str]
) -> None:
    expected = _fastapi_answer(api_class(), headers)
    server = start_app(api_class())
    response = server.post({"input": 2.0}, headers=headers)
    assert (response.status_code, response.json(), response.headers.get("www-authenticate")) == expected
    counters = server.status.endpoints[0]
    assert (counters.ok, counters.client_errors) == ((1, 0) if expected[0] == 200 else (0, 1))


class OwnFormAPI(SquareAPI):
    def authorize(self, request: NotImportedAtRuntime) -> bool:  # an annotation that does not resolve
        return bool(request.headers.get("x-user") == "ada")


def test_our_own_authorize_form_is_unchanged(start_app: StartApp) -> None:
    server = start_app(OwnFormAPI())
    assert server.post({"input": 3}, headers={"X-User": "ada"}).json() == {"output": 9}
    assert server.post({"input": 3}).status_code == 401


def test_serving_our_own_authorize_form_loads_no_fastapi() -> None:
    code = (
        "import sys\n"
        "import requests\n"
        "from litserve.testing import serving\n"
        "from tests.apis import SquareAPI\n"
        "class OwnForm(SquareAPI):\n"
        "    def authorize(self, request):\n"
        "        return request.headers.get('x-user') == 'ada'\n"
        "with serving(OwnForm()) as server:\n"
        "    ok = requests.post(server.url + '/predict', json={'input': 3}, headers={'X-User': 'ada'})\n"
        "assert (ok.status_code, ok.json()) == (200, {'output': 9}), ok.text\n"
        "heavy = [m for m in ('fastapi', 'starlette') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def yielding_dependency() -> Any:
    yield "session"


class YieldingDependencyAPI(SquareAPI):
    def authorize(self, session: str = Depends(yielding_dependency)) -> None:
        pass


class NotCallableDependencyAPI(SquareAPI):
    def authorize(self, user: str | None = Depends()) -> None:
        pass


class BodyParameterAPI(SquareAPI):
    def authorize(self, request: Request, item_id: int) -> None:
        pass


@pytest.mark.parametrize(
    ("api_class", "message"),
    [
        (YieldingDependencyAPI, "with `yield`"),
        (BodyParameterAPI, "'item_id' is neither Depends"),
        (NotCallableDependencyAPI, "Depends\\(\\) without a callable"),
    ],
)
def test_an_authorize_that_needs_more_than_headers_fails_at_start(
    start_app: StartApp, api_class: type[LitAPI], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        start_app(api_class())


# --- hook annotations from FastAPI and Starlette ------------------------------------------------------


class FastAPIRequestAnnotated(SquareAPI):
    def decode_request(self, request: Request) -> Any:
        return request["input"]


class StarletteRequestAnnotated(SquareAPI):
    def decode_request(self, request: starlette.requests.Request) -> Any:
        return request["input"]


class UnresolvableAnnotation(SquareAPI):
    def decode_request(self, request: NotImportedAtRuntime) -> Any:
        return request["input"]


@pytest.mark.parametrize("api_class", [FastAPIRequestAnnotated, StarletteRequestAnnotated, UnresolvableAnnotation])
def test_a_request_annotation_that_is_not_a_model_means_the_parsed_body(
    start_app: StartApp, api_class: type[LitAPI]
) -> None:
    response = start_app(api_class()).post({"input": 3.0})
    assert (response.status_code, response.json()) == (200, {"output": 9.0})


# --- gzip --------------------------------------------------------------------------------------------


class EchoAPI(LitAPI):
    """Answers `{"output": text}` for `{"text": ...}`: the body's size is the test's choice."""

    def decode_request(self, request: Any) -> Any:
        return request["text"]

    def predict(self, x: Any) -> Any:
        return x

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


def _body_bytes(text: str) -> int:
    return len(b'{"output":""}') + len(text)


@pytest.mark.parametrize("size", [GZIP_MIN_BYTES, THREAD_MIN_BYTES + 1])
def test_a_large_answer_is_gzipped_for_a_client_that_accepts_it(start_app: StartApp, size: int) -> None:
    text = "litserve " * (size // 9 + 1)
    response = start_app(EchoAPI()).post({"text": text}, headers={"Accept-Encoding": "gzip, deflate"})
    assert response.status_code == 200
    assert (response.headers["content-encoding"], response.headers["vary"]) == ("gzip", "Accept-Encoding")
    assert int(response.headers["content-length"]) == len(response.content) < size
    assert gzip.decompress(response.content) == b'{"output":"' + text.encode() + b'"}'


def test_an_answer_just_below_the_minimum_is_sent_as_it_is(start_app: StartApp) -> None:
    text = "x" * (GZIP_MIN_BYTES - 1 - _body_bytes(""))
    response = start_app(EchoAPI()).post({"text": text}, headers={"Accept-Encoding": "gzip"})
    assert len(response.content) == GZIP_MIN_BYTES - 1
    assert "content-encoding" not in response.headers and "vary" not in response.headers


@pytest.mark.parametrize("accept", [None, "identity", "gzip;q=0", "br"])
def test_a_large_answer_is_not_gzipped_unless_the_client_asks(start_app: StartApp, accept: str | None) -> None:
    headers = {} if accept is None else {"Accept-Encoding": accept}
    text = "y" * 5000
    response = start_app(EchoAPI()).post({"text": text}, headers=headers)
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.json() == {"output": text}


def test_a_large_error_answer_is_gzipped_too(start_app: StartApp) -> None:
    class Refuse(EchoAPI):
        def decode_request(self, request: Any) -> Any:
            raise HTTPException(status_code=422, detail="z" * 3000)

    response = start_app(Refuse()).post({"text": "a"}, headers={"Accept-Encoding": "gzip"})
    assert (response.status_code, response.headers["content-encoding"]) == (422, "gzip")
    assert gzip.decompress(response.content) == b'{"detail":"' + b"z" * 3000 + b'"}'


class BigStream(LitAPI):
    def decode_request(self, request: Any) -> Any:
        return request["n"]

    def predict(self, n: Any) -> Any:
        for i in range(n):
            yield "s" * 2000 + str(i)

    def encode_response(self, outputs: Any) -> Any:
        for output in outputs:
            yield {"output": output}


def test_a_stream_is_never_gzipped(start_app: StartApp) -> None:
    response = start_app(BigStream(stream=True)).post({"n": 3}, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in response.headers
    assert [line.endswith(f'{i}"}}') for i, line in enumerate(response.text.splitlines())] == [True] * 3


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("deflate, GZIP", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("*", True),
        ("x-gzip", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=nope", False),
        ("identity", False),
        ("", False),
        (None, False),
    ],
)
def test_accept_encoding_is_read_with_its_q_values(header: str | None, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


def test_the_fastapi_style_is_recognised_only_from_what_the_users_code_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def annotated_request(request: Annotated[Request, "the caller"]) -> None:
        pass

    def own_form(request: Any) -> bool:
        return True

    assert uses_fastapi(annotated_request) and uses_fastapi(BearerAPI().authorize)
    assert not uses_fastapi(own_form)
    monkeypatch.delitem(sys.modules, "fastapi.params")  # as if FastAPI were never imported: never imported here
    assert not uses_fastapi(BearerAPI().authorize)
    assert "fastapi.params" not in sys.modules
