"""Cancelling waits (trio cancel scopes, asyncio task.cancel, outer timeouts) loses nothing.

A cancelled wait leaves no waiter registered and raises the framework's own
exception. A cancelled or timed-out ``wait_for`` or ``batches`` step has taken
nothing; one that returns entries removed exactly those. The conservation tests
cancel at every point (after k scheduler turns) while a task and a thread push,
and check that everything pushed is either still pending or was returned once.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from _support import nudge, waiting

from harn_inbox import Inbox
from harn_inbox._lot import ParkingLot

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Backend, TaskHandle

    from harn_inbox import InboxEntry, ManualClock


def even(entry: InboxEntry) -> bool:
    return int(entry.content) % 2 == 0


def assert_conserved(
    inbox: Inbox, session_id: str, pushed: list[InboxEntry], taken: list[InboxEntry]
) -> None:
    """Everything pushed is pending or was taken, exactly once; the queue kept push order."""
    pending = inbox.snapshot(session_id)
    assert len(set(taken)) == len(taken), "an entry was returned twice"
    assert not set(taken) & set(pending), "an entry was returned and is still pending"
    by_sequence = sorted(pushed, key=lambda entry: entry.sequence)
    assert sorted(taken + pending, key=lambda entry: entry.sequence) == by_sequence
    assert pending == sorted(pending, key=lambda entry: entry.sequence)


def was_cancelled(backend: Backend, handle: TaskHandle) -> bool:
    """Whether the task ended by its cancellation, in the framework's own exception.

    (An asyncio task cancelled before it first ran never enters the shim's
    runner, so its handle records nothing: it is left unfinished.)
    """
    if backend.name == "asyncio" and not handle.finished:
        return True
    return type(handle.raised) is backend.cancelled


# -- A cancelled wait leaves nothing behind -------------------------------------------------------

#: Every way of waiting, with and without a timeout on the inbox's clock.
WAITS = [("wait", None), ("wait", 5), ("wait_for", None), ("wait_for", 5), ("batches", None)]


@pytest.mark.parametrize(("way", "timeout"), WAITS)
def test_a_wait_cancelled_while_parked_raises_the_framework_cancellation_and_leaves_nothing(
    backend: Backend, inbox: Inbox, clock: ManualClock, way: str, timeout: float | None
) -> None:
    take = waiting(inbox, way, "s", timeout, predicate=even)

    async def main() -> None:
        async with backend.parked(inbox, take, session_id="s") as waiter:
            waiter.cancel()
        assert type(waiter.raised) is backend.cancelled
        assert inbox.waiter_count("s") == 0
        assert not clock._timers  # its deadline went with it
        assert "timers=0" in repr(clock)
        entry = nudge(inbox, "s", "2")  # a push finds nobody and loses nothing
        assert inbox.snapshot("s") == [entry]
        assert inbox.drain("s") == [entry]

    backend.run(main)


@pytest.mark.parametrize(("way", "timeout"), WAITS)
def test_cancelling_one_wait_leaves_the_others_parked_and_wakeable(
    backend: Backend, inbox: Inbox, way: str, timeout: float | None
) -> None:
    takes = [waiting(inbox, way, "s", timeout, predicate=even) for _ in range(3)]

    async def main() -> None:
        async with backend.task_group() as group:
            cancelled, *others = [group.start_soon(take) for take in takes]
            await backend.wait_parked(inbox, "s", 3)
            cancelled.cancel()
            await backend.turns(20)
            assert cancelled.finished
            assert inbox.waiter_count("s") == 2
            assert not any(other.finished for other in others)
            for round_ in range(2):
                nudge(inbox, "s", str(2 * round_))
                await backend.turns(20)
        assert type(cancelled.raised) is backend.cancelled
        assert all(other.finished and other.raised is None for other in others)
        assert inbox.waiter_count("s") == 0

    backend.run(main)


@pytest.mark.parametrize("way", ["wait_for", "batches"])
def test_take_cancelled_before_it_starts_takes_nothing(
    backend: Backend, inbox: Inbox, way: str
) -> None:
    async def main() -> None:
        entries = [nudge(inbox, "s", str(n)) for n in range(4)]
        async with backend.task_group() as group:
            handle = group.start_soon(waiting(inbox, way, "s", predicate=even))
            handle.cancel()
        assert was_cancelled(backend, handle)
        assert inbox.snapshot("s") == entries
        assert inbox.waiter_count("s") == 0

    backend.run(main)


@pytest.mark.parametrize("way", ["wait_for", "batches"])
def test_take_cancelled_right_after_its_wake_takes_nothing_or_returns_what_it_took(
    backend: Backend, inbox: Inbox, way: str
) -> None:
    # The push wakes it and the cancellation lands before it looks again. asyncio
    # raises CancelledError having taken nothing; trio has already rescheduled the
    # task, so it may look and return. Either way nothing is lost or duplicated,
    # whether the push came from a task or (odd rounds) from a thread.
    async def one_round(n: int) -> None:
        session_id = f"round-{n}"
        take = waiting(inbox, way, session_id, predicate=even)
        async with backend.parked(inbox, take, session_id=session_id) as waiter:
            if n % 2:
                pushed = [await backend.to_thread(nudge, inbox, session_id, "0", "thread")]
            else:
                pushed = [nudge(inbox, session_id, str(k)) for k in range(3)]
            waiter.cancel()
        if waiter.raised is None:
            taken = waiter.result
            assert taken
        else:
            assert type(waiter.raised) is backend.cancelled
            taken = []
        assert_conserved(inbox, session_id, pushed, taken)
        assert inbox.waiter_count(session_id) == 0

    async def main() -> None:
        for n in range(30):
            await one_round(n)

    backend.run(main)


# -- Cancelling at every point --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["wait_for", "batches"])
def test_cancelling_at_every_point_never_loses_an_entry(
    backend: Backend, inbox: Inbox, kind: str
) -> None:
    """Round k cancels the consumer after k turns, while a task and a thread push."""
    outcomes: set[str] = set()

    async def consume(session_id: str, taken: list[InboxEntry]) -> None:
        take = waiting(inbox, kind, session_id, predicate=even)
        while True:
            taken.extend(await take())  # recorded in the same step it returns

    async def push_from_task(session_id: str, pushed: list[InboxEntry]) -> None:
        for n in range(4):
            pushed.append(nudge(inbox, session_id, str(n)))
            await backend.checkpoint()

    def push_from_thread(session_id: str, pushed: list[InboxEntry]) -> None:
        pushed.extend(nudge(inbox, session_id, str(n), "thread") for n in range(4, 8))

    async def main() -> None:
        for k in range(40):
            session_id = f"round-{k}"
            pushed: list[InboxEntry] = []
            taken: list[InboxEntry] = []
            async with backend.task_group() as group:
                consumer = group.start_soon(consume, session_id, taken)
                group.start_soon(push_from_task, session_id, pushed)
                if k % 2:
                    group.start_soon(backend.to_thread, push_from_thread, session_id, pushed)
                await backend.turns(k)
                consumer.cancel()
            assert was_cancelled(backend, consumer)
            assert inbox.waiter_count(session_id) == 0
            assert_conserved(inbox, session_id, pushed, taken)
            outcomes.add("took some" if taken else "took none")

    backend.run(main)
    assert outcomes == {"took some", "took none"}  # the rounds did cancel at different points


@pytest.mark.parametrize("kind", ["wait_for", "batches"])
def test_outer_timeouts_never_lose_an_entry(backend: Backend, inbox: Inbox, kind: str) -> None:
    """``asyncio.wait_for(...)`` / ``trio.move_on_after`` around each step while a thread pushes."""
    take = waiting(inbox, kind, "s", predicate=even)
    total = 300

    def produce(pushed: list[InboxEntry]) -> None:
        for n in range(total):
            pushed.append(nudge(inbox, "s", str(n), "thread"))
            if n % 7 == 0:
                time.sleep(0)  # let the loop thread run: more interleavings, not a verdict

    async def take_with_outer_timeout(seconds: float) -> list[InboxEntry] | None:
        if backend.name == "trio":
            with trio.move_on_after(seconds):
                result: list[InboxEntry] = await take()
                return result
            return None
        try:
            return await asyncio.wait_for(take(), seconds)
        except asyncio.TimeoutError:
            return None

    async def main() -> None:
        pushed: list[InboxEntry] = []
        taken: list[InboxEntry] = []
        timeouts = itertools.cycle([0, 1e-6, 1e-4, 1e-3])
        timed_out = 0
        async with backend.task_group() as group:
            producer = group.start_soon(backend.to_thread, produce, pushed)
            while not producer.finished:
                batch = await take_with_outer_timeout(next(timeouts))
                if batch is None:
                    timed_out += 1
                else:
                    taken.extend(batch)
        assert timed_out > 0
        assert inbox.waiter_count("s") == 0
        assert_conserved(inbox, "s", pushed, taken)

    backend.run(main)


def test_a_trio_deadline_cancelling_a_wait_leaves_no_waiter(inbox: Inbox) -> None:
    async def main() -> None:
        with trio.move_on_after(5) as scope:
            await inbox.wait_for("s", lambda entry: True)
        assert scope.cancelled_caught
        assert inbox.waiter_count("s") == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    entry = inbox.push("s", "k", "c", "test")
    assert inbox.drain("s") == [entry]


def test_timeouts_from_a_clock_thread_racing_pushes_from_another_never_lose_an_entry(
    backend: Backend,
    inbox: Inbox,
    clock: ManualClock,
    run_in_thread: Callable[..., threading.Thread],
) -> None:
    # One thread pushes, another keeps advancing the ManualClock: every
    # wait_for(timeout=1) ends by a match or by its deadline, in any order.
    # Halfway the pusher waits for one wait to time out, so both kinds occur.
    total = 300
    pushed: list[InboxEntry] = []
    timed_out = threading.Event()
    pushing_done, consumer_done = threading.Event(), threading.Event()

    def produce() -> None:
        for n in range(total):
            pushed.append(nudge(inbox, "s", str(n), "thread"))
            if n == total // 2:
                assert timed_out.wait(timeout=30)
            elif n % 5 == 0:
                time.sleep(0)  # let the loop thread run: more interleavings, not a verdict
        pushing_done.set()

    def tick() -> None:
        while not consumer_done.is_set():
            clock.advance(1)
            time.sleep(0)

    async def main() -> None:
        taken: list[InboxEntry] = []
        run_in_thread(produce)
        run_in_thread(tick)
        try:
            while not pushing_done.is_set():
                batch = await inbox.wait_for("s", even, 1)
                taken.extend(batch)
                if not batch:
                    timed_out.set()
        finally:
            timed_out.set()
            consumer_done.set()
        assert inbox.waiter_count("s") == 0
        assert_conserved(inbox, "s", pushed, taken)

    backend.run(main)


# -- A wait that timed out is still a wait until it returns ---------------------------------------


@pytest.mark.parametrize("operation", ["wait", "wait_for"])
def test_a_wait_its_framework_timed_out_is_reached_by_clear_session_until_it_returns(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    # On the system clock the framework keeps the timeout (trio: a cancel scope
    # whose Cancelled the wait catches; asyncio: loop.call_later). Either way
    # the wait looks once more before it returns, and until then it is in
    # progress: a clear_session must still end it with nothing, even though
    # something is pushed after the clear (trio's wait used to unregister as
    # the Cancelled arrived, and then returned that entry of the session's
    # next life). White-box: the clear and the push run right after the
    # timeout reached the waiter, before its last look.
    inbox = Inbox()
    raced: list[InboxEntry] = []
    interrupt = ParkingLot.interrupt

    def interrupt_then_clear_and_push(self: ParkingLot, waiter: Any, reason: Any) -> None:
        interrupt(self, waiter, reason)
        if not raced:
            assert inbox.waiter_count("s") == 1
            assert inbox.clear_session("s") == 0
            raced.append(nudge(inbox, "s", "next life"))

    monkeypatch.setattr(ParkingLot, "interrupt", interrupt_then_clear_and_push)

    async def main() -> None:
        if operation == "wait":
            assert await inbox.wait("s", timeout=0.01) is False
        else:
            assert await inbox.wait_for("s", lambda entry: True, timeout=0.01) == []
        assert raced, "the timeout never reached the waiter"
        assert inbox.waiter_count("s") == 0

    backend.run(main)
    assert inbox.drain("s") == raced
