"""Where an inbox reads the time, and who keeps its timeouts.

An inbox asks its clock two things: the time to stamp on an entry
(`Clock.now_ms`), and, for each timed wait, whether the clock will end that
wait itself (`Clock.call_later`). A real-time clock declines (returns ``None``)
and the waiter times out on its own framework's timer, so trio's ``MockClock``
can fast-forward it. A virtual clock accepts, and the wait ends when, and only
when, that clock's time passes the deadline.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Protocol, final

import attrs

from ._arguments import check_int, check_seconds

if TYPE_CHECKING:
    from collections.abc import Callable


class Clock(Protocol):
    """What an `Inbox` needs of a clock. Write your own to record or steer time.

    Both methods may be called from any thread, with the inbox's lock held
    (`now_ms`) or not (`call_later`), so they must be quick, must not block, and
    must not call back into the inbox.
    """

    def now_ms(self) -> int:
        """Milliseconds since the epoch (a non-negative ``int``) for `InboxEntry.ts_ms`."""
        ...

    def call_later(
        self, seconds: float, callback: Callable[[], object]
    ) -> Callable[[], object] | None:
        """Offer to end a timed wait *seconds* from now on this clock's time.

        Return ``None`` to decline: the waiter then times out on its own
        framework's real timer (``trio.move_on_after``, ``loop.call_later``, a
        thread's timed lock). Or keep *callback* and return a function that
        forgets it; call *callback* (from any thread, holding none of your own
        locks) once *seconds* of this clock's time have passed. *seconds* is
        always above 0.

        The wait calls the forgetting function as it ends, whether or not the
        callback has run. If it raises, the error is logged (standard
        ``logging``, logger ``harn_inbox``) and the wait's result stands.
        """
        ...


@final
@attrs.frozen
class SystemClock:
    """Real wall-clock time for stamps; real timers for timeouts. The default."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def call_later(
        self, seconds: float, callback: Callable[[], object]
    ) -> Callable[[], object] | None:
        return None


@final
@attrs.define(eq=False, init=False, repr=False)
class ManualClock:
    """Virtual time that moves only when told to: for tests and simulations.

    Stamps read its current time. A timed wait on an inbox built with it ends
    when `advance` or `set` carries the clock past the wait's deadline, and
    never by wall time: tests of timeouts need no sleeping.

    Time may be `set` backwards. Stamps then go back with it (a session's
    sequence numbers still only go up), and deadlines stay where they were on
    the clock's time line: nothing fires on the way back, and a pending wait
    ends once the clock passes its deadline again.

    All methods are safe to call from any thread.

    Args:
        start_ms: The time to start at, in milliseconds since the epoch.

    Raises:
        TypeError: *start_ms* is not an ``int``.
        ValueError: *start_ms* is negative.
    """

    _now_ns: int
    _lock: threading.Lock
    _timers: dict[int, tuple[int, Callable[[], object]]]
    _next_timer: int

    def __init__(self, start_ms: int = 0) -> None:
        self._now_ns = _checked_ms("start_ms", start_ms) * 1_000_000
        self._lock = threading.Lock()
        self._timers = {}
        self._next_timer = 0

    def __repr__(self) -> str:
        return f"ManualClock(now_ms={self.now_ms()}, timers={len(self._timers)})"

    def now_ms(self) -> int:
        return self._now_ns // 1_000_000

    def advance(self, seconds: float) -> None:
        """Move time forward by *seconds* (non-negative, finite) and end the waits now due.

        Raises:
            TypeError: *seconds* is not a number.
            ValueError: *seconds* is negative, NaN or infinite.
        """
        step = check_seconds("seconds", seconds)
        if math.isinf(step):
            raise ValueError(f"seconds must be finite, not {seconds!r}")
        self._move(lambda now: now + _nanoseconds(step))

    def set(self, ms: int) -> None:
        """Jump to *ms* milliseconds since the epoch, forwards or backwards.

        Raises:
            TypeError: *ms* is not an ``int``.
            ValueError: *ms* is negative.
        """
        target = _checked_ms("ms", ms) * 1_000_000
        self._move(lambda now: target)

    def call_later(
        self, seconds: float, callback: Callable[[], object]
    ) -> Callable[[], object] | None:
        with self._lock:
            key = self._next_timer
            self._next_timer += 1
            self._timers[key] = (self._now_ns + _nanoseconds(seconds), callback)
        return lambda: self._forget(key)

    def _forget(self, key: int) -> None:
        # Lock-free (one atomic dict.pop): a wait's cleanup may run as a GC
        # finalizer, possibly inside one of this clock's own locked sections.
        self._timers.pop(key, None)

    def _move(self, to: Callable[[int], int]) -> None:
        with self._lock:
            self._now_ns = now = to(self._now_ns)
            due = sorted(
                (deadline, key, callback)
                for key, (deadline, callback) in self._timers.copy().items()
                if deadline <= now
            )
            for _, key, _ in due:
                self._timers.pop(key, None)
        # Callbacks run outside our lock: they take the inbox's lock, and the
        # inbox calls call_later() while holding none, so no order is inverted.
        # One that raises does not keep the others from firing.
        error: BaseException | None = None
        for _, _, callback in due:
            try:
                callback()
            except BaseException as raised:
                error = error or raised
        if error is not None:
            raise error


def _nanoseconds(seconds: float) -> int:
    """Exact for any finite float, however large (``round(seconds * 1e9)`` overflows at 1.8e299)."""
    whole = int(seconds)
    return whole * 1_000_000_000 + round((seconds - whole) * 1e9)


def _checked_ms(name: str, ms: object) -> int:
    value = check_int(name, ms)
    if value < 0:
        raise ValueError(f"{name} must be a non-negative number of milliseconds, not {ms!r}")
    return value
