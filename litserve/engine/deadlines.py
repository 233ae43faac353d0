"""Deadlines on the HTTP loop for many requests at once, with one timer instead of one per request.

Every plain request has a deadline (its `timeout`) and every body read has one (`read_timeout`), and
nearly all of them are cancelled long before they pass. One asyncio timer per deadline cost the trivial
JSON benchmark about a tenth of the loop's time: a `TimerHandle`, a push onto the loop's heap (whose
comparisons run in Python), and the cancelled handles sifted out again.

The deadlines of one kind come in nearly the order they pass (a fixed timeout from a time that only moves
on), so `Deadlines` keeps them in a FIFO and arms one loop timer for the earliest: setting a deadline is
an append, cancelling one clears its callback, and cancelled ones at the head are dropped as new ones come.
A deadline that would pass before the last one set (a request whose slow body read ended after a later
request's) gets a timer of its own, so no deadline ever fires late. Loop thread only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import final

__all__ = ["Deadline", "Deadlines"]

logger = logging.getLogger(__name__)


@final
class Deadline:
    """One deadline: `cancel()` before it passes and its callback never runs."""

    __slots__ = ("_callback", "_timer", "when_s")

    def __init__(self, when_s: float, callback: Callable[[], None]) -> None:
        self.when_s = when_s  # monotonic
        self._callback: Callable[[], None] | None = callback
        self._timer: asyncio.TimerHandle | None = None  # only for a deadline out of order

    @property
    def is_live(self) -> bool:
        return self._callback is not None

    def cancel(self) -> None:
        self._callback = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def fire(self) -> None:
        callback, self._callback, self._timer = self._callback, None, None
        if callback is not None:
            callback()


@final
class Deadlines:
    """The deadlines one loop keeps for one kind of wait, in the order they pass, under one timer."""

    __slots__ = ("_entries", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._entries: collections.deque[Deadline] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None  # armed for the earliest deadline kept

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, kind: str) -> Deadlines:
        """The loop's deadlines of `kind` (e.g. "request", "read"): made on first use, kept on the loop itself,
        so they go with it (a weak mapping would be kept alive by its values, which hold the loop)."""
        kinds: dict[str, Deadlines] | None = getattr(loop, _ATTRIBUTE, None)
        if kinds is None:
            kinds = {}
            setattr(loop, _ATTRIBUTE, kinds)
        deadlines = kinds.get(kind)
        if deadlines is None:
            deadlines = kinds[kind] = cls(loop)
        return deadlines

    def __len__(self) -> int:
        """Deadlines kept in the FIFO (cancelled ones included until they are dropped)."""
        return len(self._entries)

    def at(self, when_s: float, callback: Callable[[], None]) -> Deadline:
        """Call `callback` on the loop at `when_s` (monotonic) unless the returned deadline is cancelled first."""
        deadline = Deadline(when_s, callback)
        entries = self._entries
        while entries and not entries[0].is_live:  # answered before their time: nothing left to do for them
            entries.popleft()
        if entries and when_s < entries[-1].when_s:  # out of order: a timer of its own, so it is not late
            deadline._timer = self._loop.call_at(_loop_time(self._loop, when_s), deadline.fire)
            return deadline
        entries.append(deadline)
        if self._timer is None:
            self._arm(when_s)
        return deadline

    def _arm(self, when_s: float) -> None:
        if self._timer is not None:  # a callback run by `_fire` set a deadline, which armed the timer already
            self._timer.cancel()
        self._timer = self._loop.call_at(_loop_time(self._loop, when_s), self._fire)

    def _fire(self) -> None:
        self._timer = None
        entries = self._entries
        now_s = time.monotonic()
        while entries:
            head = entries[0]
            if head.is_live and head.when_s > now_s:
                self._arm(head.when_s)
                return
            entries.popleft()
            try:
                head.fire()  # a no-op for a cancelled one
            except Exception:  # one failed callback must not leave the deadlines behind it unarmed
                logger.exception("a deadline's callback raised")


def _loop_time(loop: asyncio.AbstractEventLoop, when_s: float) -> float:
    """`when_s` (time.monotonic) on the loop's clock (the same clock for asyncio's default loops)."""
    return loop.time() + (when_s - time.monotonic())


_ATTRIBUTE = "_litserve_deadlines"  # where a loop keeps its deadlines
