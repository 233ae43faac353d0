"""The app switch: what Hypercorn serves on a socket, so a hot swap changes the app without closing a connection.

Hypercorn serves one ASGI app for the life of its listening socket. The switch is that app. Each HTTP call
goes to the version that is current when the call arrives: a keep-alive connection's next request reaches
the new version, while a call that arrived earlier (queued, running, or still reading its body) stays on the
old version until it ends. The switch counts each version's calls in progress, so a swap knows when the old
version has gone idle and its workers can stop.

The switch also runs the ASGI lifespan. Lifespan startup and shutdown go to the Quart app of the version that
is current at that moment, as `web.stack` routes them (middlewares never see lifespan events). A swap starts
the new version's app before it becomes current and shuts the old one down once it has gone idle.

Everything here runs on the HTTP loop, so the counts need no lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from typing import Any, final

from quart import Quart

from litserve.web.stack import ASGIApp, Receive, Send

__all__ = ["AppSwitch", "Version"]


@final
class Version:
    """One version of what the HTTP thread serves: a start's or a swap's app, and the hooks it needs.

    `asgi` takes the HTTP calls (the connection guard in front of the app's stack). `app` is the Quart app that
    runs the lifespan. `on_loop_exit` runs as the loop ends (the pool's `loop_ended`). `on_shutdown` runs as
    shutdown begins (the guard's `stop_reading`).
    """

    __slots__ = ("app", "asgi", "calls", "finished_late", "idle", "on_loop_exit", "on_shutdown")

    def __init__(
        self,
        asgi: ASGIApp,
        app: Quart,
        on_loop_exit: Callable[[], None],
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.asgi = asgi
        self.app = app
        self.on_loop_exit = on_loop_exit
        self.on_shutdown = on_shutdown
        self.calls = 0  # calls in progress
        self.finished_late = 0  # calls that ended after another version became current
        self.idle: asyncio.Event | None = None  # made when the version is switched out; set at no calls


@final
class AppSwitch:
    """The ASGI app Hypercorn serves: it passes each call to the current `Version` (see the module docstring)."""

    def __init__(self, first: Version) -> None:
        self._current = first
        self._live = [first]  # the current version and those switched out that have not been retired yet

    @property
    def current(self) -> Version:
        return self._current

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        version = self._current
        version.calls += 1
        try:
            await version.asgi(scope, receive, send)
        finally:
            version.calls -= 1
            if version.idle is not None:  # switched out while this call ran
                version.finished_late += 1
                if version.calls == 0:
                    version.idle.set()

    async def switch_to(self, new: Version) -> Version:
        """Run `new`'s lifespan startup, then make it current; returns the version it replaced.

        If the startup raises, nothing is switched.
        """
        await new.app.startup()
        old, self._current = self._current, new
        self._live.append(new)
        old.idle = asyncio.Event()
        if old.calls == 0:
            old.idle.set()
        return old

    async def wait_idle(self, old: Version, timeout_s: float) -> bool:
        """Wait until a switched-out version has no call in progress; False if `timeout_s` passed first."""
        assert old.idle is not None, "only a version switched out goes idle"
        try:
            await asyncio.wait_for(old.idle.wait(), timeout_s)
        except asyncio.TimeoutError:  # not yet the builtin TimeoutError on Python 3.10
            return False
        return True

    async def retire(self, old: Version) -> None:
        """Run a switched-out version's lifespan shutdown; the loop's end and shutdown no longer reach it."""
        try:
            await old.app.shutdown()
        finally:
            self._live.remove(old)

    def stop_reading(self) -> None:
        """On the loop, as shutdown begins: every live version's `on_shutdown` (the guards end stuck body reads)."""
        for version in list(self._live):
            if version.on_shutdown is not None:
                version.on_shutdown()

    def loop_ended(self) -> None:
        """On the HTTP thread as its loop ends: every live version's `on_loop_exit` (their workers hear it)."""
        for version in list(self._live):
            version.on_loop_exit()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # Quart's own lifespan handler, but for whichever app is current at each event.
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                try:
                    await self._current.app.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                else:
                    await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                try:
                    await self._current.app.shutdown()
                except Exception as exc:
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                return
