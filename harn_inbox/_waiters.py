"""The waiters: how a blocked thread, a trio task and an asyncio task sleep, wake and time out.

Each kind drives the same steps (`harn_inbox._lot.wait_steps`: look, enter,
arm, look, sleep, leave) and differs only in three things: how it sleeps, how
it is woken, and which timer keeps a timeout the inbox's clock declined.

A wake never touches a loop from a foreign thread, and never leaves a loop
asleep: a trio task is rescheduled, and an asyncio future resolved, directly
only from inside another task of the waiter's own run or loop; from anywhere
else it goes through the thread-safe entry (``TrioToken.run_sync_soon``,
``loop.call_soon_threadsafe``), which also wakes the loop's I/O wait. The
loop's own thread counts as "anywhere else" outside its tasks: a finalizer or
a plain ``signal.signal`` handler runs there while the loop is blocked in its
selector, or about to block with a timeout computed before the wake, and
asyncio in particular learns of a direct ``call_soon`` only on its next turn.
Inside a task the loop is between two I/O waits and looks at its ready queue
before the next; so it is inside a callback of ours that an asyncio loop runs
there and that says so (`in_loop_callback`: the Redis store's listener reads
its socket in one). (The one exception, an eager asyncio task (3.12+) created
from such a place, runs its first step right there.) A loop that has already
finished is ignored: the entry stays queued for whoever drains next, and the
dead wait leaves the lot.

A handler that raises, KeyboardInterrupt among them, can cut an inbox call
short between a notify's unpark and its wake: that wake is lost, as any code
not written for asynchronous exceptions can be.
"""

from __future__ import annotations

import asyncio
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ._lot import Interrupt, Look, Pause, wait_steps
from ._offloop import OffLoopCall, wait_in_thread
from ._offloop import off_loop as run_off_loop

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

    from ._clock import Clock
    from ._lot import ParkingLot

T = TypeVar("T")


class _LoopCallback(threading.local):
    #: The asyncio loop whose callback this thread runs now, if the callback said so.
    loop: asyncio.AbstractEventLoop | None = None


#: Set by a callback of ours for as long as its loop runs it (see the module docstring):
#: ``in_loop_callback.loop = loop``, then ``try: ... finally: in_loop_callback.loop = None``.
in_loop_callback = _LoopCallback()


class Waiter:
    """One wait call: what the lot knows of it, and how to wake it."""

    __slots__ = (
        "cleared",
        "framework_timeout",
        "interrupted",
        "loop_key",
        "parked",
        "registered",
        "session_ids",
    )

    def __init__(self, session_ids: tuple[str, ...], loop_key: object = None) -> None:
        #: Waiters sharing a key share one event loop: `wake_group` wakes them all at once.
        self.loop_key = loop_key
        #: The sessions it waits on (distinct): one, or several for ``wait_any``.
        self.session_ids = session_ids
        # The next four are written under the lot's lock only.
        #: Those of several sessions that were cleared during the wait (made on demand).
        self.cleared: set[str] | None = None
        self.interrupted: Interrupt | None = None
        self.registered = False
        self.parked = False
        #: The timeout the clock declined to keep, for the driver's own timer.
        self.framework_timeout: float | None = None

    def arm(self) -> None:
        """Get ready for the wake a park is owed (under the lot's lock, in the waiter's thread)."""

    def wake(self) -> None:
        """Make the waiter look again. Any thread; never blocks or raises."""
        raise NotImplementedError

    def wake_group(self, group: Sequence[Any]) -> None:
        """Wake *group*, waiters of this one's `loop_key` (this one among them), in one call."""
        for waiter in group:
            waiter.wake()

    def abandoned(self) -> bool:
        """Whether nobody can ever run this wait again (its loop is closed)."""
        return False


class ThreadWaiter(Waiter):
    """A thread blocked in ``wait_sync``: sleeps on a lock of its own that `wake` releases."""

    __slots__ = ("_lock", "_lot")

    def __init__(self, session_ids: tuple[str, ...], lot: ParkingLot) -> None:
        super().__init__(session_ids)
        self._lot = lot
        self._lock = threading.Lock()
        self._lock.acquire()

    def wake(self) -> None:
        # One wake per arm, and an arm only after the previous wake was
        # consumed (or the wait ended): never released twice before an acquire.
        self._lock.release()

    def run(
        self,
        look: Callable[[], Any],
        timeout: float | None,
        clock: Clock,
        look_here: Callable[[], Any] | None = None,
        give_back: Callable[[Any], object] | None = None,
    ) -> Any:
        steps = wait_steps(self._lot, self, look, timeout, clock, look_here)
        try:
            pause = next(steps)
            deadline = None
            if self.framework_timeout is not None:
                deadline = time.monotonic() + self.framework_timeout
            while True:
                found = None
                if pause is Pause.SLEEP:
                    if deadline is None:
                        self._lock.acquire()
                    elif not self._lock.acquire(
                        timeout=min(max(deadline - time.monotonic(), 0.0), threading.TIMEOUT_MAX)
                    ):
                        self._lot.interrupt(self, Interrupt.TIMEOUT)
                elif pause is Pause.LOOK:
                    found = self._look(look, give_back, deadline)
                pause = steps.send(found)
        except StopIteration as stop:
            return stop.value
        finally:
            _end(self._lot, self, steps)  # KeyboardInterrupt in acquire(): leave on the way out

    def _look(
        self,
        look: Callable[[], Any],
        give_back: Callable[[Any], object] | None,
        deadline: float | None,
    ) -> Any:
        # In a worker thread, so that a stalled server cannot hold the wait past its end.
        def unwanted() -> bool:
            if deadline is not None and time.monotonic() >= deadline:
                self._lot.interrupt(self, Interrupt.TIMEOUT)
            return _unwanted(self, self._lot)

        answered, found = wait_in_thread(OffLoopCall(look, give_back), unwanted)
        return found if answered else Look.NOTHING


class TrioWaiter(Waiter):
    """A trio task: sleeps in ``wait_task_rescheduled``, woken inside its own run only."""

    __slots__ = ("_at", "_lot", "_owner", "_task", "_thread", "_token", "_woken")

    def __init__(self, session_ids: tuple[str, ...], lot: ParkingLot) -> None:
        token = trio.lowlevel.current_trio_token()
        super().__init__(session_ids, token)
        self._lot = lot
        self._token = token
        self._thread = threading.get_ident()
        #: The task that waits (wait calls run in the task that awaits them).
        self._owner = trio.lowlevel.current_task()
        # The two below are touched only in the trio thread.
        #: `_owner` while it sleeps, else None.
        self._task: trio.lowlevel.Task | None = None
        #: A wake that came while the task was not asleep: its next sleep returns at once.
        self._woken = False
        #: Where `_drive` is: the pause it acts on (so a timeout knows what it cut short).
        self._at: Pause | None = None

    def wake(self) -> None:
        if self._in_own_run():
            self._resume()
            return
        try:
            self._token.run_sync_soon(self._resume)
        except trio.RunFinishedError:
            # The run is over and its task with it: nobody will look again.
            # The entry stays queued; the dead wait must not stay registered.
            self._lot.leave(self)

    def wake_group(self, group: Sequence[Any]) -> None:
        if self._in_own_run():
            _resume_all(group)
            return
        try:
            self._token.run_sync_soon(_resume_all, group)
        except trio.RunFinishedError:
            for waiter in group:
                self._lot.leave(waiter)

    def _in_own_run(self) -> bool:
        # Directly only from another task of our own run (see the module
        # docstring). Another thread is never inside our run: that test
        # first, as it is cheap, whereas asking trio raises and swallows an
        # error there.
        if threading.get_ident() != self._thread:
            return False
        current = _current_task(self._token)
        return current is not None and current is not self._owner

    def _resume(self) -> None:
        # In the trio thread, from another task or from the scheduler.
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)
        else:
            self._woken = True

    def _abort(self, raise_cancel: object) -> trio.lowlevel.Abort:
        # No longer asleep, so owed no wake; still registered, as on the other
        # frameworks: the Cancelled may be run()'s own timeout, after which the
        # wait looks once more, and a clear_session until then must reach it.
        self._task = None
        self._lot.unpark(self)
        return trio.lowlevel.Abort.SUCCEEDED

    async def run(
        self,
        look: Callable[[], Any],
        timeout: float | None,
        clock: Clock,
        look_here: Callable[[], Any] | None = None,
        give_back: Callable[[Any], object] | None = None,
    ) -> Any:
        await trio.lowlevel.checkpoint_if_cancelled()
        steps = wait_steps(self._lot, self, look, timeout, clock, look_here)
        self._at = None
        try:
            try:
                pause = next(steps)
            except StopIteration as stop:
                # trio's rule: every async call is a checkpoint. This one must
                # not raise Cancelled: the look may have taken entries.
                await trio.lowlevel.cancel_shielded_checkpoint()
                return stop.value
            if self.framework_timeout is None:
                return await self._drive(steps, pause, look, give_back)
            # trio keeps this timeout, on its own clock (so MockClock applies).
            with trio.move_on_after(self.framework_timeout):
                return await self._drive(steps, pause, look, give_back)
            # Timed out where it slept (one last look, and no more sleeping) or
            # where it looked (that look was abandoned: it took nothing).
            self._lot.interrupt(self, Interrupt.TIMEOUT)
            try:
                pause = steps.send(Look.NOTHING if self._at is Pause.LOOK else None)
                while pause is Pause.LOOK:
                    pause = steps.send(await _look_off_loop(self, self._lot, look, give_back))
            except StopIteration as stop:
                return stop.value
            raise AssertionError("a wait slept again after its timeout")  # pragma: no cover
        finally:
            # Raised between the arm and the sleep (a signal handler that
            # raises), a wake already queued must not find the task.
            self._task = None
            _end(self._lot, self, steps)

    async def _drive(
        self,
        steps: Generator[Pause, Any, Any],
        pause: Pause,
        look: Callable[[], Any],
        give_back: Callable[[Any], object] | None,
    ) -> Any:
        while True:
            self._at = pause
            found = None
            if pause is Pause.SLEEP:
                if self._woken:
                    self._woken = False
                else:
                    self._task = self._owner
                    await trio.lowlevel.wait_task_rescheduled(self._abort)
            elif pause is Pause.LOOK:
                found = await _look_off_loop(self, self._lot, look, give_back)
            else:
                await trio.lowlevel.checkpoint()
            try:
                pause = steps.send(found)
            except StopIteration as stop:
                return stop.value


class AsyncioWaiter(Waiter):
    """An asyncio task: sleeps on a future, resolved from its own loop only."""

    __slots__ = ("_future", "_loop", "_lot", "_task", "_thread")

    def __init__(self, session_ids: tuple[str, ...], lot: ParkingLot) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(session_ids, loop)
        self._lot = lot
        self._loop = loop
        self._thread = threading.get_ident()
        # Pinned by the waiter, so by the lot while registered: once its future
        # is resolved nothing else holds the task but the loop's ready queue,
        # which a loop.close() drops; its coroutine must not be finalized (and
        # leave the lot) while still registered.
        self._task = asyncio.current_task()
        # The future the task awaits while asleep. A wake resolves it; `arm`
        # replaces a resolved one as the waiter parks again, under the lot's
        # lock, so a wake owed for that park finds the future the task is
        # about to await. (One future per park, not per wake.)
        self._future: asyncio.Future[None] = self._loop.create_future()

    def arm(self) -> None:
        if self._future.done():
            self._future = self._loop.create_future()

    def _in_own_loop(self) -> bool:
        # Directly only from a task of our own loop, or a callback of ours that
        # it runs (see the module docstring): our loop's thread (a cheap test,
        # and no exception raised elsewhere), inside one of those.
        return threading.get_ident() == self._thread and (
            in_loop_callback.loop is self._loop or asyncio.current_task(self._loop) is not None
        )

    def wake(self) -> None:
        future = self._future
        if self._in_own_loop():
            _resolve(future)
            return
        try:
            self._loop.call_soon_threadsafe(_resolve, future)
        except RuntimeError:
            # The loop is closed (a hand-run loop, closed with the task still
            # parked): nobody will look again. The entry stays queued; the
            # dead wait must not stay registered, pinning task and loop.
            self._lot.leave(self)

    def wake_group(self, group: Sequence[Any]) -> None:
        futures = [waiter._future for waiter in group]
        if self._in_own_loop():
            _resolve_all(futures)
            return
        try:
            self._loop.call_soon_threadsafe(_resolve_all, futures)
        except RuntimeError:
            for waiter in group:
                self._lot.leave(waiter)

    def abandoned(self) -> bool:
        return self._loop.is_closed()

    async def run(
        self,
        look: Callable[[], Any],
        timeout: float | None,
        clock: Clock,
        look_here: Callable[[], Any] | None = None,
        give_back: Callable[[Any], object] | None = None,
    ) -> Any:
        steps = wait_steps(self._lot, self, look, timeout, clock, look_here)
        handle = None
        try:
            pause = next(steps)
            if self.framework_timeout is not None:
                handle = self._loop.call_later(
                    self.framework_timeout, self._lot.interrupt, self, Interrupt.TIMEOUT
                )
            while True:
                found = None
                if pause is Pause.SLEEP:
                    await self._future
                elif pause is Pause.LOOK:
                    found = await _look_off_loop(self, self._lot, look, give_back)
                else:
                    await asyncio.sleep(0)
                pause = steps.send(found)
        except StopIteration as stop:
            return stop.value
        finally:
            if handle is not None:
                handle.cancel()
            _end(self._lot, self, steps)  # CancelledError, or the look raised: leave the lot


async def _look_off_loop(
    waiter: Waiter,
    lot: ParkingLot,
    look: Callable[[], Any],
    give_back: Callable[[Any], object] | None,
) -> Any:
    """A trio or asyncio wait's look off its loop; if cancelled or unwanted, it gives back."""
    answered, found = await run_off_loop(look, give_back, partial(_unwanted, waiter, lot))
    return found if answered else Look.NOTHING


def _unwanted(waiter: Waiter, lot: ParkingLot) -> bool:
    """Whether a wait no longer wants the look it runs: its timeout passed, the inbox closed."""
    return waiter.interrupted is not None or lot.closed


def _end(lot: ParkingLot, waiter: Waiter, steps: Generator[Pause, Any, Any]) -> None:
    """Close a wait's *steps* on its way out: that leaves the lot and forgets the timer."""
    steps.close()
    # When a profile or trace function raises as the generator pauses, CPython
    # 3.10, 3.11 and 3.13 discard it without running its ``finally`` (3.12 runs
    # it): the lot must still be left. (Idempotent; the timer then fires into
    # an unregistered waiter, which is harmless.)
    lot.leave(waiter)


def _current_task(token: trio.lowlevel.TrioToken) -> trio.lowlevel.Task | None:
    """The running task, if this is a task of the trio run that *token* belongs to."""
    try:
        task = trio.lowlevel.current_task()
    except RuntimeError:  # the scheduler itself, a signal handler, no run at all
        return None
    return task if trio.lowlevel.current_trio_token() is token else None


def _resume_all(group: Sequence[TrioWaiter]) -> None:
    for waiter in group:
        waiter._resume()


def _resolve(future: asyncio.Future[None]) -> None:
    # A cancelled task's future is already done: nothing to do.
    if not future.done():
        future.set_result(None)


def _resolve_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        _resolve(future)
