"""The waiters: how a blocked thread, a trio task or an asyncio task parks and is woken.

Theory of operation
-------------------
Every wait in harn_inbox (``wait_sync``, ``wait``, ``wait_for``, a ``batches``
step) is the same loop, run by the waiter of the caller's framework::

    while (result := step(waiter)) is PARKED:
        park until woken

*step* is a function of the inbox. Under the inbox's lock it decides: either
there is a result (entries, ``True``, the end of the stream, a timeout) or
there is none yet, in which case it registers *waiter* on its session, marks
it `Waiter.parked` and returns `PARKED` -- the check and the parking are one
critical section. A push takes the same lock, so it lands either before the
check (and the step sees the entry) or after the parking (and the push finds
the waiter parked and wakes it). There is no third place for it to land: no
wake-up is lost.

A waiter stays registered on its session from its first park (from its first
look, for a ``wait_for``, whose predicate runs outside the lock) until its wait
call ends (the step that returns a result unregisters it in the same critical
section; cancellation and errors unregister it on the way out), so
``clear_session`` reaches every wait in progress, parked or not, and
``waiter_count`` counts waits in progress. Whoever flips ``parked`` from true
to false, under the lock, owes the waiter exactly one `Waiter.wake`, made after
the lock is released: a push, ``clear_session``, ``close``, a timer, a
``batches`` ``aclose``. Parking also arms the waiter (`Waiter.arm`, under the
same lock), so the wake it is owed finds what it will wait on, however late
that wake comes: the waiter cannot park again before it is woken, so nothing
re-arms it in between. A woken waiter simply runs *step* again: waking says
"look again", never "here is your entry". Anything that must end a wait
rather than just wake it sets `Waiter.interrupted` under the lock: a cleared
session ends the wait with nothing, whatever is pending; a timeout only stops
it from parking again, so an entry pushed before the deadline still counts
even if the timer fired before the waiter got to look. Taking entries
happens only inside *step*, in the consumer's own thread and under the lock,
after the wake: a wait cancelled between the wake and the step has taken
nothing, and one that returns nothing has taken nothing.

A wake never touches a loop from a foreign thread, and never leaves a loop
asleep: a trio task is rescheduled, and an asyncio future resolved, directly
only from inside a task of the waiter's own run or loop; from anywhere else it
goes through the thread-safe entry (``TrioToken.run_sync_soon``,
``loop.call_soon_threadsafe``), which also wakes the loop's I/O wait. The
loop's own thread counts as "anywhere else" outside its tasks: a finalizer or
a plain ``signal.signal`` handler runs there while the loop is blocked in its
selector, or about to block with a timeout computed before the wake, and
asyncio in particular learns of a direct ``call_soon`` only on its next turn.
So does the waiting trio task itself, interrupted by such a handler between
its step and its park: trio must not reschedule a task that has not parked.
(Such a push can still wait forever for the inbox's lock, if it interrupted
an inbox call of its own thread: the README advises against it. And a
handler that raises, KeyboardInterrupt among them, can cut an inbox call
short between a push's unpark and its wake: that wake is lost, as any code
not written for asynchronous exceptions can be.) Inside a
task the loop is between two I/O waits and looks at its ready queue before
the next; the one exception, an eager asyncio task (3.12+) created from such
a place, runs its first step right there. Neither way blocks, and a loop
that has already finished is ignored: the entry stays queued for whoever
drains next.

The timeout of a wait is kept by the inbox's clock when the clock accepts it
(`Clock.call_later`; a virtual clock does), else by the framework's own timer:
a thread's timed lock, trio's cancel scopes (so trio's ``MockClock`` applies),
asyncio's ``loop.call_later``. Either way it arrives as an interrupt.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time

# asyncio's own test for "is a loop running here", without get_running_loop()'s
# RuntimeError, whose cost a producer thread paid on every wake.
from asyncio.events import _get_running_loop as _running_loop
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Protocol, TypeVar

import trio

if TYPE_CHECKING:
    from ._clock import Clock

T = TypeVar("T")

#: Where the inbox reports what it must not raise: a failed log call, a clock
#: that could not forget a timer.
fallback_logger = logging.getLogger("harn_inbox")


class Parked(enum.Enum):
    """What a step returns when it found nothing and registered its waiter."""

    PARKED = enum.auto()


PARKED = Parked.PARKED


class Interrupt(enum.Enum):
    """Why a wait must end without a result (`Waiter.interrupted`)."""

    TIMEOUT = "timeout"
    CLEARED = "cleared"


Step = Callable[["Waiter | None"], "T | Parked"]


class Lot(Protocol):
    """What a waiter needs of the inbox it parks on (private members of `Inbox`)."""

    @property
    def _clock(self) -> Clock: ...

    def _interrupt(self, waiter: Waiter, reason: Interrupt) -> None:
        """Mark *waiter* interrupted and wake it if it is parked."""

    def _leave(self, waiter: Waiter) -> None:
        """Unregister *waiter*: its wait call is ending (cancelled, or an error)."""

    def _unpark(self, waiter: Waiter) -> None:
        """Mark *waiter* no longer parked, owed no wake; it stays registered."""


class Waiter:
    """One wait call: registered on its session from its first park to its end."""

    __slots__ = ("interrupted", "parked", "registered", "session_id")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        # All three written under the inbox's lock only.
        self.interrupted: Interrupt | None = None
        self.registered = False
        self.parked = False

    def arm(self) -> None:
        """Get ready for the wake a park is owed. Under the lock, in the waiter's own thread."""

    def wake(self) -> None:
        """Make the parked party run its step again. Any thread; never blocks or raises."""
        raise NotImplementedError

    def abandoned(self) -> bool:
        """Whether nobody can ever run this wait's step again (its loop is closed)."""
        return False


def _start_timer(lot: Lot, waiter: Waiter, timeout: float | None) -> Callable[[], None] | None:
    """Hand the timeout to a clock that keeps time itself; ``None`` if it declined.

    Returns how to forget the timer, called as the wait ends (in a ``finally``).
    """
    if timeout is None:
        return None
    forget = lot._clock.call_later(timeout, lambda: lot._interrupt(waiter, Interrupt.TIMEOUT))
    return None if forget is None else partial(_forget_timer, forget)


def _forget_timer(forget: Callable[[], object]) -> None:
    # The wait is ending and may have taken entries: a clock whose forget
    # function raises must not turn that into an error and lose them. (If its
    # timer fires after all, it interrupts a wait that is over: nothing happens.)
    try:
        forget()
    except Exception:
        fallback_logger.exception("harn_inbox: the clock could not forget a timer")


class ThreadWaiter(Waiter):
    """A thread blocked in ``wait_sync``: parks on a lock of its own that `wake` releases."""

    __slots__ = ("_lock", "_lot")

    def __init__(self, session_id: str, lot: Lot) -> None:
        super().__init__(session_id)
        self._lot = lot
        self._lock = threading.Lock()
        self._lock.acquire()

    def wake(self) -> None:
        self._lock.release()

    def run(self, step: Step[T], timeout: float | None) -> T:
        if timeout == 0:
            return step(None)  # type: ignore[return-value]  # no waiter, no park
        lot = self._lot
        cancel_timer = _start_timer(lot, self, timeout)
        deadline = (
            None if timeout is None or cancel_timer is not None else time.monotonic() + timeout
        )
        try:
            while (result := step(self)) is PARKED:
                if deadline is None:
                    self._lock.acquire()
                elif not self._lock.acquire(
                    timeout=min(max(deadline - time.monotonic(), 0.0), threading.TIMEOUT_MAX)
                ):
                    # Timed out: the next step returns what is there, without parking.
                    lot._interrupt(self, Interrupt.TIMEOUT)
            return result
        except BaseException:  # KeyboardInterrupt in acquire(): leave no waiter behind.
            lot._leave(self)
            raise
        finally:
            if cancel_timer is not None:
                cancel_timer()


class TrioWaiter(Waiter):
    """A trio task: parks in ``wait_task_rescheduled``, woken inside its own run only."""

    __slots__ = ("_lot", "_owner", "_task", "_thread", "_token")

    def __init__(self, session_id: str, lot: Lot) -> None:
        super().__init__(session_id)
        self._lot = lot
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()
        # The task that waits (wait calls run in the task that awaits them);
        # `wake` must not reschedule it from inside itself.
        self._owner = trio.lowlevel.current_task()
        # `_owner` while parked in trio, else None; touched only in the trio thread.
        self._task: trio.lowlevel.Task | None = None

    def wake(self) -> None:
        # Directly only from a task of our own run, and never from the waiting
        # task itself (see the theory above). Another thread is never inside
        # our run: that test first, as it is cheap, whereas asking trio raises
        # and swallows an error there.
        if threading.get_ident() == self._thread:
            current = _current_task(self._token)
            if current is not None and current is not self._owner:
                self._resume()
                return
        try:
            self._token.run_sync_soon(self._resume)
        except trio.RunFinishedError:
            # The run is over and its task with it: nobody will look again.
            # The entry stays queued; the dead wait must not stay registered.
            self._lot._leave(self)

    def _resume(self) -> None:
        # In the trio thread, from another task or from the scheduler. Either
        # way the waiting task is not running, so it has parked in trio since
        # the step that parked it (one synchronous stretch of the task), unless
        # a cancellation got to it first (`_abort`) or something raised in that
        # stretch (see run): then there is nothing to do.
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def _abort(self, raise_cancel: object) -> trio.lowlevel.Abort:
        # No longer parked, so owed no wake; but still registered, as on the
        # other frameworks: the Cancelled may be run()'s own timeout, after
        # which the wait looks once more, and a clear_session until then must
        # reach it. Whatever the Cancelled was, run() unregisters on its way out.
        self._task = None
        self._lot._unpark(self)
        return trio.lowlevel.Abort.SUCCEEDED

    async def run(self, step: Step[T], timeout: float | None) -> T:
        await trio.lowlevel.checkpoint_if_cancelled()
        if timeout == 0:
            result = step(None)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return result  # type: ignore[return-value]
        cancel_timer = _start_timer(self._lot, self, timeout)
        try:
            if timeout is None or cancel_timer is not None:
                result, parked = await self._park_until_result(step)
            else:
                # trio keeps this timeout, on its own clock (so MockClock
                # applies). A cancel scope is not free: only when needed.
                with trio.move_on_after(timeout) as scope:
                    result, parked = await self._park_until_result(step)
                if scope.cancelled_caught:  # delivered where the task parked
                    self._lot._interrupt(self, Interrupt.TIMEOUT)
                    result, parked = step(self), True  # timed out: what is there, no parking
        except BaseException:  # Cancelled, or the predicate raised: leave no waiter behind.
            # Raised between the park and the suspension (a signal handler
            # that raises), a wake already queued must not find the task.
            self._task = None
            self._lot._leave(self)
            raise
        finally:
            if cancel_timer is not None:
                cancel_timer()
        if not parked:
            # trio's rule: every async call is a checkpoint. This one must not
            # raise Cancelled, since the step may already have taken entries.
            await trio.lowlevel.cancel_shielded_checkpoint()
        return result  # type: ignore[return-value]

    async def _park_until_result(self, step: Step[T]) -> tuple[T | Parked, bool]:
        parked = False
        while (result := step(self)) is PARKED:
            parked = True
            self._task = self._owner
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        return result, parked


class AsyncioWaiter(Waiter):
    """An asyncio task: parks on a future, resolved from its own loop only."""

    __slots__ = ("_future", "_loop", "_lot", "_task")

    def __init__(self, session_id: str, lot: Lot) -> None:
        super().__init__(session_id)
        self._lot = lot
        self._loop = asyncio.get_running_loop()
        # Pinned by the waiter, so by the registry while registered: once its
        # future is resolved nothing else holds the task but the loop's ready
        # queue, which a loop.close() drops; its coroutine must not be
        # finalized (and call Inbox._leave) while still registered.
        self._task = asyncio.current_task()
        # The future the task awaits while parked. A wake resolves it; `arm`
        # replaces a resolved one as the waiter parks again, under the lock,
        # so a wake made after that park always finds the future the task is
        # about to await. (Made there rather than after each wake, since most
        # waits never park twice: one future per park, not per wake.)
        self._future: asyncio.Future[None] = self._loop.create_future()

    def arm(self) -> None:
        if self._future.done():
            self._future = self._loop.create_future()

    def wake(self) -> None:
        future = self._future
        # Directly only from a task of our own loop (see the theory above).
        if _running_loop() is self._loop and asyncio.current_task(self._loop) is not None:
            _resolve(future)
            return
        try:
            self._loop.call_soon_threadsafe(_resolve, future)
        except RuntimeError:
            # The loop is closed (a hand-run loop, closed with the task still
            # parked): nobody will look again. The entry stays queued; the
            # dead wait must not stay registered, pinning task and loop.
            self._lot._leave(self)

    def abandoned(self) -> bool:
        return self._loop.is_closed()

    async def run(self, step: Step[T], timeout: float | None) -> T:
        if timeout == 0:
            return step(None)  # type: ignore[return-value]
        cancel_timer = _start_timer(self._lot, self, timeout)
        handle = (
            self._loop.call_later(timeout, self._lot._interrupt, self, Interrupt.TIMEOUT)
            if timeout is not None and cancel_timer is None
            else None
        )
        try:
            while (result := step(self)) is PARKED:
                await self._future
            return result
        except BaseException:  # CancelledError, or the predicate raised: leave no waiter behind.
            self._lot._leave(self)
            raise
        finally:
            if cancel_timer is not None:
                cancel_timer()
            if handle is not None:
                handle.cancel()


def _current_task(token: trio.lowlevel.TrioToken) -> trio.lowlevel.Task | None:
    """The running task, if this is a task of the trio run that *token* belongs to."""
    try:
        task = trio.lowlevel.current_task()
    except RuntimeError:  # the scheduler itself, a signal handler, no run at all
        return None
    return task if trio.lowlevel.current_trio_token() is token else None


def _resolve(future: asyncio.Future[None]) -> None:
    # A cancelled task's future is already done: nothing to do.
    if not future.done():
        future.set_result(None)
