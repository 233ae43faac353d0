"""Client: call a litserve server from a notebook, a script or a test (sync, async and streaming).

Built on the standard library's `http.client`, one keep-alive connection per thread. The async
methods run the same code in a worker thread, so they work under a notebook's already-running loop
without touching it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import urllib.parse
import weakref
from collections.abc import Iterator
from typing import Any

from litserve.exceptions import RequestFailedError

__all__ = ["Client"]

_NDJSON = "application/x-ndjson"


class Client:
    """Talk to a litserve server over HTTP.

    Example:
        >>> client = Client("http://127.0.0.1:8000", api_key="s3cret")
        >>> client.predict({"input": 4.0})
        {'output': 16.0}
        >>> await client.apredict({"input": 2.0})          # in a notebook cell or any coroutine
        {'output': 4.0}
        >>> for chunk in client.stream({"prompt": "hi"}):  # NDJSON chunks as dicts, text as str
        ...     print(chunk)

    Args:
        url: the server's base URL, e.g. "http://127.0.0.1:8000".
        api_key: sent as `X-API-Key` when given.
        timeout: seconds to wait for the server on each socket operation.
        path: the default endpoint path for predict/stream.

    Raises:
        RequestFailedError: for any error answer, with the server's status and detail.

    Stability: beta.
    """

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 60.0, path: str = "/predict") -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"Client needs an http:// URL with a host, e.g. 'http://127.0.0.1:8000'; got {url!r}")
        self.url = url.rstrip("/")
        self.path = path
        self._host = parsed.hostname
        self._port = parsed.port or 80
        self._prefix = parsed.path.rstrip("/")
        self._api_key = api_key
        self._timeout_s = timeout
        self._local = threading.local()
        # Every thread's connection, so close() (or garbage collection of the client) closes them all.
        self._connections: set[http.client.HTTPConnection] = set()
        self._connections_lock = threading.Lock()
        weakref.finalize(self, _close_all, self._connections, self._connections_lock)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r}, path={self.path!r})"

    # --- requests -----------------------------------------------------------------------------------

    def predict(self, payload: Any, *, path: str | None = None) -> Any:
        """POST `payload` as JSON and return the decoded JSON answer."""
        status, headers, body = self._request("POST", path or self.path, payload)
        return _decode(status, headers, body)

    async def apredict(self, payload: Any, *, path: str | None = None) -> Any:
        """`predict` for coroutines: runs in a worker thread, so the calling loop keeps running."""
        return await asyncio.to_thread(self.predict, payload, path=path)

    def stream(self, payload: Any, *, path: str | None = None) -> Iterator[Any]:
        """POST `payload` and yield the streamed answer's chunks as they arrive.

        NDJSON answers yield one decoded object per line; other answers yield text (or bytes) chunks.
        A stream that ends with the server's error line raises RequestFailedError.
        """
        connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
        try:
            connection.request("POST", self._prefix + (path or self.path), _json_body(payload), self._headers())
            response = connection.getresponse()
            if response.status >= 400:
                _decode(response.status, dict(response.getheaders()), response.read())
            media_type = (response.getheader("Content-Type") or "").split(";")[0]
            if media_type == _NDJSON:
                for line in iter(response.readline, b""):
                    if line.strip():
                        yield _chunk(json.loads(line))
            else:
                is_text = media_type.startswith("text/")
                while data := response.read1(65536):
                    yield data.decode() if is_text else data
        finally:
            connection.close()

    def health(self) -> bool:
        """True when the server answers /health with 200 (every worker ready)."""
        try:
            status, _, _ = self._request("GET", "/health", None)
        except OSError:
            return False
        return status == 200

    def info(self) -> Any:
        """The server's /info document."""
        status, headers, body = self._request("GET", "/info", None)
        return _decode(status, headers, body)

    def close(self) -> None:
        """Close every connection this client opened; it reconnects if used again."""
        self._local = threading.local()
        _close_all(self._connections, self._connections_lock)

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            self._local.connection = None
            with self._connections_lock:
                self._connections.discard(connection)
            connection.close()

    # --- plumbing -----------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key is not None:
            headers["X-API-Key"] = self._api_key
        return headers

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
            self._local.connection = connection
            with self._connections_lock:
                self._connections.add(connection)
        return connection

    def _request(self, method: str, path: str, payload: Any) -> tuple[int, dict[str, str], bytes]:
        body = None if payload is None and method == "GET" else _json_body(payload)
        for _ in range(2):
            is_reused = getattr(self._local, "connection", None) is not None
            connection = self._connection()
            try:
                connection.request(method, self._prefix + path, body, self._headers())
                response = connection.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop_connection()
                if not is_reused:
                    raise
                # A kept-alive connection the server closed while idle: retry once on a fresh one.
                continue
            if response.will_close:
                self._drop_connection()
            return response.status, dict(response.getheaders()), data
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _close_all(connections: set[http.client.HTTPConnection], lock: threading.Lock) -> None:
    with lock:
        closing = list(connections)
        connections.clear()
    for connection in closing:
        connection.close()


def _json_body(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _decode(status: int, headers: dict[str, str], body: bytes) -> Any:
    content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    is_json = content_type.startswith("application/json")
    value = json.loads(body) if is_json and body else body.decode(errors="replace")
    if status >= 400:
        detail = value.get("detail", value) if isinstance(value, dict) else value
        raise RequestFailedError(status, detail)
    return value


def _chunk(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"error", "status"}:
        raise RequestFailedError(int(value["status"]), value["error"])
    return value
