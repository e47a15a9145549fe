"""What an operation costs does not grow with what it need not touch.

Counted in work, never in time: predicate calls, entries read, entry
comparisons, lines of the library run, waiters woken, session records visited.
A selective take under a steady producer judges each entry once and returns; a
push to a session with a parked ``wait_for`` judges nothing old again, nor
reads, copies or walks it; a push does nothing for waiters already woken;
``requeue_front`` compares a bounded number of entries; ``sessions()`` visits
only the sessions with something pending. Some tests are white-box (they spy on
a private function or replace a private table); each says so.
(One thread-safe wake per loop per push: test_cross_thread.py.)
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import pytest
from _support import contents, push_many

import harn_inbox
import harn_inbox._lot
from harn_inbox import Inbox, InboxEntry, ManualClock
from harn_inbox._session import SessionState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from types import FrameType

    from conftest import Backend

    from harn_inbox._session import Cursor
    from harn_inbox._waiters import Waiter


# -- A selective take under a steady producer -----------------------------------------------------


async def take_selectively(
    inbox: Inbox, call: str, predicate: Callable[[InboxEntry], object]
) -> list[InboxEntry]:
    if call == "drain_where":
        return inbox.drain_where("s", predicate)
    return await inbox.wait_for("s", predicate)


@pytest.mark.parametrize("overflow", ["unbounded", "drop_oldest"])
@pytest.mark.parametrize("call", ["drain_where", "wait_for"])
def test_a_selective_take_under_a_steady_producer_judges_each_entry_once_and_returns(
    backend: Backend, call: str, overflow: str
) -> None:
    # A match is pending from the start; every predicate call pushes to the
    # session (every other call in a full drop_oldest session, so that the
    # match, the newest entry, is not itself pushed out). The take commits what
    # it judged: it returns after one call per entry it found, takes the
    # match, and leaves what was pushed meanwhile pending, for later.
    if overflow == "drop_oldest":
        inbox = Inbox(clock=ManualClock(), max_pending=10, overflow="drop_oldest")
    else:
        inbox = Inbox(clock=ManualClock())
    found = [*push_many(inbox, "s", 9), inbox.push("s", "k", "want", "test")]
    judged: list[InboxEntry] = []
    pushed: list[InboxEntry] = []

    def predicate(entry: InboxEntry) -> bool:
        judged.append(entry)
        assert len(judged) < 1_000, "the take judged on and on: it never committed"
        if overflow == "unbounded" or len(judged) % 2:
            pushed.append(inbox.push("s", "k", f"pushed-{len(judged)}", "producer"))
        return entry.content == "want"

    taken = backend.run(take_selectively, inbox, call, predicate)
    assert taken == found[-1:]
    assert judged == found  # each once, in order, and nothing pushed meanwhile
    if overflow == "unbounded":
        assert inbox.snapshot("s") == found[:-1] + pushed
    else:
        assert inbox.dropped("s") == len(pushed) == 5
        assert inbox.snapshot("s") == found[5:-1] + pushed


# -- A push to a session with a parked wait_for ---------------------------------------------------


@pytest.mark.parametrize("pending", [1, 1_000])
def test_a_push_to_a_parked_wait_for_judges_only_the_new_entry(
    backend: Backend, pending: int
) -> None:
    # The push itself judges nothing (the predicate runs in the waiting task);
    # the woken wait judges the new entry, never the old ones again, however
    # many are pending.
    inbox = Inbox(clock=ManualClock())
    old = push_many(inbox, "s", pending)
    judged: list[InboxEntry] = []

    def wanted(entry: InboxEntry) -> bool:
        judged.append(entry)
        return entry.content == "want"

    async def main() -> None:
        async with backend.parked(inbox, inbox.wait_for, "s", wanted) as waiter:
            assert judged == old
            for n in range(20):
                judged.clear()
                new = inbox.push("s", "k", f"new-{n}", "test")
                assert judged == [], "the push ran the predicate"
                await backend.until(lambda: bool(judged))
                await backend.turns()
                assert judged == [new]
                assert not waiter.finished
            judged.clear()
            match = inbox.push("s", "k", "want", "test")
        assert judged == [match]
        assert waiter.result == [match]

    backend.run(main)
    assert contents(inbox.snapshot("s")) == [*contents(old), *(f"new-{n}" for n in range(20))]


@attrs.frozen
class LookWork:
    """What one push to a session with a parked ``wait_for`` cost, with the waiter's looks after it.

    ``read``: how many entries each read of the session returned; ``offered``:
    how many each take was given; ``copies``: calls of `SessionState.entries`
    (a copy of every pending entry); ``comparisons``: calls of
    ``InboxEntry.__eq__``; ``lines``: lines of harn_inbox's own code run.
    """

    read: tuple[int, ...]
    offered: tuple[int, ...]
    copies: int
    comparisons: int
    lines: int


@attrs.define
class LookTally:
    """Counts for `LookWork`, kept by spies while ``counting`` is on."""

    counting: bool = False
    read: list[int] = attrs.Factory(list)
    offered: list[int] = attrs.Factory(list)
    copies: int = 0
    comparisons: int = 0

    def start(self) -> None:
        self.read, self.offered, self.copies, self.comparisons = [], [], 0, 0
        self.counting = True

    def stop(self, lines: int) -> LookWork:
        self.counting = False
        return LookWork(tuple(self.read), tuple(self.offered), self.copies, self.comparisons, lines)

    def spy_on(self, patch: pytest.MonkeyPatch) -> None:
        """Wrap what a look may do with the pending entries, to count it."""
        read, take, entries = SessionState.read, SessionState.take, SessionState.entries
        equal = InboxEntry.__eq__

        def counting_read(session: SessionState, cursor: Cursor | None) -> Any:
            reading = read(session, cursor)
            if self.counting:
                self.read.append(len(reading[1]))
            return reading

        def counting_take(session: SessionState, cursor: Cursor, chosen: list[InboxEntry]) -> Any:
            if self.counting:
                self.offered.append(len(chosen))
            return take(session, cursor, chosen)

        def counting_entries(session: SessionState) -> list[InboxEntry]:
            if self.counting:
                self.copies += 1
            return entries(session)

        def counting_eq(entry: InboxEntry, other: object) -> Any:
            if self.counting:
                self.comparisons += 1
            return equal(entry, other)

        patch.setattr(SessionState, "read", counting_read)
        patch.setattr(SessionState, "take", counting_take)
        patch.setattr(SessionState, "entries", counting_entries)
        patch.setattr(InboxEntry, "__eq__", counting_eq)


#: Where harn_inbox's own code lives: the lines `lines_run_in_harn_inbox` counts.
_PACKAGE = os.path.dirname(harn_inbox.__file__) + os.sep


@contextmanager
def lines_run_in_harn_inbox() -> Iterator[list[int]]:
    """Count the lines of harn_inbox's own code this thread runs in the block, into ``[n]``.

    A loop in Python over N entries, or over their N verdicts, runs N lines or more.
    """
    count = [0]

    def in_package(frame: FrameType, event: str, arg: object) -> Any:
        if event == "line":
            count[0] += 1
        return in_package

    def on_call(frame: FrameType, event: str, arg: object) -> Any:
        # Called for each frame entered or resumed (coroutines too): trace only ours.
        return in_package if frame.f_code.co_filename.startswith(_PACKAGE) else None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        yield count
    finally:
        sys.settrace(previous)


def work_of_pushes_to_a_parked_wait_for(
    backend: Backend, judged: int, pushes: int = 5
) -> list[LookWork]:
    """What each of *pushes* pushes costs, to a ``wait_for`` parked having judged *judged* entries.

    None of them matches; each push wakes the waiter, which looks and parks
    again before the next.
    """
    inbox = Inbox(clock=ManualClock())
    push_many(inbox, "s", judged)
    predicate_calls = 0

    def wanted(entry: InboxEntry) -> bool:
        nonlocal predicate_calls
        predicate_calls += 1
        return entry.content == "want"

    def parked() -> bool:
        return "s" in inbox._lot.parked

    tally = LookTally()
    work = []

    async def main() -> None:
        async with backend.parked(inbox, inbox.wait_for, "s", wanted) as waiter:
            await backend.until(parked)
            assert predicate_calls == judged
            for n in range(pushes):
                tally.start()
                with lines_run_in_harn_inbox() as lines:
                    inbox.push("s", "k", f"new-{n}", "test")
                    assert not parked()  # the push woke the waiter...
                    await backend.until(parked)  # ...which looked, and parked again
                work.append(tally.stop(lines[0]))
                assert not waiter.finished
            match = inbox.push("s", "k", "want", "test")
        assert waiter.result == [match]

    with pytest.MonkeyPatch.context() as patch:
        tally.spy_on(patch)
        backend.run(main)
    assert predicate_calls == judged + pushes + 1
    return work


def test_a_push_to_a_parked_wait_for_costs_the_same_however_many_entries_it_judged(
    backend: Backend,
) -> None:
    # White-box: SessionState's read, take and entries and InboxEntry.__eq__
    # are wrapped to count what they return, are given, or are called, and
    # the lines of harn_inbox's code run are counted (sys.settrace). A
    # wait_for is parked having judged 100, then 10,000 entries that do not
    # match; each push wakes it. The push and the waiter's looks after it read
    # just the new entry (the judged ones are never read, copied, compared or
    # offered to a take again), and run the same lines whatever the number
    # judged. (The predicate is not called for old entries either way: a push
    # that rescanned the N verdicts, or a look that read the N entries again
    # and found their verdicts, would pass the test above and fail this one.)
    few = work_of_pushes_to_a_parked_wait_for(backend, 100)
    many = work_of_pushes_to_a_parked_wait_for(backend, 10_000)
    for work in [*few, *many]:
        assert sum(work.read) == max(work.read) == 1, work  # the new entry, once
        assert work.offered == (), work
        assert work.copies == work.comparisons == 0, work
    lines_few = max(work.lines for work in few)
    assert lines_few < 1_000, few  # a push and two looks: a few hundred
    assert all(work.lines <= lines_few + 50 for work in many), (few, many)


# -- A push and the waiters already woken ---------------------------------------------------------


def test_a_push_does_nothing_for_waiters_woken_but_not_yet_run(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # White-box: a spy on harn_inbox._lot.wake_all counts the waiters each
    # notify hands over to be woken. A hundred waits park; one push wakes
    # them all (in one wake_all); the pushes that follow, before any of them
    # has run, find no waiter parked on the session and do nothing at all.
    inbox = Inbox(clock=ManualClock())
    woken: list[int] = []
    wake_all = harn_inbox._lot.wake_all

    def counting_wake_all(waiters: Iterable[Waiter]) -> None:
        waiters = list(waiters)
        woken.append(len(waiters))
        wake_all(waiters)

    monkeypatch.setattr(harn_inbox._lot, "wake_all", counting_wake_all)

    async def main() -> None:
        async with backend.task_group() as group:
            handles = [group.start_soon(inbox.wait, "s") for _ in range(100)]
            await backend.wait_parked(inbox, "s", 100)
            await backend.turns()
            for n in range(50):  # no checkpoint in between: none of the woken has run
                inbox.push("s", "k", f"#{n}", "test")
            assert "s" not in inbox._lot.parked
        assert all(handle.result is True for handle in handles)

    backend.run(main)
    assert woken == [100]


# -- requeue_front --------------------------------------------------------------------------------


def test_requeue_front_compares_a_bounded_number_of_entries_however_many_are_pending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # White-box: InboxEntry.__eq__ wrapped to count its calls. The duplicate
    # check looks an entry up by its sequence number, so each requeue makes at
    # most two comparisons (one among the entries pushed, one among those put
    # back), whether 1,000 or 3,000 entries are pending.
    inbox = Inbox(clock=ManualClock())
    drained = push_many(inbox, "s", 2_000)
    assert inbox.drain("s") == drained
    later = push_many(inbox, "s", 1_000)
    comparisons = 0
    equal = InboxEntry.__eq__

    def counting_eq(self: InboxEntry, other: object) -> Any:
        nonlocal comparisons
        comparisons += 1
        return equal(self, other)

    monkeypatch.setattr(InboxEntry, "__eq__", counting_eq)
    for entry in reversed(drained):  # the newest first: they go back in their order
        inbox.requeue_front(entry)
    assert comparisons <= 2 * len(drained)
    comparisons = 0
    with pytest.raises(ValueError, match="already pending"):
        inbox.requeue_front(drained[500])
    assert comparisons <= 2
    monkeypatch.undo()
    assert inbox.snapshot("s") == drained + later


# -- sessions() -----------------------------------------------------------------------------------


class UntouchableRecords(dict[str, Any]):
    """A session table that fails the test if anything walks it (lookups are fine)."""

    def _walked(self, *args: object) -> NoReturn:
        raise AssertionError("every session's record was visited")

    __iter__ = keys = values = items = _walked  # type: ignore[assignment]


def test_sessions_visits_only_the_sessions_with_pending_entries(inbox: Inbox) -> None:
    # White-box: the store's table of session records is replaced by one that
    # cannot be walked. Ten thousand sessions were used and drained; three
    # hold entries. sessions() answers from those three, and a drained
    # session keeps its counter: its next push continues its sequence.
    for n in range(10_000):
        inbox.push(f"drained-{n}", "k", "c", "test")
        inbox.drain(f"drained-{n}")
    pending = ["a", "b", "c"]
    for session_id in pending:
        inbox.push(session_id, "k", "c", "test")
    store = inbox._store
    store._sessions = UntouchableRecords(store._sessions)  # type: ignore[attr-defined]
    assert sorted(inbox.sessions()) == pending
    assert inbox.push("drained-1234", "k", "c", "test").sequence == 2
    assert sorted(inbox.sessions()) == [*pending, "drained-1234"]
    inbox.drain("drained-1234")
    assert sorted(inbox.sessions()) == pending
