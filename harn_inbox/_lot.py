"""`ParkingLot`: where wait calls park until their session changes, and the protocol they follow.

Theory of operation
-------------------
A wait call (``wait_sync``, ``wait``, ``wait_for``, ``wait_any``, a
``batches`` step) wants something of its session's store: "is anything
pending?", "take what matches". Asking is a *look*: a call into the store,
which answers atomically (see ``harn_inbox.stores``) and never blocks. When a
look finds nothing the call must sleep until the session changes, and a change
must never slip in between the look and the sleep unseen. The lot keeps that
promise with one rule, the same for every store and every framework:

    **A waiter is armed before it looks.** Arming, under the lot's lock, marks
    it `Waiter.parked` on each of its sessions: from that moment whoever
    *notifies* one of those sessions unparks it and owes it one wake.

A change is notified only after it is visible to every look (a push returns
from the store, then notifies). So a change that the armed look misses came
after it, and its notification finds the waiter parked and wakes it; a change
the look sees needs no wake. There is no third case, and this holds whether
the look ran under a lock of ours, in a database, or on a server in another
process whose notifications arrive over the network: a store only has to
call `notify` after each change that may give a waiter something. (For the
in-memory store the argument is carried by its lock: a push's change and its
look at the lot are ordered against the waiter's arming and look by the two
locks, so one of the two always sees the other.)

Sleeping on a wake that already came returns at once, and waking a call that
has moved on is harmless, so a waiter may be woken for nothing: it just looks
again. Each wait follows `wait_steps`:

1. Look. If there is a result, or the wait may not park (``timeout=0``, the
   inbox is closed), return it without touching the lot: the common case.
2. Enter the lot (`waiter_count` counts it from now until it returns) and
   start its timer.
3. Arm, then look; return a result. Else, if the wait was interrupted (its
   timeout passed) or the inbox closed, return empty-handed.
4. Sleep until woken. A cleared session ends the wait empty-handed, whatever
   is pending; otherwise look, return a result, and go back to 3. A look that
   judged entries without a match (``wait_for``) first lets others run, so a
   steady producer cannot hold the loop.
5. On every way out (a result, an error, cancellation): leave the lot and
   forget the timer.

Whoever flips `Waiter.parked` from true to false under the lot's lock owes
that waiter exactly one `Waiter.wake`, made after the lock is released: a
notify, `interrupt` (a timeout, a cleared session), `close`. A push touches
only the parked waiters of its own session, never one already woken, and
wakes all of one event loop's waiters with one thread-safe call.

Wakes never touch a loop from a foreign thread, nor leave a loop asleep: see
``_waiters.py``. Interrupts end a wait rather than just wake it:
`Interrupt.CLEARED` ends it with nothing whatever is pending, a timeout only
stops it from parking again, so an entry pushed before the deadline counts even
if the timer fired before the waiter looked.

A wait abandoned by a closed asyncio loop (woken, but its loop closed before
it ran) cannot leave by itself; `waiter_count`, ``statistics``, a cleared
session and `close` forget it, so it pins nothing for long and costs pushes
nothing.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING, Any, final

from ._mutex import Mutex

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from ._clock import Clock
    from ._waiters import Waiter

#: Where the inbox reports what it must not raise: a failed log call, a clock
#: that could not forget a timer.
fallback_logger = logging.getLogger("harn_inbox")


class Look(enum.Enum):
    """What a look returns when it has no result."""

    #: Nothing to return yet.
    NOTHING = enum.auto()
    #: Nothing to return yet, but it judged entries: let others run before looking again.
    JUDGED = enum.auto()
    #: Nothing to return ever: the session was cleared while the look ran. Ends the wait.
    CLEARED = enum.auto()
    #: No answer here, on the event loop: look again off the loop (`Pause.LOOK`). Only a
    #: look "here" of a store whose looks go over the network says so (`wait_steps`).
    AWAY = enum.auto()


class Pause(enum.Enum):
    """Why `wait_steps` pauses; its driver (the waiter) acts and resumes it."""

    #: Sleep until woken (at once if a wake came since the waiter was armed).
    SLEEP = enum.auto()
    #: Let the event loop run others, then resume.
    YIELD = enum.auto()
    #: Look off the event loop (the store's looks go over the network): resume with the result.
    LOOK = enum.auto()


class Interrupt(enum.Enum):
    """Why a wait must end without a result (`Waiter.interrupted`)."""

    TIMEOUT = "timeout"
    CLEARED = "cleared"


@final
class ParkingLot:
    """The wait calls in progress on an inbox's sessions, and the ones parked."""

    __slots__ = ("_mutex", "_waits", "closed", "parked")

    def __init__(self) -> None:
        self._mutex = Mutex("inbox's parking lot lock")
        #: Session id -> the wait calls in progress on it (a dict as an ordered set).
        self._waits: dict[str, dict[Waiter, None]] = {}
        #: Session id -> those of them parked: owed a wake when the session changes.
        #: A waiter is in here for each of its sessions exactly while it is parked.
        #: Changed under the lock only; `notify` and `Inbox.push` peek at it without.
        self.parked: dict[str, dict[Waiter, None]] = {}
        #: Set by `close` under the lock; read anywhere.
        self.closed = False

    def __repr__(self) -> str:
        with self._mutex:
            waits = len({waiter for waiters in self._waits.values() for waiter in waiters})
            parked = len({waiter for waiters in self.parked.values() for waiter in waiters})
        return f"<ParkingLot waiters={waits} parked={parked}>"

    # -- A wait call's side -------------------------------------------------------------------

    def enter(self, waiter: Waiter) -> None:
        with self._mutex:
            for session_id in waiter.session_ids:
                waits = self._waits.get(session_id)
                if waits is None:
                    self._waits[session_id] = {waiter: None}
                else:
                    waits[waiter] = None
            waiter.registered = True

    def arm(self, waiter: Waiter) -> bool:
        """Park *waiter* so that the next change to its sessions wakes it; False if it must end."""
        with self._mutex:
            if waiter.interrupted is Interrupt.CLEARED:
                return False
            waiter.arm()
            waiter.parked = True
            for session_id in waiter.session_ids:
                parked = self.parked.get(session_id)
                if parked is None:
                    self.parked[session_id] = {waiter: None}
                else:
                    parked[waiter] = None
        return True

    def leave(self, waiter: Waiter) -> None:
        """The wait call is ending: forget it; nobody owes it a wake any more."""
        # Read unlocked on purpose. Only the waiter's own thread registers it,
        # and an unregistered waiter is the only kind the garbage collector can
        # finalize (the registry pins the others): its cleanup lands here,
        # possibly inside one of our own critical sections on this very thread,
        # where taking the lock would raise.
        if waiter.registered:
            with self._mutex:
                self._leave_locked(waiter)

    def unpark(self, waiter: Waiter) -> None:
        """Owe *waiter* no wake, but keep it registered (a trio wait being cancelled)."""
        with self._mutex:
            self._unpark_locked(waiter)

    # -- The changing side --------------------------------------------------------------------

    def notify(self, session_id: str) -> None:
        """*session_id* changed: every wait parked on it looks again. Any thread."""
        # A lock-free look first: most pushes find nobody parked. A waiter that
        # arms after this look arms after the change, so its look sees it.
        if session_id in self.parked:
            with self._mutex:
                parked = self.parked.pop(session_id, None)
                woken = self._unpark_all(parked) if parked else []
            wake_all(woken)

    def wake_session(self, session_id: str) -> None:
        """Like `notify`, but always through the lock: for a change made without the store's.

        (`Batches.aclose` flips a flag that the waits' looks read: the lock
        orders the flip before any arm it does not see.)
        """
        with self._mutex:
            parked = self.parked.pop(session_id, None)
            woken = self._unpark_all(parked) if parked else []
        wake_all(woken)

    def notify_all(self) -> None:
        """Anything may have changed (a store reconnected): every parked wait looks again."""
        with self._mutex:
            woken = self._unpark_everyone()
        wake_all(woken)

    def interrupt(self, waiter: Waiter, reason: Interrupt) -> None:
        """End *waiter*'s wait for *reason* (from its timer), waking it if parked."""
        with self._mutex:
            if waiter.interrupted is None:
                waiter.interrupted = reason
            woken = waiter.parked
            self._unpark_locked(waiter)
        if woken:
            waiter.wake()

    def end_session(self, session_id: str) -> None:
        """*session_id* was cleared: every wait on it alone ends with nothing.

        A wait on several sessions (``wait_any``) ends once all of them were
        cleared during it; until then it goes on waiting for the others.
        """
        with self._mutex:
            woken = []
            for waiter in list(self._waits.get(session_id, ())):
                if waiter.abandoned():
                    self._leave_locked(waiter)
                    continue
                if len(waiter.session_ids) > 1:
                    cleared = waiter.cleared
                    if cleared is None:
                        cleared = waiter.cleared = set()
                    cleared.add(session_id)
                    if len(cleared) < len(waiter.session_ids):
                        continue
                waiter.interrupted = Interrupt.CLEARED
                if waiter.parked:
                    self._unpark_locked(waiter)
                    woken.append(waiter)
        wake_all(woken)

    def close(self) -> int:
        """Stop every wait from parking again and wake the parked ones; return how many."""
        with self._mutex:
            self.closed = True
            for waits in list(self._waits.values()):
                for waiter in list(waits):
                    if waiter.abandoned():
                        self._leave_locked(waiter)
            woken = self._unpark_everyone()
        wake_all(woken)
        return len(woken)

    # -- Looking ------------------------------------------------------------------------------

    def waiter_count(self, session_id: str) -> int:
        with self._mutex:
            waits = self._waits.get(session_id)
            if not waits:
                return 0
            for waiter in [waiter for waiter in waits if waiter.abandoned()]:
                self._leave_locked(waiter)
            return len(self._waits.get(session_id, ()))

    def held(self) -> bool:
        """Whether some thread is inside the lot's critical section (for tests)."""
        return self._mutex.held()

    @property
    def mutex(self) -> Mutex:
        """The lot's lock: a change that will notify refuses, before it is made, to re-enter it."""
        return self._mutex

    # -- Inside (with the lock held) ----------------------------------------------------------

    def _unpark_locked(self, waiter: Waiter) -> None:
        if waiter.parked:
            waiter.parked = False
            for session_id in waiter.session_ids:
                parked = self.parked.get(session_id)
                if parked is not None:
                    parked.pop(waiter, None)
                    if not parked:
                        del self.parked[session_id]

    def _unpark_all(self, parked: dict[Waiter, None]) -> list[Waiter]:
        # *parked* has left self.parked for the session(s) being woken.
        woken = list(parked)
        for waiter in woken:
            if len(waiter.session_ids) == 1:
                waiter.parked = False
            else:  # parked on other sessions too: not any more
                self._unpark_locked(waiter)
        return woken

    def _unpark_everyone(self) -> list[Waiter]:
        # Every parked waiter leaves `parked` (emptied in place: the inbox
        # peeks at this very dict), so that no later notify finds one it
        # has already woken and wakes it twice.
        woken = list(dict.fromkeys(waiter for parked in self.parked.values() for waiter in parked))
        self.parked.clear()
        for waiter in woken:
            waiter.parked = False
        return woken

    def _leave_locked(self, waiter: Waiter) -> None:
        if waiter.registered:
            self._unpark_locked(waiter)
            waiter.registered = False
            for session_id in waiter.session_ids:
                waits = self._waits.get(session_id)
                if waits is not None:
                    waits.pop(waiter, None)
                    if not waits:
                        del self._waits[session_id]


def wait_steps(
    lot: ParkingLot,
    waiter: Waiter,
    look: Callable[[], Any],
    timeout: float | None,
    clock: Clock,
    look_here: Callable[[], Any] | None = None,
) -> Generator[Pause, Any, Any]:
    """One wait call, as steps 1 to 5 of the theory above; returns a result or `Look.NOTHING`.

    A generator that pauses where the waiter's framework must act (`Pause`):
    the waiter drives it, sleeping and yielding its own way, and closes it on
    every way out, which runs step 5. If the clock declines to keep *timeout*,
    `Waiter.framework_timeout` says so by the first pause that is not a look:
    the driver keeps it.

    *look_here* is given for a store whose looks go over the network
    (``network = True``). The first look then pauses (`Pause.LOOK`): the
    driver runs *look* off its event loop and resumes it with the result.
    Every later look is made by an armed waiter, after that one: it is
    *look_here*, on the event loop, which answers from what this process
    holds of the session, or says `Look.AWAY` (then it pauses to look as the
    first did). The argument is unchanged: what the process does not hold
    yet of the session was changed after the first look, and the store
    notifies such a change once it holds it, so the armed waiter is woken
    and looks again.
    """
    off_loop = look_here is not None
    forget = None
    if off_loop and timeout:
        # A look over the network may stall (a paused server): the deadline
        # counts from the start, so that it can end even the first look.
        forget = _start_timer(lot, waiter, timeout, clock)
    try:
        # The first look is never "here": it sees every change made before the
        # wait began, wherever it was made (another process's clear, say).
        found = (yield Pause.LOOK) if off_loop else look()
        if found is Look.CLEARED:
            return Look.NOTHING
        if found is not Look.NOTHING and found is not Look.JUDGED:
            return found
        if timeout == 0 or lot.closed or waiter.interrupted is not None:
            return Look.NOTHING
        lot.enter(waiter)
        if timeout is not None and forget is None and waiter.framework_timeout is None:
            forget = _start_timer(lot, waiter, timeout, clock)
        while True:
            if not lot.arm(waiter):
                return Look.NOTHING
            found = look() if look_here is None else (yield from _look_here(look_here, waiter, lot))
            if found is Look.CLEARED:
                return Look.NOTHING
            if found is not Look.NOTHING and found is not Look.JUDGED:
                return found
            if waiter.interrupted is not None or lot.closed:
                return Look.NOTHING
            yield Pause.SLEEP
            if waiter.interrupted is Interrupt.CLEARED:
                return Look.NOTHING
            found = look() if look_here is None else (yield from _look_here(look_here, waiter, lot))
            if found is Look.CLEARED:
                return Look.NOTHING
            if found is not Look.NOTHING and found is not Look.JUDGED:
                return found
            if waiter.interrupted is not None or lot.closed:
                return Look.NOTHING
            if found is Look.JUDGED:
                yield Pause.YIELD
    finally:
        lot.leave(waiter)
        if forget is not None:
            forget_timer(forget)


def _look_here(
    look_here: Callable[[], Any], waiter: Waiter, lot: ParkingLot
) -> Generator[Pause, Any, Any]:
    """A later look of `wait_steps` for a network store: *look_here*, or away if it says so.

    A wait's last look (its timeout passed, the inbox closed) is always made
    away: an entry pushed before the deadline counts, even if its message has
    not reached this process yet (as long as the server answers within the
    patience of a look off the loop, ``harn_inbox._offloop.PATIENCE``).
    """
    if waiter.interrupted is None and not lot.closed:
        found = look_here()
        if found is not Look.AWAY:
            return found
    return (yield Pause.LOOK)


def _start_timer(
    lot: ParkingLot, waiter: Waiter, timeout: float, clock: Clock
) -> Callable[[], object] | None:
    """Interrupt *waiter* after *timeout* on *clock*; if the clock declines, its driver keeps it."""
    forget = clock.call_later(timeout, lambda: lot.interrupt(waiter, Interrupt.TIMEOUT))
    if forget is None:
        waiter.framework_timeout = timeout
    return forget


def forget_timer(forget: Callable[[], object]) -> None:
    """Call a clock's forget function; log what it raises (the wait's result must stand)."""
    try:
        forget()
    except Exception:
        fallback_logger.exception("harn_inbox: the clock could not forget a timer")


def wake_all(waiters: list[Waiter]) -> None:
    """Wake each of *waiters*: one call per event loop (or thread), however many wait on it."""
    if len(waiters) == 1:  # the usual case: no grouping to do
        waiters[0].wake()
        return
    groups: dict[object, list[Waiter]] = {}
    for waiter in waiters:
        key = waiter.loop_key
        if key is None:
            waiter.wake()
        else:
            group = groups.get(key)
            if group is None:
                groups[key] = [waiter]
            else:
                group.append(waiter)
    for group in groups.values():
        if len(group) == 1:
            group[0].wake()
        else:
            group[0].wake_group(group)
