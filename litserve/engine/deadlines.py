"""Deadlines on the HTTP loop for many requests at once, with one timer instead of one per request.

Every plain request has a deadline (its `timeout`) and every body read has one (`read_timeout`), and
nearly all of them are cancelled long before they pass. One asyncio timer per deadline cost the trivial
JSON benchmark about a tenth of the loop's time: a `TimerHandle`, a push onto the loop's heap (whose
comparisons run in Python), and the cancelled handles sifted out again.

The deadlines of one kind come in nearly the order they pass (a fixed timeout from a time that only moves
on), so `Deadlines` keeps them in a FIFO and arms one loop timer for the earliest: setting a deadline is
an append, cancelling one clears its callback, and cancelled ones at the head are dropped as new ones come.
A deadline that would pass before the last one set (a request whose slow body read ended after a later
request's, or a shorter timeout after a hot swap) gets a timer of its own, so no deadline ever fires late.
Times are kept on the loop's own clock (uvloop's is cached per iteration). Loop thread only.
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

    __slots__ = ("_callback", "_owner", "_timer", "when")

    def __init__(self, when: float, callback: Callable[[], None], owner: Deadlines | None) -> None:
        self.when = when  # on the loop's clock (`loop.time()`)
        self._callback: Callable[[], None] | None = callback
        self._owner = owner  # the Deadlines whose FIFO holds it; None when it has a timer of its own
        self._timer: asyncio.TimerHandle | None = None  # only for a deadline out of order

    @property
    def is_live(self) -> bool:
        return self._callback is not None

    def cancel(self) -> None:
        if self._callback is None:
            return  # fired or cancelled already
        self._callback = None
        if self._owner is not None:
            self._owner._cancelled += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def fire(self) -> None:
        callback, self._callback, self._timer = self._callback, None, None
        if callback is not None:
            callback()


@final
class Deadlines:
    """The deadlines one loop keeps for one kind of wait, in the order they pass, under one timer.

    Cancelled deadlines leave the FIFO from its head as new ones come, and all at once when they are
    more than half of it (one slow request at the head must not make the FIFO grow with every request
    answered behind it). The timer is armed for the earliest deadline kept, and armed again whenever a
    deadline comes that passes before it (the one it was armed for was cancelled, or the timeout changed).
    """

    __slots__ = ("_armed", "_cancelled", "_entries", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._entries: collections.deque[Deadline] = collections.deque()
        self._cancelled = 0  # cancelled deadlines still in `_entries`
        self._timer: asyncio.TimerHandle | None = None
        self._armed = 0.0  # when the timer fires, on the loop's clock

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
        """Call `callback` on the loop at `when_s` (time.monotonic) unless the returned deadline is cancelled first."""
        loop = self._loop
        when = loop.time() + (when_s - time.monotonic())  # the loop's clock from here on
        self._let_go()
        entries = self._entries
        if entries and when < entries[-1].when:  # out of order: a timer of its own, so it is not late
            deadline = Deadline(when, callback, None)
            deadline._timer = loop.call_at(when, deadline.fire)
            return deadline
        deadline = Deadline(when, callback, self)
        entries.append(deadline)
        if self._timer is None or when < self._armed:
            self._arm(when)
        return deadline

    def _let_go(self) -> None:
        """Drop cancelled deadlines: those at the head, and every one once they are most of the FIFO."""
        entries = self._entries
        while entries and not entries[0].is_live:  # answered before their time: nothing left to do for them
            entries.popleft()
            self._cancelled -= 1
        if self._cancelled > 64 and 2 * self._cancelled > len(entries):
            self._entries = collections.deque(entry for entry in entries if entry.is_live)
            self._cancelled = 0

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        while self._entries:
            head = self._entries[0]
            if head.is_live and head.when > now:
                if self._timer is None or head.when < self._armed:  # a callback may have armed it already
                    self._arm(head.when)
                return
            self._entries.popleft()
            if not head.is_live:
                self._cancelled -= 1
                continue
            head._owner = None  # out of the FIFO: a cancel from its callback is not counted
            try:
                head.fire()
            except Exception:  # one failed callback must not leave the deadlines behind it unarmed
                logger.exception("a deadline's callback raised")


_ATTRIBUTE = "_litserve_deadlines"  # where a loop keeps its deadlines
