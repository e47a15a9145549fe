"""Faults around the inbox: whatever goes wrong outside it, it keeps working and loses nothing.

Event loops that stop, close or finish while threads keep pushing or waits
are parked in them, producer threads that die, clocks that cannot forget a
timer, and finalizers that call the inbox from inside one of its critical
sections. (Predicates that raise: test_inbox.py and test_wait_for.py; waits
cancelled: test_cancellation.py; clocks that misbehave: test_clock.py.)
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import weakref
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
import trio
from _support import (
    HANG_GUARD_SECONDS,
    ThreadCall,
    contents,
    everything,
    join_all,
    parked_wait_sync,
    push_many,
    run_bounded,
    spin_until,
)

from harn_inbox import Inbox, InboxEntry, ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import FrameType

    from conftest import Backend


# -- Loops that stop, close or finish under a parked wait ------------------------------------------


def _never(entry: InboxEntry) -> bool:
    return False


def test_asyncio_loop_closed_under_a_parked_waiter_while_a_thread_keeps_pushing(
    inbox: Inbox,
) -> None:
    before_close, after_close = 20_000, 2_000
    loop = asyncio.new_event_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: reported.append(context))
    loop_outcome: list[BaseException] = []
    loop_closed = threading.Event()
    # A waiter that matches nothing: every push wakes it and it parks again.
    task = loop.create_task(inbox.wait_for("s", _never))

    def run_loop() -> None:
        try:
            loop.run_until_complete(task)
        except RuntimeError as error:  # "Event loop stopped before Future completed."
            loop_outcome.append(error)
        finally:
            loop.close()
            loop_closed.set()

    def produce() -> None:
        for n in range(before_close):
            inbox.push("s", "k", f"#{n}", "thread")
        loop_closed.wait(HANG_GUARD_SECONDS)
        for n in range(before_close, before_close + after_close):
            inbox.push("s", "k", f"#{n}", "thread")

    loop_thread = ThreadCall(run_loop)
    spin_until(lambda: inbox.waiter_count("s") == 1, "the asyncio waiter parked")
    producer = ThreadCall(produce)
    spin_until(lambda: inbox.pending_count("s") >= before_close // 4, "pushes under way")
    loop.call_soon_threadsafe(loop.stop)  # stops it mid-stream; the loop thread then closes it
    join_all([loop_thread, producer])  # raises what the producer raised, if anything

    assert len(loop_outcome) == 1
    assert not task.done()
    queued = inbox.drain("s")
    assert [entry.content for entry in queued] == [
        f"#{n}" for n in range(before_close + after_close)
    ]
    assert [entry.sequence for entry in queued] == list(range(1, before_close + after_close + 1))
    assert inbox.waiter_count("s") <= 1, "one wait, at most one registration"
    assert all("destroyed but it is pending" in context["message"] for context in reported)


def abandon_a_wait(inbox: Inbox, wake_queued: bool = False) -> weakref.ref[asyncio.Task[Any]]:
    """A ``wait_for`` on "s" parked in a hand-run asyncio loop, closed with the wait still pending.

    (asyncio.run would have cancelled it; a hand-run loop need not, as a runtime
    tearing down a worker loop might.) With *wake_queued*, a push ("#1") wakes
    it first while the loop is stopped: the wake waits in the loop's ready
    queue, and is dropped with it at the close, so the wait can never run again.
    Returns a weak reference to its task: nothing but the inbox may keep it.
    """
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda loop, context: None)  # "Task was destroyed ..." expected
    task = loop.create_task(inbox.wait_for("s", _never))

    async def until_parked() -> None:
        for _ in range(1_000):
            if inbox.waiter_count("s"):
                return
            await asyncio.sleep(0)
        raise AssertionError("the wait never parked")

    loop.run_until_complete(until_parked())
    assert inbox.waiter_count("s") == 1
    if wake_queued:
        inbox.push("s", "k", "#1", "t")
    loop.close()
    assert not task.done()
    return weakref.ref(task)


def assert_forgotten(inbox: Inbox, task: weakref.ref[asyncio.Task[Any]]) -> None:
    """Neither counted nor pinned: the task (and so its loop) can be collected."""
    gc.collect()
    assert inbox.waiter_count("s") == 0, "the dead wait is still registered"
    assert task() is None, "the inbox still pins the abandoned task (and its loop)"


@pytest.mark.parametrize("loop_thread", ["this thread", "another thread"])
def test_a_wait_abandoned_in_a_closed_asyncio_loop_is_forgotten_by_the_next_push(
    inbox: Inbox, loop_thread: str
) -> None:
    """A wait whose loop was closed under it can never end: it must not stay registered.

    The next push finds the loop closed when it tries to wake the waiter; it
    stores its entries all the same, and from then on the dead wait is
    neither counted by waiter_count nor pins its task, coroutine and loop.
    """
    if loop_thread == "this thread":
        task = abandon_a_wait(inbox)
    else:
        task = ThreadCall(abandon_a_wait, inbox).outcome()
    entries = push_many(inbox, "s", 3)  # no exception: the dead loop is ignored
    assert inbox.waiter_count("s") == 0
    assert inbox.drain("s") == entries
    assert_forgotten(inbox, task)


@pytest.mark.parametrize("forget", ["waiter_count", "statistics", "clear_session", "close"])
def test_a_wake_queued_to_a_loop_closed_before_running_it_does_not_pin_the_wait(
    forget: str,
) -> None:
    # Whatever next looks at the session's waits finds the wait in a closed
    # loop, and forgets it; pushes meanwhile neither wake nor keep it.
    inbox = Inbox()
    task = abandon_a_wait(inbox, wake_queued=True)
    inbox.push("s", "k", "#2", "t")
    assert contents(inbox.snapshot("s")) == ["#1", "#2"]
    if forget == "waiter_count":
        assert inbox.waiter_count("s") == 0
    elif forget == "statistics":
        assert inbox.statistics("s").waiters == 0
    elif forget == "clear_session":
        assert inbox.clear_session("s") == 2
    else:
        inbox.close()
        assert contents(inbox.drain("s")) == ["#1", "#2"]
    assert_forgotten(inbox, task)
    if forget == "clear_session":
        assert inbox.sessions() == []


def test_trio_run_finishing_while_a_thread_keeps_pushing(inbox: Inbox) -> None:
    total = 20_000
    stop = threading.Event()
    run_finished = threading.Event()
    waited: list[Any] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(inbox.wait_for, "s", _never)
            await trio.to_thread.run_sync(stop.wait, HANG_GUARD_SECONDS)
            nursery.cancel_scope.cancel()  # ends the waiter, then the run
        waited.append(inbox.waiter_count("s"))

    def run_trio() -> None:
        try:
            trio.run(main)
        finally:
            run_finished.set()

    def produce() -> None:
        for n in range(total):
            inbox.push("s", "k", f"#{n}", "thread")
            if n == total // 2:
                stop.set()
        run_finished.wait(HANG_GUARD_SECONDS)
        inbox.push("s", "k", "after the run", "thread")

    trio_thread = ThreadCall(run_trio)
    spin_until(lambda: inbox.waiter_count("s") == 1, "the trio waiter parked")
    join_all([trio_thread, ThreadCall(produce)])  # raises what the producer raised, if anything

    assert waited == [0]
    queued = inbox.drain("s")
    assert [entry.content for entry in queued] == [
        *(f"#{n}" for n in range(total)),
        "after the run",
    ]
    assert [entry.sequence for entry in queued] == list(range(1, total + 2))
    assert inbox.waiter_count("s") == 0


# -- A producer thread that dies -------------------------------------------------------------------


class ProducerDied(Exception):
    pass


@pytest.fixture
def thread_exceptions() -> Iterator[list[threading.ExceptHookArgs]]:
    """Capture exceptions that escape threads (instead of pytest reporting them as warnings)."""
    captured: list[threading.ExceptHookArgs] = []
    previous = threading.excepthook
    threading.excepthook = captured.append
    try:
        yield captured
    finally:
        threading.excepthook = previous


def test_a_producer_thread_dying_mid_run_leaves_its_pushes_intact_and_others_unaffected(
    inbox: Inbox, thread_exceptions: list[threading.ExceptHookArgs]
) -> None:
    producers, pushes, dies_after = 8, 3_000, 1_234
    start = threading.Barrier(producers)
    pushed: list[list[InboxEntry]] = [[] for _ in range(producers)]

    def produce(index: int) -> None:
        start.wait()
        for n in range(pushes):
            if index == 3 and n == dies_after:
                raise ProducerDied(f"producer {index} died")
            session_id = "shared" if n % 2 == 0 else f"own-{index}"
            pushed[index].append(inbox.push(session_id, "k", f"{index}:{n}", f"p{index}"))

    threads = [threading.Thread(target=produce, args=(i,), daemon=True) for i in range(producers)]
    for thread in threads:
        thread.start()
    join_all(threads)

    [died] = thread_exceptions
    assert isinstance(died.exc_value, ProducerDied)
    assert died.thread is threads[3]
    assert [len(entries) for entries in pushed] == [pushes] * 3 + [dies_after] + [pushes] * 4
    shared = inbox.drain("shared")
    assert [entry.sequence for entry in shared] == list(range(1, len(shared) + 1))
    for index in range(producers):
        mine = [entry for entry in shared if entry.source == f"p{index}"]
        own = inbox.drain(f"own-{index}")
        assert mine == [entry for entry in pushed[index] if entry.session_id == "shared"]
        assert own == [entry for entry in pushed[index] if entry.session_id != "shared"]
        assert [entry.sequence for entry in own] == list(range(1, len(own) + 1))
    assert inbox.sessions() == []


# -- Clocks that cannot forget a timer ------------------------------------------------------------


class UnforgettingClock:
    """A virtual clock that keeps timers, and whose function to forget one raises."""

    def __init__(self) -> None:
        self.clock = ManualClock(1_000_000)
        self.forgets = 0

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Callable[[], None]:
        forget = self.clock.call_later(seconds, callback)

        def broken_forget() -> None:
            self.forgets += 1
            forget()
            raise OSError("the timer wheel is gone")

        return broken_forget


def _forget_failures(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        record.name == "harn_inbox" and "could not forget a timer" in record.getMessage()
        for record in caplog.records
    )


def test_a_clock_failing_to_forget_a_timer_does_not_lose_what_a_wait_took(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    # The timer is forgotten as the wait ends, after its look has taken the
    # entries: an error there must not replace the result (it is logged). A
    # wait that takes something at once never starts a timer.
    clock = UnforgettingClock()
    inbox = Inbox(clock=clock)  # type: ignore[arg-type]
    first = inbox.push("s", "k", "#0", "src")

    async def main() -> tuple[list[InboxEntry], list[InboxEntry], InboxEntry]:
        at_once = await inbox.wait_for("s", lambda entry: True, timeout=5)
        async with backend.parked(inbox, inbox.wait_for, "s", everything, 5) as waiter:
            second = inbox.push("s", "k", "#1", "src")
        return at_once, waiter.result, second

    at_once, after_a_wake, second = backend.run(main)
    assert (at_once, after_a_wake) == ([first], [second])
    assert clock.forgets == _forget_failures(caplog) == 1
    assert inbox.waiter_count("s") == 0


def test_a_clock_failing_to_forget_a_timer_does_not_fail_a_thread_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = UnforgettingClock()
    inbox = Inbox(clock=clock)  # type: ignore[arg-type]
    inbox.push("s", "k", "#0", "src")
    assert inbox.wait_sync("s", timeout=5) is True
    assert clock.forgets == 0  # a wait that finds something at once starts no timer
    inbox.drain("s")
    wait = parked_wait_sync(inbox, "s", 5)
    inbox.push("s", "k", "#1", "src")
    assert wait.outcome() is True
    assert clock.forgets == _forget_failures(caplog) == 1
    assert inbox.waiter_count("s") == 0


# -- Finalizers that call the inbox from inside it -------------------------------------------------
# A finalizer (__del__, a coroutine closed by the garbage collector) runs in
# the middle of whatever its thread was doing, possibly one of the inbox's
# critical sections. Calling the inbox from there must raise a clear
# RuntimeError, never deadlock (the thread would wait for itself). Each test
# runs its inbox calls through run_bounded, so a deadlock fails it.

REENTERED = "entered again by the thread already inside it"

#: Where a finalizer is made to run, as (module file, function) called with that lock held.
CRITICAL_SECTIONS = {
    "the store's lock": ("_session.py", "push"),  # SessionState.push, under the store's lock
    "the lot's lock": ("_lot.py", "_unpark_all"),  # ParkingLot.notify's wake-up list
}


@contextmanager
def run_once_inside(
    inbox: Inbox, where: str, action: Callable[[], object]
) -> Iterator[list[tuple[bool, bool]]]:
    """Run *action* once, from a profile hook, inside the critical section *where* names.

    White-box: the hook fires as a function the inbox calls with that lock
    held is entered. It records which locks were held then, as (store's,
    lot's), so a test can tell it reached the moment.
    """
    filename, function = CRITICAL_SECTIONS[where]
    held: list[tuple[bool, bool]] = []

    def hook(frame: FrameType, event: str, arg: object) -> None:
        code = frame.f_code
        if event == "call" and code.co_name == function and code.co_filename.endswith(filename):
            sys.setprofile(None)
            held.append((inbox._store._mutex.held(), inbox._lot.held()))  # type: ignore[attr-defined]
            action()

    sys.setprofile(hook)
    try:
        yield held
    finally:
        sys.setprofile(None)


class CallsWhenCollected:
    """An object whose ``__del__`` makes a call, recording what the call raised."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.call = call
        self.raised: list[BaseException] = []

    def __del__(self) -> None:
        try:
            self.call()
        except Exception as error:  # an error escaping __del__ would only be printed
            self.raised.append(error)


def push_with_a_finalizer_inside(
    inbox: Inbox, where: str, finalize: Callable[[], object]
) -> list[BaseException]:
    """Push to "s" while a finalizer calling *finalize* runs inside *where*; what it raised.

    Run in the calling thread (the profile hook is per thread): wrap it in `run_bounded`.
    """
    finalizer = CallsWhenCollected(finalize)
    raised = finalizer.raised
    holder = [finalizer]
    del finalizer
    with run_once_inside(inbox, where, holder.clear) as held:  # the last reference goes
        inbox.push("s", "k", "c", "src")
    assert held == [(where == "the store's lock", where == "the lot's lock")], "never inside"
    return raised


#: What a finalizer does to session "other" (whose waiter is parked): each needs
#: the store's lock to make its change and the lot's to wake or end the waiter.
FINALIZER_CALLS: dict[str, Callable[[Inbox, InboxEntry], object]] = {
    "push": lambda inbox, drained: inbox.push("other", "k", "from a finalizer", "__del__"),
    "requeue_front": lambda inbox, drained: inbox.requeue_front(drained),
    "clear_session": lambda inbox, drained: inbox.clear_session("other"),
    "close": lambda inbox, drained: inbox.close(),
}


@pytest.mark.parametrize("call", list(FINALIZER_CALLS))
@pytest.mark.parametrize("where", list(CRITICAL_SECTIONS))
def test_a_finalizer_calling_the_inbox_from_inside_it_is_refused_instead_of_deadlocking(
    inbox: Inbox, where: str, call: str
) -> None:
    # Refused with RuntimeError, having changed nothing: no entry stored, no
    # session cleared, the inbox still open, the waiter still parked.
    drained = inbox.push("other", "k", "drained", "src")
    inbox.drain("other")
    waits = {sid: parked_wait_sync(inbox, sid) for sid in ("s", "other")}
    finalize = FINALIZER_CALLS[call]
    [error] = run_bounded(
        push_with_a_finalizer_inside, inbox, where, lambda: finalize(inbox, drained)
    )
    assert isinstance(error, RuntimeError)
    assert REENTERED in str(error)
    assert ("store" if where == "the store's lock" else "parking lot") in str(error)
    assert inbox.snapshot("other") == [], "refused, yet stored"
    assert inbox.statistics("other").last_sequence == 1, "refused, yet cleared"
    assert not inbox.closed
    assert contents(inbox.snapshot("s")) == ["c"]  # the interrupted push is whole
    assert waits["s"].outcome() is True
    assert inbox.waiter_count("other") == 1
    run_bounded(inbox.push, "other", "k", "c", "src")  # the inbox still works
    assert waits["other"].outcome() is True


class PushingClock:
    """A ManualClock that, once armed, pushes to "other" the next time it is read."""

    def __init__(self) -> None:
        self.inner = ManualClock()
        self.inbox: Inbox | None = None
        self.armed = False
        self.raised: list[BaseException] = []

    def now_ms(self) -> int:
        if self.armed and self.inbox is not None:
            self.armed = False
            try:
                self.inbox.push("other", "k", "from the clock", "clock")
            except RuntimeError as error:
                self.raised.append(error)
        return self.inner.now_ms()

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Any:
        return self.inner.call_later(seconds, callback)


def test_a_clock_pushing_when_read_under_the_stores_lock_raises_instead_of_deadlocking() -> None:
    # While a session has entries that may expire, the store reads the clock
    # under its lock to purge them: a clock that pushes there (a stand-in for
    # a finalizer that runs in the middle of the read) re-enters the store.
    clock = PushingClock()
    inbox = Inbox(clock=clock)  # type: ignore[arg-type]
    clock.inbox = inbox
    entry = inbox.push("s", "k", "c", "src", expires_in=10)
    clock.armed = True
    assert run_bounded(inbox.pending_count, "s") == 1
    [error] = clock.raised
    assert isinstance(error, RuntimeError)
    assert REENTERED in str(error)
    assert "store" in str(error)
    assert inbox.snapshot("other") == []  # refused before anything was stored
    assert inbox.snapshot("s") == [entry]
    assert run_bounded(inbox.push, "other", "k", "c", "src").sequence == 1


def test_a_waits_own_finally_pushing_as_the_collector_finalizes_it_raises_instead_of_deadlocking(
    inbox: Inbox,
) -> None:
    # asyncio only: a trio run never ends with a task still parked. A task
    # parked in a hand-run loop that is closed under it is garbage once the
    # inbox forgets the dead wait; if it sits in a reference cycle, the garbage
    # collector finalizes its coroutine whenever it next runs: here, inside
    # the store's lock. Its `finally` pushes: that must raise, not deadlock.
    finished: list[bool] = []
    raised: list[BaseException] = []

    async def worker() -> None:
        me = asyncio.current_task()  # a reference cycle: task, coroutine frame, task
        try:
            await inbox.wait("s")
        finally:
            finished.append(me is not None)
            try:
                inbox.push("log", "k", "worker ended", "worker")
            except RuntimeError as error:
                raised.append(error)

    def collect_inside_a_push() -> None:
        with run_once_inside(inbox, "the store's lock", gc.collect) as held:
            inbox.push("s", "k", "c", "src")
        assert held == [(True, False)]

    gc.disable()  # until the moment chosen: the cycle must not be collected before
    try:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda loop, context: None)  # "Task was destroyed ..."
        task = loop.create_task(worker())

        async def until_parked() -> None:
            while not inbox.waiter_count("s"):  # noqa: ASYNC110  # counted in loop turns
                await asyncio.sleep(0)

        loop.run_until_complete(until_parked())
        loop.close()
        assert inbox.waiter_count("s") == 0  # the dead wait is forgotten
        task_ref = weakref.ref(task)
        del task
        assert task_ref() is not None, "collected before the moment chosen"
        run_bounded(collect_inside_a_push)
    finally:
        gc.enable()
    assert finished == [True]
    [error] = raised
    assert isinstance(error, RuntimeError)
    assert REENTERED in str(error)
    assert task_ref() is None
    assert inbox.snapshot("log") == []
    assert contents(inbox.snapshot("s")) == ["c"]
