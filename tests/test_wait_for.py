"""`await inbox.wait_for(session_id, predicate, timeout)`: selective receive on trio and asyncio.

It takes the matching entries (as `drain_where` does) once there is at least one,
leaves the others queued in order, re-parks on pushes that do not match, and
returns ``[]`` on timeout, clear or close, having taken nothing.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Backend

    from harn_inbox import Inbox, InboxEntry, ManualClock


def nudge(inbox: Inbox, session_id: str, content: str, source: str = "test") -> InboxEntry:
    return inbox.push(session_id, "tool_result", content, source)


def wanted(entry: InboxEntry) -> bool:
    return entry.content.startswith("want")


class Judge:
    """A predicate that records what it was asked about."""

    def __init__(self, verdict: Callable[[InboxEntry], object] = wanted) -> None:
        self.verdict = verdict
        self.judged: list[str] = []

    def __call__(self, entry: InboxEntry) -> object:
        self.judged.append(entry.content)
        return self.verdict(entry)


# -- Taking what matches --------------------------------------------------------------------------


def test_wait_for_takes_pending_matches_at_once_and_keeps_the_rest_in_order(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        entries = [nudge(inbox, "s", content) for content in ("want-1", "b", "want-2", "c")]
        assert await inbox.wait_for("s", wanted) == [entries[0], entries[2]]
        assert inbox.snapshot("s") == [entries[1], entries[3]]
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_wait_for_goes_by_the_truth_of_whatever_the_predicate_returns(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        entries = [nudge(inbox, "s", content) for content in ("", "x", "", "yz")]
        assert await inbox.wait_for("s", lambda entry: entry.content) == [entries[1], entries[3]]
        assert inbox.snapshot("s") == [entries[0], entries[2]]

    backend.run(main)


def test_wait_for_parks_until_a_matching_push_and_leaves_the_others(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        judge = Judge()
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait_for, "s", judge)
            await backend.wait_parked(inbox, "s")
            ignored = nudge(inbox, "s", "ignored")
            await backend.until(lambda: judge.judged == ["ignored"])
            await backend.turns()
            assert not handle.finished  # looked, found nothing to take, parked again
            assert inbox.waiter_count("s") == 1
            match = nudge(inbox, "s", "want")
        assert handle.result == [match]
        assert inbox.snapshot("s") == [ignored]
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_wait_for_judges_each_entry_once_however_often_it_looks(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        nudge(inbox, "s", "a")
        judge = Judge()
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait_for, "s", judge)
            await backend.wait_parked(inbox, "s")
            for content in ("b", "c"):
                nudge(inbox, "s", content)
                await backend.until(lambda content=content: content in judge.judged)
            nudge(inbox, "s", "want")
        assert [entry.content for entry in handle.result] == ["want"]
        assert judge.judged == ["a", "b", "c", "want"]

    backend.run(main)


def test_wait_for_does_not_judge_again_entries_behind_a_requeued_one(
    backend: Backend, inbox: Inbox
) -> None:
    # requeue_front replaces the pending list with the requeued entry ahead
    # of the rest: only that one is new to the predicate. (Judging everything
    # again on every requeue could starve a slow wait_for.)
    async def main() -> None:
        back = nudge(inbox, "s", "back")
        inbox.drain("s")
        for content in ("a", "b"):
            nudge(inbox, "s", content)
        judge = Judge()
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait_for, "s", judge)
            await backend.wait_parked(inbox, "s")
            inbox.requeue_front(back)
            await backend.until(lambda: "back" in judge.judged)
            nudge(inbox, "s", "want")
        assert [entry.content for entry in handle.result] == ["want"]
        assert judge.judged == ["a", "b", "back", "want"]
        assert [entry.content for entry in inbox.snapshot("s")] == ["back", "a", "b"]

    backend.run(main)


def test_wait_for_takes_every_match_pushed_before_it_looks_again(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait_for, "s", wanted)
            await backend.wait_parked(inbox, "s")
            entries = [nudge(inbox, "s", content) for content in ("want-1", "x", "want-2")]
        assert handle.result == [entries[0], entries[2]]
        assert inbox.snapshot("s") == [entries[1]]

    backend.run(main)


def test_selective_waits_on_one_session_each_take_their_own_entries(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            for_a = group.start_soon(inbox.wait_for, "s", lambda entry: entry.content == "a")
            for_b = group.start_soon(inbox.wait_for, "s", lambda entry: entry.content == "b")
            await backend.wait_parked(inbox, "s", 2)
            a, b = nudge(inbox, "s", "a"), nudge(inbox, "s", "b")
        assert (for_a.result, for_b.result) == ([a], [b])
        assert inbox.pending_count("s") == 0

    backend.run(main)


def test_requeue_front_wakes_a_selective_wait(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        nudge(inbox, "s", "want")
        [entry] = inbox.drain("s")
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait_for, "s", wanted)
            await backend.wait_parked(inbox, "s")
            inbox.requeue_front(entry)
        assert handle.result == [entry]

    backend.run(main)


def test_wait_for_woken_by_a_push_from_another_thread(backend: Backend, inbox: Inbox) -> None:
    # Each park is owed its own wake: the second, from another thread, must
    # find what the re-parked task waits on, not what the first one resolved.
    async def main() -> None:
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait_for, "s", wanted, 30)
            await backend.wait_parked(inbox, "s")
            await backend.to_thread(nudge, inbox, "s", "no")
            await backend.turns()  # woken, judges "no", parks again
            assert not handle.finished
            assert inbox.pending_count("s") == 1
            await backend.to_thread(nudge, inbox, "s", "want")
            await backend.until(lambda: handle.finished)  # fails, rather than hangs, if lost
        assert [entry.content for entry in handle.result] == ["want"]
        assert [entry.content for entry in inbox.snapshot("s")] == ["no"]

    backend.run(main)


def test_wait_for_never_returns_an_entry_another_consumer_took_while_it_judged(
    backend: Backend, inbox: Inbox, run_in_thread: Callable[..., threading.Thread]
) -> None:
    # The predicate runs outside the inbox's lock. While it judges "want-old",
    # another thread drains the session (taking it) and pushes "want-new".
    judging, changed = threading.Event(), threading.Event()
    drained: list[InboxEntry] = []

    def slow(entry: InboxEntry) -> bool:
        if entry.content == "want-old":
            judging.set()
            assert changed.wait(timeout=30)
        return wanted(entry)

    def other_consumer() -> None:
        assert judging.wait(timeout=30)
        drained.extend(inbox.drain("s"))
        nudge(inbox, "s", "want-new")
        changed.set()

    async def main() -> None:
        old = nudge(inbox, "s", "want-old")
        run_in_thread(other_consumer)
        taken = await inbox.wait_for("s", slow)
        assert drained == [old]
        assert [entry.content for entry in taken] == ["want-new"]
        assert inbox.pending_count("s") == 0

    backend.run(main)


def test_predicate_may_push_to_the_session_it_judges(backend: Backend, inbox: Inbox) -> None:
    # The predicate runs without the lock, so it may call the inbox; what it
    # pushes is judged in the same look, and no wake-up is needed for it.
    async def main() -> None:
        pushed: list[InboxEntry] = []

        def push_then_judge(entry: InboxEntry) -> bool:
            if entry.content == "a":
                pushed.append(nudge(inbox, "s", "want-b"))
            return wanted(entry)

        first = nudge(inbox, "s", "a")
        assert await inbox.wait_for("s", push_then_judge) == pushed
        assert inbox.snapshot("s") == [first]
        assert inbox.waiter_count("s") == 0

    backend.run(main)


# -- Ending with [] -------------------------------------------------------------------------------


def test_wait_for_with_timeout_zero_only_looks(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        kept = nudge(inbox, "s", "no")
        assert await inbox.wait_for("s", wanted, 0) == []
        match = nudge(inbox, "s", "want")
        assert await inbox.wait_for("s", wanted, 0) == [match]
        assert inbox.snapshot("s") == [kept]
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_wait_for_timeout_returns_empty_and_takes_nothing(
    backend: Backend, inbox: Inbox, clock: ManualClock
) -> None:
    async def main() -> None:
        kept = nudge(inbox, "s", "no")
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait_for, "s", wanted, 5)
            await backend.wait_parked(inbox, "s")
            clock.advance(4.999)
            await backend.turns()
            assert not handle.finished
            clock.advance(0.001)
        assert handle.result == []
        assert inbox.snapshot("s") == [kept]
        assert inbox.waiter_count("s") == 0
        assert not clock._timers

    backend.run(main)


def test_wait_for_takes_a_match_pushed_before_the_deadline_though_the_timer_fired_first(
    backend: Backend, inbox: Inbox, clock: ManualClock
) -> None:
    # A matching push wakes it; the deadline passes before it looks again. The
    # timeout only stops it from parking again: it takes the match, exactly once.
    async def main() -> None:
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait_for, "s", wanted, 5)
            await backend.wait_parked(inbox, "s")
            other, match = nudge(inbox, "s", "no"), nudge(inbox, "s", "want")
            clock.advance(5)
        assert handle.result == [match]
        assert inbox.snapshot("s") == [other]

    backend.run(main)


def test_wait_for_returns_empty_when_the_session_is_cleared(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        nudge(inbox, "s", "no")
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait_for, "s", wanted)
            await backend.wait_parked(inbox, "s")
            inbox.clear_session("s")
        assert handle.result == []
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_predicate_clearing_the_session_it_judges_ends_the_wait(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        def clear_then_judge(entry: InboxEntry) -> bool:
            inbox.clear_session("s")
            return wanted(entry)

        nudge(inbox, "s", "want")
        assert await inbox.wait_for("s", clear_then_judge) == []
        assert inbox.pending_count("s") == 0
        assert inbox.waiter_count("s") == 0

    backend.run(main)


@pytest.mark.parametrize("look", ["first look", "look after a wake"])
def test_wait_for_judging_while_the_session_is_cleared_returns_empty(
    backend: Backend,
    inbox: Inbox,
    run_in_thread: Callable[..., threading.Thread],
    look: str,
) -> None:
    # While the predicate runs (outside the lock), another thread clears the
    # session. The wait was in progress at the clear, so it ends with [] and
    # must not carry on into the session's next incarnation. The verdict comes
    # from a matching push made afterwards: a wait that wrongly parked again
    # would take it.
    judging, cleared = threading.Event(), threading.Event()

    def slow(entry: InboxEntry) -> bool:
        if entry.content == "slow":
            judging.set()
            assert cleared.wait(timeout=30)
        return wanted(entry)

    def clear() -> None:
        assert judging.wait(timeout=30)
        inbox.clear_session("s")
        cleared.set()

    async def main() -> None:
        async with backend.task_group() as group:
            if look == "first look":
                nudge(inbox, "s", "slow")
                run_in_thread(clear)
                handle = group.start_soon(inbox.wait_for, "s", slow)
            else:
                handle = group.start_soon(inbox.wait_for, "s", slow)
                await backend.wait_parked(inbox, "s")
                run_in_thread(clear)
                nudge(inbox, "s", "slow")
            await backend.until(cleared.is_set)
            await backend.turns()
            next_incarnation = nudge(inbox, "s", "want")
        assert handle.result == []
        assert inbox.snapshot("s") == [next_incarnation]

    backend.run(main)


def test_wait_for_after_close_takes_what_matches_or_returns_empty(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        match, other = nudge(inbox, "s", "want"), nudge(inbox, "s", "no")
        async with backend.task_group() as group:
            parked = group.start_soon(inbox.wait_for, "empty", wanted)
            await backend.wait_parked(inbox, "empty")
            inbox.close()
        assert parked.result == []
        assert await inbox.wait_for("s", wanted) == [match]
        assert await inbox.wait_for("s", wanted) == []  # closed, nothing matching: at once
        assert inbox.snapshot("s") == [other]

    backend.run(main)


# -- Predicate errors -----------------------------------------------------------------------------


class Refused(Exception):
    pass


def refuse_bad(entry: InboxEntry) -> bool:
    if entry.content == "bad":
        raise Refused(entry.content)
    return wanted(entry)


def test_predicate_error_on_pending_entries_propagates_and_takes_nothing(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        entries = [nudge(inbox, "s", content) for content in ("want", "bad")]
        with pytest.raises(Refused):
            await inbox.wait_for("s", refuse_bad)
        assert inbox.snapshot("s") == entries
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_predicate_error_after_a_wake_propagates_and_leaves_no_waiter(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            handle = group.start_soon(_catching, Refused, inbox.wait_for, "s", refuse_bad, 5)
            await backend.wait_parked(inbox, "s")
            entries = [nudge(inbox, "s", content) for content in ("want", "bad")]
        assert isinstance(handle.result, Refused)
        assert inbox.snapshot("s") == entries
        assert inbox.waiter_count("s") == 0

    backend.run(main)


async def _catching(
    error: type[BaseException], fn: Callable[..., object], *args: object
) -> BaseException | None:
    """Run ``await fn(*args)`` and return what it raised (so the task group does not)."""
    try:
        await fn(*args)  # type: ignore[misc]
    except error as raised:
        return raised
    return None
