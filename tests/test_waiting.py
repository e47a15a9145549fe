"""What every way a task waits has in common: ``wait``, ``wait_for`` and a ``batches`` step.

Each test runs each way (`WAYS_TO_WAIT`) on trio and on asyncio. A wait
returns as soon as its session gives it something (``True``, or the entries
it takes); only a push or a requeue to its own session wakes it; it ends with
nothing (``False``, ``[]``) when its timeout passes on the inbox's clock or its
session is cleared (closing the inbox: test_shutdown.py). The entries pushed
here are ``want...`` ones, which ``wait_for``'s predicate accepts; what is
selective about ``wait_for`` is in test_wait_for.py, what is special to
channels in test_batches.py, and cancellation in test_cancellation.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from _support import WAYS_TO_WAIT, nudge, waiting

if TYPE_CHECKING:
    from conftest import Backend, TaskHandle

    from harn_inbox import Inbox, InboxEntry, ManualClock

#: The ways that take a timeout.
TIMED_WAYS = ("wait", "wait_for")


def returned(way: str, entries: list[InboxEntry]) -> object:
    """What a wait returns once *entries* (all wanted) are pending: ``wait`` takes nothing."""
    return True if way == "wait" else entries


def left(way: str, entries: list[InboxEntry]) -> list[InboxEntry]:
    """What stays pending once a wait returned *entries*."""
    return entries if way == "wait" else []


def nothing(way: str) -> object:
    """What a wait returns when it ends empty-handed."""
    return False if way == "wait" else []


def all_taken(handles: list[TaskHandle]) -> list[InboxEntry]:
    taken = [entry for handle in handles for entry in handle.result]
    return sorted(taken, key=lambda entry: entry.sequence)


# -- Woken by its own session ---------------------------------------------------------------------


@pytest.mark.parametrize("pusher", ["a task", "a thread"])
@pytest.mark.parametrize("way", WAYS_TO_WAIT)
def test_a_push_wakes_the_parked_wait_which_returns_what_was_pushed_before_it_looked(
    backend: Backend, inbox: Inbox, way: str, pusher: str
) -> None:
    async def main() -> None:
        async with backend.parked(inbox, waiting(inbox, way), session_id="s") as waiter:
            await backend.turns()
            assert not waiter.finished
            if pusher == "a task":
                entries = [nudge(inbox, "s", "want-1"), nudge(inbox, "s", "want-2")]
            else:
                entries = [await backend.to_thread(nudge, inbox, "s", "want")]
        assert waiter.result == returned(way, entries)
        assert inbox.snapshot("s") == left(way, entries)
        assert inbox.waiter_count("s") == 0

    backend.run(main)


@pytest.mark.parametrize("way", WAYS_TO_WAIT)
def test_a_requeue_front_wakes_the_parked_wait(backend: Backend, inbox: Inbox, way: str) -> None:
    async def main() -> None:
        nudge(inbox, "s", "want")
        [entry] = inbox.drain("s")
        async with backend.parked(inbox, waiting(inbox, way), session_id="s") as waiter:
            inbox.requeue_front(entry)
        assert waiter.result == returned(way, [entry])

    backend.run(main)


@pytest.mark.parametrize("way", WAYS_TO_WAIT)
def test_a_push_to_another_session_wakes_nobody(backend: Backend, inbox: Inbox, way: str) -> None:
    async def main() -> None:
        pushed_to_other: list[InboxEntry] = []
        async with backend.task_group() as group:
            others = [group.start_soon(waiting(inbox, way, "other")) for _ in range(2)]
            mine = group.start_soon(waiting(inbox, way, "mine"))
            await backend.wait_parked(inbox, "other", 2)
            await backend.wait_parked(inbox, "mine")
            entry = nudge(inbox, "mine", "want")
            await backend.until(lambda: mine.finished)
            await backend.turns()
            assert inbox.waiter_count("other") == 2
            assert not any(handle.finished for handle in others)
            # One push wakes both; a wait that takes entries leaves none for the
            # other, which parks again until the next push.
            while not all(handle.finished for handle in others):
                pushed_to_other.append(nudge(inbox, "other", "want"))
                await backend.turns()
        assert mine.result == returned(way, [entry])
        if way == "wait":
            assert [handle.result for handle in others] == [True, True]
            assert inbox.snapshot("other") == pushed_to_other
        else:
            assert all(handle.result for handle in others)
            assert all_taken(others) == pushed_to_other

    backend.run(main)


@pytest.mark.parametrize("way", WAYS_TO_WAIT)
def test_entries_taken_before_the_wait_looks_do_not_end_it(
    backend: Backend, inbox: Inbox, way: str
) -> None:
    async def main() -> None:
        nudge(inbox, "s", "want")
        inbox.drain("s")  # before the wait starts: it parks
        async with backend.parked(inbox, waiting(inbox, way), session_id="s") as waiter:
            await backend.turns()
            assert not waiter.finished
            first = nudge(inbox, "s", "want-1")
            assert inbox.drain("s") == [first]  # before the woken wait looks: it parks again
            await backend.turns()
            assert not waiter.finished
            second = nudge(inbox, "s", "want-2")
        assert waiter.result == returned(way, [second])

    backend.run(main)


# -- Ended by clear_session -----------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS_TO_WAIT)
def test_clear_session_ends_every_parked_wait_with_nothing(
    backend: Backend, inbox: Inbox, way: str
) -> None:
    timeouts = [None] if way == "batches" else [None, 5]

    async def main() -> None:
        async with backend.task_group() as group:
            handles = [group.start_soon(waiting(inbox, way, "s", t)) for t in timeouts]
            await backend.wait_parked(inbox, "s", len(handles))
            inbox.clear_session("s")
        assert [handle.result for handle in handles] == [nothing(way)] * len(handles)
        assert all(handle.raised is None for handle in handles)
        assert inbox.waiter_count("s") == 0

    backend.run(main)


@pytest.mark.parametrize("way", WAYS_TO_WAIT)
def test_clear_session_right_after_the_push_that_woke_a_wait_ends_it(
    backend: Backend, inbox: Inbox, way: str
) -> None:
    # The push wakes the wait; before it looks again the session is cleared. It
    # must end with nothing, not park again on the session's next life.
    async def main() -> None:
        async with backend.parked(inbox, waiting(inbox, way), session_id="s") as waiter:
            nudge(inbox, "s", "want")
            inbox.clear_session("s")
            with backend.fail_after(60):
                await backend.until(lambda: waiter.finished)
        assert waiter.result == nothing(way)
        assert inbox.waiter_count("s") == 0

    backend.run(main)


@pytest.mark.parametrize("way", WAYS_TO_WAIT)
def test_clear_session_leaves_the_waits_of_other_sessions_parked(
    backend: Backend, inbox: Inbox, way: str
) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            cleared = group.start_soon(waiting(inbox, way, "cleared"))
            other = group.start_soon(waiting(inbox, way, "other"))
            await backend.wait_parked(inbox, "cleared")
            await backend.wait_parked(inbox, "other")
            inbox.clear_session("cleared")
            await backend.until(lambda: cleared.finished)
            await backend.turns()
            assert inbox.waiter_count("other") == 1
            assert not other.finished
            entry = nudge(inbox, "other", "want")
        assert cleared.result == nothing(way)
        assert other.result == returned(way, [entry])

    backend.run(main)


@pytest.mark.parametrize("way", WAYS_TO_WAIT)
def test_a_wait_after_clear_session_waits_for_the_next_push(
    backend: Backend, inbox: Inbox, way: str
) -> None:
    async def main() -> None:
        nudge(inbox, "s", "want")
        inbox.clear_session("s")
        async with backend.parked(inbox, waiting(inbox, way), session_id="s") as waiter:
            await backend.turns()
            assert not waiter.finished
            entry = nudge(inbox, "s", "want")
            assert entry.sequence == 1
        assert waiter.result == returned(way, [entry])

    backend.run(main)


# -- Timeouts on the inbox's clock ----------------------------------------------------------------


@pytest.mark.parametrize("way", TIMED_WAYS)
def test_timeout_zero_only_looks(backend: Backend, inbox: Inbox, way: str) -> None:
    async def main() -> None:
        look = waiting(inbox, way, "s", 0)
        assert await look() == nothing(way)
        assert inbox.waiter_count("s") == 0
        other = nudge(inbox, "s", "no")
        assert await look() == (True if way == "wait" else [])  # not what wait_for wants
        match = nudge(inbox, "s", "want")
        assert await look() == returned(way, [match])
        assert inbox.snapshot("s") == ([other, match] if way == "wait" else [other])
        assert inbox.waiter_count("s") == 0

    backend.run(main)


@pytest.mark.parametrize("way", TIMED_WAYS)
def test_a_timeout_ends_the_wait_at_its_deadline_and_not_before_taking_nothing(
    backend: Backend, inbox: Inbox, clock: ManualClock, way: str
) -> None:
    async def main() -> None:
        # What wait_for does not want stays; wait would return at once with it.
        kept = [nudge(inbox, "s", "no")] if way == "wait_for" else []
        async with backend.parked(inbox, waiting(inbox, way, "s", 5), session_id="s") as waiter:
            clock.advance(4.999)
            await backend.turns()
            assert not waiter.finished
            clock.advance(0.001)
        assert waiter.result == nothing(way)
        assert inbox.snapshot("s") == kept
        assert inbox.waiter_count("s") == 0
        assert not clock._timers

    backend.run(main)


@pytest.mark.parametrize("way", TIMED_WAYS)
def test_a_wait_woken_before_its_deadline_forgets_its_timer(
    backend: Backend, inbox: Inbox, clock: ManualClock, way: str
) -> None:
    async def main() -> None:
        async with backend.parked(inbox, waiting(inbox, way, "s", 5), session_id="s") as waiter:
            entry = nudge(inbox, "s", "want")
        assert waiter.result == returned(way, [entry])
        assert not clock._timers  # a woken wait leaves no deadline behind to fire later

    backend.run(main)


@pytest.mark.parametrize("way", TIMED_WAYS)
def test_a_push_before_the_deadline_counts_though_the_timer_fired_before_the_wait_looked(
    backend: Backend, inbox: Inbox, clock: ManualClock, way: str
) -> None:
    # The timeout only stops a wait from parking again: woken by a push, it
    # takes what it wants, exactly once, however late it gets to look.
    async def main() -> None:
        async with backend.parked(inbox, waiting(inbox, way, "s", 5), session_id="s") as waiter:
            other, match = nudge(inbox, "s", "no"), nudge(inbox, "s", "want")
            clock.advance(5)  # the timer fires before the woken wait gets to look
        assert waiter.result == returned(way, [match])
        assert inbox.snapshot("s") == ([other, match] if way == "wait" else [other])
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_timed_waits_survive_the_clock_going_back_and_end_past_their_deadline(
    backend: Backend, inbox: Inbox, clock: ManualClock
) -> None:
    async def main() -> list[Any]:
        async with backend.task_group() as group:
            handles = [group.start_soon(waiting(inbox, way, "s", 5)) for way in TIMED_WAYS]
            await backend.wait_parked(inbox, "s", 2)
            for ms in (500_000, 0, 1_004_999):
                clock.set(ms)
                await backend.turns(5)
                assert "timers=2" in repr(clock), "a deadline fired on the way back"
                assert not any(handle.finished for handle in handles)
            clock.set(2_000_000)  # jumps straight past the deadline
        return [handle.result for handle in handles]

    assert backend.run(main) == [False, []]
    assert inbox.waiter_count("s") == 0
    assert "timers=0" in repr(clock)
