"""Binding the listening socket ourselves, so a taken port fails in start() and port 0 is resolved."""

from __future__ import annotations

import errno
import socket

from litserve.exceptions import PortInUseError

__all__ = ["bind_listening_socket", "is_loopback", "url_of"]

_BACKLOG = 1024


def bind_listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free port (read it from getsockname()).

    SO_REUSEADDR lets a restarted server bind again at once while old connections sit in TIME_WAIT;
    on Linux it does not let two listeners share a port, so a taken port still fails here.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve host {host!r}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                exc.errno, f"port {port} on {host} is already in use by another program; stop it or pick another port"
            ) from exc
        raise
    return sock


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def url_of(host: str, port: int) -> str:
    """The URL a client on this machine uses for a server bound to (host, port)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
