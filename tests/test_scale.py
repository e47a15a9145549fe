"""What an operation costs does not grow with what it need not touch.

Counted in work, never in time: predicate calls, entry comparisons, waiters
woken, session records visited. A selective take under a steady producer
judges each entry once and returns; a push to a session with a parked
``wait_for`` judges nothing old again; a push does nothing for waiters already
woken; ``requeue_front`` compares a bounded number of entries; ``sessions()``
visits only the sessions with something pending. Some tests are white-box
(they spy on a private function or replace a private table); each says so.
(One thread-safe wake per loop per push: test_cross_thread.py.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from _support import contents, push_many

import harn_inbox._lot
from harn_inbox import Inbox, InboxEntry, ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from conftest import Backend

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
