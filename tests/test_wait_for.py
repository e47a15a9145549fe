"""`await inbox.wait_for(session_id, predicate, timeout)`: selective receive on trio and asyncio.

It takes the matching entries (as `drain_where` does) once there is at least
one, leaves the others queued in order, judges each entry once however often
it looks, re-parks on pushes that do not match, and lets its loop run between
rounds of judging. What it shares with every way of waiting (woken by its own
session only, ended by a timeout or a clear) is in test_waiting.py.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest
from _support import catching, contents, nudge, raising_after, wanted

from harn_inbox import Inbox, ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Backend

    from harn_inbox import InboxEntry

#: Predicate calls after which a wait_for that should have returned is called starved.
STARVED = 10_000


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
        async with backend.parked(inbox, inbox.wait_for, "s", judge) as waiter:
            ignored = nudge(inbox, "s", "ignored")
            await backend.until(lambda: judge.judged == ["ignored"])
            await backend.turns()
            assert not waiter.finished  # looked, found nothing to take, parked again
            assert inbox.waiter_count("s") == 1
            match = nudge(inbox, "s", "want")
        assert waiter.result == [match]
        assert inbox.snapshot("s") == [ignored]
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_wait_for_judges_each_entry_once_however_often_it_looks(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        nudge(inbox, "s", "a")
        judge = Judge()
        async with backend.parked(inbox, inbox.wait_for, "s", judge) as waiter:
            for content in ("b", "c"):
                nudge(inbox, "s", content)
                await backend.until(lambda content=content: content in judge.judged)
            nudge(inbox, "s", "want")
        assert contents(waiter.result) == ["want"]
        assert judge.judged == ["a", "b", "c", "want"]

    backend.run(main)


def test_wait_for_does_not_judge_again_entries_behind_a_requeued_one(
    backend: Backend, inbox: Inbox
) -> None:
    # requeue_front puts the requeued entry ahead of the rest: only that one
    # is new to the predicate. (Judging everything again on every requeue
    # could starve a slow wait_for.)
    async def main() -> None:
        back = nudge(inbox, "s", "back")
        inbox.drain("s")
        for content in ("a", "b"):
            nudge(inbox, "s", content)
        judge = Judge()
        async with backend.parked(inbox, inbox.wait_for, "s", judge) as waiter:
            inbox.requeue_front(back)
            await backend.until(lambda: "back" in judge.judged)
            nudge(inbox, "s", "want")
        assert contents(waiter.result) == ["want"]
        assert judge.judged == ["a", "b", "back", "want"]
        assert contents(inbox.snapshot("s")) == ["back", "a", "b"]

    backend.run(main)


def test_wait_for_takes_every_match_pushed_before_it_looks_again(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        async with backend.parked(inbox, inbox.wait_for, "s", wanted) as waiter:
            entries = [nudge(inbox, "s", content) for content in ("want-1", "x", "want-2")]
        assert waiter.result == [entries[0], entries[2]]
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


def test_wait_for_woken_by_a_push_from_another_thread(backend: Backend, inbox: Inbox) -> None:
    # Each park is owed its own wake: the second, from another thread, must
    # find what the re-parked task waits on, not what the first one resolved.
    async def main() -> None:
        async with backend.parked(inbox, inbox.wait_for, "s", wanted, 30) as waiter:
            await backend.to_thread(nudge, inbox, "s", "no")
            await backend.turns()  # woken, judges "no", parks again
            assert not waiter.finished
            assert inbox.pending_count("s") == 1
            await backend.to_thread(nudge, inbox, "s", "want")
            await backend.until(lambda: waiter.finished)  # fails, rather than hangs, if lost
        assert contents(waiter.result) == ["want"]
        assert contents(inbox.snapshot("s")) == ["no"]

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
        assert contents(taken) == ["want-new"]
        assert inbox.pending_count("s") == 0

    backend.run(main)


def test_predicate_may_push_to_the_session_it_judges(backend: Backend, inbox: Inbox) -> None:
    # The predicate runs without the lock, so it may call the inbox; what it
    # pushes is later than the look that judged "a", and judged by the next.
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


def test_wait_for_does_not_judge_again_entries_that_survive_drop_oldest(backend: Backend) -> None:
    # At capacity every push discards the oldest entry; the survivors keep
    # their verdicts, so only new ones are judged (judging everything again
    # each time could starve a wait_for behind a steady producer).
    inbox = Inbox(clock=ManualClock(), max_pending=3, overflow="drop_oldest")
    judge = Judge(lambda entry: entry.content == "want")

    async def main() -> None:
        for content in ("a", "b", "c"):
            nudge(inbox, "s", content)
        async with backend.parked(inbox, inbox.wait_for, "s", judge) as waiter:
            for content in ("d", "e", "want"):
                nudge(inbox, "s", content)
                await backend.turns(50)
        assert contents(waiter.result) == ["want"]

    backend.run(main)
    assert sorted(judge.judged) == sorted(["a", "b", "c", "d", "e", "want"])
    assert contents(inbox.snapshot("s")) == ["d", "e"]


# -- Rounds of judging under a steady stream ------------------------------------------------------


class StreamingJudge(Judge):
    """A predicate that pushes an entry to the session it judges each time it is called.

    So every look of a ``wait_for`` finds something new to judge: a producer
    as steady as can be. Past `STARVED` calls it fails the test.
    """

    def __init__(self, inbox: Inbox, verdict: Callable[[InboxEntry], object]) -> None:
        super().__init__(verdict)
        self.inbox = inbox

    def __call__(self, entry: InboxEntry) -> object:
        assert len(self.judged) < STARVED, "wait_for never let the loop run"
        nudge(self.inbox, "s", f"noise-{len(self.judged)}")
        return super().__call__(entry)


def test_wait_for_lets_its_loop_run_between_rounds_of_judging(
    backend: Backend, inbox: Inbox
) -> None:
    # The wait_for matches only once another task has run three times; a
    # wait_for that judged round after round without yielding would never
    # let it, and would fail the predicate's guard instead.
    progress = 0

    async def other_task() -> None:
        nonlocal progress
        while progress < 3:
            progress += 1
            await backend.checkpoint()

    judge = StreamingJudge(inbox, lambda entry: progress >= 3)

    async def main() -> list[InboxEntry]:
        nudge(inbox, "s", "first")
        async with backend.task_group() as group:
            waiter = group.start_soon(inbox.wait_for, "s", judge)
            group.start_soon(other_task)
        taken: list[InboxEntry] = waiter.result
        return taken

    [taken] = backend.run(main)
    assert progress == 3
    assert taken.content == judge.judged[-1]
    assert len(set(judge.judged)) == len(judge.judged), "an entry was judged twice"
    # It took the one entry it matched; every other entry, judged or pushed, stays.
    assert inbox.pending_count("s") == len(judge.judged)


def test_wait_for_honours_its_timeout_under_a_steady_stream(
    backend: Backend, inbox: Inbox, clock: ManualClock
) -> None:
    async def advance_the_clock() -> None:
        await backend.turns(3)
        clock.advance(5)

    judge = StreamingJudge(inbox, lambda entry: False)

    async def main() -> list[InboxEntry]:
        nudge(inbox, "s", "first")
        async with backend.task_group() as group:
            waiter = group.start_soon(inbox.wait_for, "s", judge, 5)
            group.start_soon(advance_the_clock)
        taken: list[InboxEntry] = waiter.result
        return taken

    assert backend.run(main) == []
    assert judge.judged  # it was judging the stream when its deadline passed
    assert inbox.pending_count("s") == len(judge.judged) + 1
    assert inbox.waiter_count("s") == 0
    assert not clock._timers


# -- Ending with [] -------------------------------------------------------------------------------


def test_clear_session_ends_a_wait_for_parked_beside_entries_it_does_not_want(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        nudge(inbox, "s", "no")
        async with backend.parked(inbox, inbox.wait_for, "s", wanted) as waiter:
            inbox.clear_session("s")
        assert waiter.result == []
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


# -- Predicate errors -----------------------------------------------------------------------------


class Refused(Exception):
    pass


@pytest.mark.parametrize("error", [Refused, StopIteration])
@pytest.mark.parametrize("fails_at", [0, 1, 3])
def test_predicate_error_on_pending_entries_propagates_and_takes_nothing(
    backend: Backend, inbox: Inbox, clock: ManualClock, fails_at: int, error: type[BaseException]
) -> None:
    # (A StopIteration, say from next() on an exhausted generator by mistake,
    # must not end the judging early as if every entry had been seen: inside
    # a coroutine it may surface as RuntimeError, PEP 479.)
    entries = [nudge(inbox, "s", f"want-{n}") for n in range(4)]

    async def main() -> None:
        for timeout in (30, None):
            with pytest.raises((error, RuntimeError)):
                await inbox.wait_for("s", raising_after(fails_at, error), timeout)

    backend.run(main)
    assert inbox.snapshot("s") == entries
    assert inbox.waiter_count("s") == 0
    assert "timers=0" in repr(clock)


def refuse_bad(entry: InboxEntry) -> bool:
    if entry.content == "bad":
        raise Refused(entry.content)
    return wanted(entry)


@pytest.mark.parametrize("pusher", ["a task", "a thread"])
def test_predicate_error_after_a_wake_propagates_takes_nothing_and_leaves_no_waiter(
    backend: Backend, inbox: Inbox, clock: ManualClock, pusher: str
) -> None:
    old = nudge(inbox, "s", "old")

    async def main() -> None:
        args = (Refused, inbox.wait_for, "s", refuse_bad, 30)
        async with backend.parked(inbox, catching, *args, session_id="s") as waiter:
            if pusher == "a task":
                pushed = [nudge(inbox, "s", "want"), nudge(inbox, "s", "bad")]
            else:
                pushed = [await backend.to_thread(nudge, inbox, "s", "bad")]
        assert isinstance(waiter.result, Refused)
        assert inbox.snapshot("s") == [old, *pushed]
        assert inbox.snapshot("s")[0] is old

    backend.run(main)
    assert inbox.waiter_count("s") == 0
    assert "timers=0" in repr(clock)
