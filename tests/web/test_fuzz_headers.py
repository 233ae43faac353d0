"""Property-based fuzzing of request headers on raw sockets: odd Host, Content-Type, Content-Length and
key headers, odd bytes in names and values, are a 4xx or a closed connection, never a 5xx or a hang."""

from __future__ import annotations

import contextlib
import socket

import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from litserve.testing import serving
from tests.web.test_fuzz import GuardedSquareAPI

_IO_TIMEOUT_S = 10.0
_BODY = b'{"input": 3}'

labels = st.text(alphabet="abcxyz019-_", max_size=6)
hosts = st.one_of(
    st.lists(labels, min_size=1, max_size=4).map(".".join),  # empty labels included: "a..b", ".", ""
    st.sampled_from(["127.0.0.1", "localhost", "[::1]", "127.0.0.1:1", "[::1", "a..b", "a:b:c", "%zz", "@", " "]),
    st.binary(max_size=12).map(lambda raw: raw.decode("latin-1")),
)
header_names = st.one_of(
    st.sampled_from(["Content-Type", "Content-Length", "X-API-Key", "Authorization", "Expect", "Transfer-Encoding"]),
    st.text(alphabet="abcXYZ-_:;/ \t@", min_size=0, max_size=10),
)
header_values = st.one_of(
    st.sampled_from(["", "0", "-1", "99999999999999999999", "chunked", "100-continue", "application/json"]),
    st.binary(max_size=24).map(lambda raw: raw.decode("latin-1")),
)
headers = st.lists(st.tuples(header_names, header_values), max_size=4)


_HUNG = -1  # no answer and no close within the client's timeout


def _exchange(port: int, host: str | None, extra: list[tuple[str, str]]) -> int | None:
    """Send one POST with these headers; the status, None if the server closed without one, or _HUNG."""
    lines = ["POST /predict HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in extra]
    if not any(name.lower() in ("content-length", "transfer-encoding") for name, _ in extra):
        lines.append(f"Content-Length: {len(_BODY)}")
    head = ("\r\n".join(lines) + "\r\nConnection: close\r\n\r\n").encode("latin-1", "replace")
    with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=_IO_TIMEOUT_S)) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(head + _BODY)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            return _HUNG if not data else int(data.split(b" ", 2)[1])
        except OSError:
            pass
    if not data.startswith(b"HTTP/1."):
        return None
    return int(data.split(b" ", 2)[1])


def test_fuzzed_headers_get_a_4xx_or_a_close_never_a_5xx_or_a_hang() -> None:
    # Headers that promise more body than comes are ended by the read timeout (408 or a close).
    with serving(GuardedSquareAPI(), timeout=30, read_timeout=2) as server, requests.Session() as session:
        port = server.port
        assert port is not None

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(host=st.none() | hosts, extra=headers)
        def odd_headers_are_refused(host: str | None, extra: list[tuple[str, str]]) -> None:
            status = _exchange(port, host, extra)
            event(f"-> {status}")
            # 501 is HTTP's answer to a Transfer-Encoding the server does not implement (RFC 9112, 6.1).
            unknown_coding = status == 501 and any(name.lower() == "transfer-encoding" for name, _ in extra)
            assert status != _HUNG, f"no answer and no close for Host {host!r}, headers {extra!r}"
            assert status is None or status < 500 or unknown_coding, f"{status} for Host {host!r}, headers {extra!r}"
            assert session.post(f"{server.url}/predict", json={"input": 3}, timeout=_IO_TIMEOUT_S).status_code == 200

        odd_headers_are_refused()
        assert server.status.endpoints[0].server_errors == 0
        assert server.status.last_error is None
