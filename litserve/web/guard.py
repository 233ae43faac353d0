"""The connection guard: the outermost ASGI layer whenever the server listens on a socket.

It does three things the Quart app cannot do for itself:

- **Host checks.** A `Host` that is not a well-formed `name[:port]` is a 400 (Werkzeug would raise on it
  before any handler runs, and Hypercorn would answer an empty 500). While the server is bound to a
  loopback address, a `Host` that is not a loopback name or address, nor one the user allowed, is a 403:
  a web page the user visits could otherwise reach the server through DNS rebinding (as Jupyter guards).
  `/health` is guarded too: a rebinding page must not probe it either.
- **Watching the client.** Each request carries a `ClientWatch` in its scope; it sees Hypercorn's
  `http.disconnect` as it passes. A route calls `follow_client` once it has read the body: from then on the
  route's task is cancelled when the client goes away, even if the client went away while the body was
  being read (Quart reads it under `asyncio.wait_for`, which on Python 3.11 can swallow that cancellation).
- **Stuck bodies at stop.** `stop_reading` (called on the loop as shutdown begins) ends every body read
  still waiting for the client: such a request has not reached a model and would hold stop() for the
  whole graceful period before Hypercorn cancelled its connection. It is answered 503 and closed. A request
  Hypercorn does cancel at the end of the graceful period is answered 503 too, not with its empty 500.

Without a socket (in-process ASGI clients, `litserve.utils.wrap_litserve_start`) there is no guard at all.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, final

from litserve.codec import error_body
from litserve.engine.pool import Endpoint
from litserve.exceptions import HOST_NOT_ALLOWED, MALFORMED_HOST, STOPPED_READING, ErrorResponse
from litserve.web.context import count_refusal
from litserve.web.stack import ASGIApp, Receive, Send

__all__ = ["CLIENT_WATCH", "ClientWatch", "ConnectionGuard", "HostPolicy", "follow_client"]

CLIENT_WATCH = "litserve.client_watch"  # the scope key of a request's ClientWatch

# name[:port]: dot-separated labels of letters, digits, '-' and '_' (1-63 each; a final dot allowed),
# or a bracketed IPv6 address; the port, when present, is digits (possibly none, as RFC 3986 allows).
_HOST = re.compile(
    r"(?P<name>(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])(?::[0-9]{0,5})?"
)
_MAX_HOST_CHARS = 261  # 253 for the name, ':' and a five-digit port
_DISCONNECT: Mapping[str, Any] = {"type": "http.disconnect"}


@final
@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Which `Host` values a request may carry.

    `loopback_only`: the server is bound to a loopback address, so only loopback names (and `allowed`)
    are served. `allowed` holds lower-case names; `*` among them allows every well-formed Host.
    """

    loopback_only: bool
    allowed: frozenset[str] = frozenset()

    @classmethod
    def for_bind(cls, bound_host: str, allowed_hosts: Iterable[str]) -> HostPolicy:
        """The policy of a server bound to `bound_host` (a name or an address). `allowed_hosts` entries are
        compared as a Host is: without port, brackets or final dot, in lower case ("MyHost:8000" allows myhost)."""
        allowed = frozenset(host if host == "*" else (_host_name(host) or host) for host in allowed_hosts)
        bound = bound_host.strip("[]").lower()
        address = _address(bound)
        loopback = address.is_loopback if address is not None else _is_localhost(bound)
        return cls(loopback_only=loopback and "*" not in allowed, allowed=allowed)

    def refusal(self, host: str | None) -> ErrorResponse | None:
        """The answer refusing a request with this `Host` value (None: no Host header), or None to serve it."""
        if host is None:  # HTTP/1.0 without Host (h11 refuses it on 1.1): no browser sends that
            return None
        name = _host_name(host)
        if name is None:
            return MALFORMED_HOST
        if self.loopback_only and not _is_loopback_name(name) and name not in self.allowed:
            return HOST_NOT_ALLOWED
        return None


def _host_name(host: str) -> str | None:
    """The lower-case name of a well-formed `Host` value, without port, brackets or final dot; else None."""
    if len(host) > _MAX_HOST_CHARS:
        return None
    match = _HOST.fullmatch(host)
    if match is None:
        return None
    ipv6 = match.group("ipv6")
    if ipv6 is not None:
        try:
            return str(ipaddress.IPv6Address(ipv6))
        except ValueError:
            return None
    name = match.group("name").rstrip(".").lower()
    return name if len(name) <= 253 else None


def _is_loopback_name(name: str) -> bool:
    """localhost, *.localhost, 127.0.0.0/8 and ::1; also 0.0.0.0 and ::, which reach this machine's loopback
    listeners on Linux and macOS (LitServe printed `http://0.0.0.0:8000`, and clients copied it). No DNS
    rebinding can hide behind an address: it needs a name."""
    address = _address(name)
    if address is None:
        return _is_localhost(name)
    return address.is_loopback or address.is_unspecified


def _is_localhost(name: str) -> bool:
    return name == "localhost" or name.endswith(".localhost")


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


@final
class ClientWatch:
    """Whether a request's client is still there, and which task to cancel when it leaves. On the loop only."""

    __slots__ = ("_task", "has_left", "receive", "send")

    def __init__(self, receive: Receive | None = None, send: Send | None = None) -> None:
        self.has_left = False
        self._task: asyncio.Task[Any] | None = None
        # The server's own `receive` under the guard's: a route may listen on it for the client leaving
        # once the body is read (`web.disconnect_listener`). None without a guard.
        self.receive = receive
        # The server's own `send`: once the response started through the guard's, a route may send the
        # rest of its body on it (a stream's chunks skip a wrapper each). None without a guard.
        self.send = send

    def left(self) -> None:
        self.has_left = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()

    def follow(self, task: asyncio.Task[Any] | None) -> None:
        """Cancel `task` when the client leaves; at once (at its next await) if it has left already."""
        self._task = task
        if self.has_left and task is not None:
            task.cancel()


def follow_client(scope: Mapping[str, Any]) -> None:
    """Called by a route on its own task once the body is read: it is cancelled if the client has gone or goes."""
    watch = scope.get(CLIENT_WATCH)
    if watch is not None:
        watch.follow(asyncio.current_task())


@final
class _Exchange:
    """One request seen by the guard: its body reads, whether a response started, its ClientWatch."""

    __slots__ = ("_readers", "_receive", "_send", "aborted", "body_done", "reader", "started", "watch")

    def __init__(self, receive: Receive, send: Send, readers: _Readers) -> None:
        self._receive, self._send, self._readers = receive, send, readers
        self.watch = ClientWatch(receive, send)
        self.body_done = False
        self.started = False
        self.aborted = False
        self.reader: asyncio.Task[Any] | None = None  # the task waiting for more of the body

    async def receive(self) -> MutableMapping[str, Any]:
        try:
            message = await (self._receive() if self.body_done else self._read_body())
        except Exception:  # the server's receive failed (Ray's raises when its proxy cancelled the request)
            self.watch.left()
            raise
        if message["type"] == "http.disconnect":
            self.watch.left()
        return message

    async def _read_body(self) -> MutableMapping[str, Any]:
        if self.aborted or self._readers.stopping:
            self.aborted = True
            return dict(_DISCONNECT)
        task = asyncio.current_task()
        self.reader = task
        self._readers.active.add(self)
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not self.aborted:
                raise
            if task is not None and hasattr(task, "uncancel"):  # 3.11+: take back our own cancel (abort)
                task.uncancel()
            return dict(_DISCONNECT)
        finally:
            self.reader = None
            self._readers.active.discard(self)
        if message["type"] == "http.request" and not message.get("more_body", False):
            self.body_done = True
        return message

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    def abort(self) -> None:
        """Stop waiting for the body: the app sees the client leave; the guard answers 503 and closes."""
        self.aborted = True
        if self.reader is not None:
            self.reader.cancel()


@final
class _Readers:
    __slots__ = ("active", "stopping")

    def __init__(self) -> None:
        self.active: set[_Exchange] = set()
        self.stopping = False


@final
class ConnectionGuard:
    """The ASGI layer described above, in front of `app` (which receives lifespan events untouched).

    Refused requests count in the status of the endpoint whose path they named.
    """

    def __init__(self, app: ASGIApp, policy: HostPolicy, endpoints: Iterable[Endpoint] = ()) -> None:
        self._app = app
        self._policy = policy
        self._endpoints = tuple(endpoints)
        self._readers = _Readers()
        self._verdicts: dict[bytes | None, ErrorResponse | None] = {}  # by raw Host value; a handful in practice

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        refused = self._check_host(scope["headers"])
        if refused is not None:
            self._count(scope, refused)
            await _answer(send, refused)
            return
        exchange = _Exchange(receive, send, self._readers)
        scope[CLIENT_WATCH] = exchange.watch
        try:
            await self._app(scope, exchange.receive, exchange.send)
        except asyncio.CancelledError:
            # Hypercorn cancels what is left when stop's graceful period ends: say so, rather than its empty 500.
            if self._readers.stopping and not exchange.started and not exchange.watch.has_left:
                self._count(scope, STOPPED_READING)
                await _answer(send, STOPPED_READING)
            # The call is over for its client, whoever cancelled it. Quart runs the route in a task of its
            # own, which a cancelled call can leave running (Ray cancels the call when its proxy's client
            # hangs up, sometimes before the disconnect reaches Quart): the route's task is cancelled too.
            exchange.watch.left()
            raise
        if exchange.aborted and not exchange.started:
            self._count(scope, STOPPED_READING)
            await _answer(send, STOPPED_READING)

    def stop_reading(self) -> None:
        """On the loop, as shutdown begins: end every body read still waiting for its client."""
        self._readers.stopping = True
        for exchange in list(self._readers.active):
            exchange.abort()

    def _check_host(self, headers: Iterable[tuple[bytes, bytes]]) -> ErrorResponse | None:
        raw: bytes | None = None  # h11 refuses a request with two Host headers before it gets here
        for name, value in headers:
            if name == b"host":
                raw = value
                break
        verdicts = self._verdicts
        if raw in verdicts:
            return verdicts[raw]
        verdict = self._policy.refusal(None if raw is None else raw.decode("latin-1"))
        if len(verdicts) >= 256:  # bounded: a client sending ever new names cannot grow it
            verdicts.clear()
        verdicts[raw] = verdict
        return verdict

    def _count(self, scope: Mapping[str, Any], answer: ErrorResponse) -> None:
        count_refusal(self._endpoints, scope["path"], scope["method"], answer)


async def _answer(send: Send, answer: ErrorResponse) -> None:
    body = error_body(answer.detail)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
