"""Producer controls: reserved sequences, dedupe and coalesce keys, expiry, revoke.

Each control is counted in `Inbox.statistics` and said in telemetry; the
dedupe window and expiry run on the inbox's clock (a `ManualClock` here), so
no verdict depends on wall time. The threaded tests line their pushes up on a
barrier and decide by what the inbox holds afterwards, never by timing.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import TYPE_CHECKING, Any, TypeVar

import hypothesis
import pytest
from _support import events, wanted
from hypothesis import strategies as st

from harn_inbox import Inbox, InboxClosed, InboxFull, ManualClock

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from _support import ThreadCall
    from conftest import Backend
    from structlog.typing import EventDict

    from harn_inbox import InboxEntry

T = TypeVar("T")

DEFAULT_WINDOW = 600


def nudge(inbox: Inbox, content: str = "x", session_id: str = "s", **options: Any) -> InboxEntry:
    return inbox.push(session_id, "tool_result", content, "worker", **options)


def contents(inbox: Inbox, session_id: str = "s") -> list[str]:
    return [entry.content for entry in inbox.snapshot(session_id)]


def is_parked(inbox: Inbox, session_id: str) -> bool:
    """Whether a wait on *session_id* is parked, owed a wake by the next notify.

    White-box (the parking lot's map): a notify takes every waiter of its
    session out of it before waking them, so a wait still in it after a call
    was not woken by that call, whether or not it would have parked again.
    """
    return session_id in inbox._lot.parked


def run_with_parked_wait(
    backend: Backend, inbox: Inbox, change: Callable[[], object]
) -> list[InboxEntry]:
    """Park a ``wait_for`` on session "s", make *change*, see that it woke nobody, end the wait."""

    async def main() -> list[InboxEntry]:
        async with backend.parked(inbox, inbox.wait_for, "s", wanted) as waiter:
            assert is_parked(inbox, "s")
            change()
            assert is_parked(inbox, "s"), "the change woke the wait"
            await backend.turns()
            assert not waiter.finished
            inbox.push("s", "wanted", "wanted: ends the wait", "test")
        result: list[InboxEntry] = waiter.result
        return result

    return backend.run(main)


def push_at_once_from_threads(
    run_in_thread: Callable[..., ThreadCall], count: int, push: Callable[[int], T]
) -> list[T]:
    """Run ``push(i)`` for i in range(*count*), each in its own thread, released together."""
    barrier = threading.Barrier(count)

    def pusher(index: int) -> T:
        barrier.wait()
        return push(index)

    threads = [run_in_thread(pusher, index) for index in range(count)]
    return [thread.outcome() for thread in threads]


# -- reserve_sequence ----------------------------------------------------------------------------


def test_reserve_sequence_takes_the_next_number_and_queues_nothing(inbox: Inbox) -> None:
    assert nudge(inbox, "a").sequence == 1
    assert inbox.reserve_sequence("s") == 2
    assert inbox.reserve_sequence("s") == 3
    assert nudge(inbox, "b").sequence == 4
    assert [entry.sequence for entry in inbox.snapshot("s")] == [1, 4]
    stats = inbox.statistics("s")
    assert (stats.pending, stats.last_sequence, stats.reserved) == (2, 4, 2)


def test_reserve_sequence_of_an_unknown_session_starts_at_one(inbox: Inbox) -> None:
    assert inbox.reserve_sequence("new") == 1
    assert inbox.pending_count("new") == 0
    assert inbox.sessions() == []


@hypothesis.given(reserving=st.lists(st.booleans(), max_size=30))
def test_issued_sequences_stay_gapless_and_pending_ones_skip_the_reserved(
    reserving: list[bool],
) -> None:
    with Inbox(clock=ManualClock()) as inbox:
        issued = [
            inbox.reserve_sequence("s") if reserve else nudge(inbox).sequence
            for reserve in reserving
        ]
        assert issued == list(range(1, len(reserving) + 1))
        pushed = [
            sequence for sequence, reserve in zip(issued, reserving, strict=True) if not reserve
        ]
        assert [entry.sequence for entry in inbox.snapshot("s")] == pushed
        assert inbox.statistics("s").reserved == sum(reserving)


def test_reserve_sequence_restarts_after_clear_session(inbox: Inbox) -> None:
    nudge(inbox)
    inbox.reserve_sequence("s")
    inbox.clear_session("s")
    assert inbox.statistics("s").reserved == 0
    assert inbox.reserve_sequence("s") == 1
    assert nudge(inbox).sequence == 2


def test_reserve_sequence_after_close_raises_and_takes_nothing(inbox: Inbox) -> None:
    nudge(inbox)
    inbox.close()
    with pytest.raises(InboxClosed):
        inbox.reserve_sequence("s")
    stats = inbox.statistics("s")
    assert (stats.last_sequence, stats.reserved) == (1, 0)


# -- dedupe_key ----------------------------------------------------------------------------------


@pytest.mark.parametrize("first_still_pending", [True, False], ids=["pending", "taken"])
def test_duplicate_within_the_window_returns_the_first_entry_and_stores_nothing(
    inbox: Inbox, clock: ManualClock, first_still_pending: bool
) -> None:
    first = nudge(inbox, "first", dedupe_key="call-7")
    if not first_still_pending:
        assert inbox.drain("s") == [first]
    clock.advance(DEFAULT_WINDOW - 0.001)
    again = nudge(inbox, "retried", dedupe_key="call-7", payload={"other": 1})
    assert again is first
    assert inbox.snapshot("s") == ([first] if first_still_pending else [])
    stats = inbox.statistics("s")
    assert (stats.last_sequence, stats.duplicates) == (1, 1)


@pytest.mark.parametrize("first_still_pending", [True, False], ids=["pending", "taken"])
@pytest.mark.parametrize("window", [None, 30, 0.5], ids=["default", "30s", "half-a-second"])
def test_dedupe_key_past_the_window_pushes_a_new_entry(
    clock: ManualClock, first_still_pending: bool, window: float | None
) -> None:
    seconds = DEFAULT_WINDOW if window is None else window
    with (
        Inbox(clock=clock) if window is None else Inbox(clock=clock, dedupe_window=window) as inbox
    ):
        first = nudge(inbox, "first", dedupe_key="call-7")
        if not first_still_pending:
            inbox.drain("s")
        clock.advance(seconds - 0.001)
        assert nudge(inbox, "within", dedupe_key="call-7") is first
        clock.advance(0.001)
        past = nudge(inbox, "past", dedupe_key="call-7")
        assert past.sequence == 2
        assert contents(inbox) == (["first", "past"] if first_still_pending else ["past"])
        # The new entry opens a window of its own.
        assert nudge(inbox, "again", dedupe_key="call-7") is past
        assert inbox.statistics("s").duplicates == 2


def test_dedupe_keys_are_per_session(inbox: Inbox) -> None:
    one = nudge(inbox, session_id="a", dedupe_key="k")
    other = nudge(inbox, session_id="b", dedupe_key="k")
    assert other is not one
    assert (inbox.pending_count("a"), inbox.pending_count("b")) == (1, 1)


def test_clear_session_forgets_dedupe_keys(inbox: Inbox) -> None:
    nudge(inbox, "first", dedupe_key="k")
    inbox.clear_session("s")
    again = nudge(inbox, "after the clear", dedupe_key="k")
    assert again.content == "after the clear"
    assert inbox.statistics("s").duplicates == 0


def test_a_refused_push_records_no_dedupe_key(clock: ManualClock) -> None:
    with Inbox(clock=clock, max_pending=1) as inbox:
        nudge(inbox, "fills the session")
        with pytest.raises(InboxFull):
            nudge(inbox, "refused", dedupe_key="k")
        inbox.drain("s")
        assert nudge(inbox, "accepted", dedupe_key="k").content == "accepted"


def test_a_duplicate_of_a_full_session_returns_the_first_entry(clock: ManualClock) -> None:
    with Inbox(clock=clock, max_pending=1) as inbox:
        first = nudge(inbox, dedupe_key="k")
        assert nudge(inbox, dedupe_key="k") is first


def test_a_duplicate_wakes_nobody(backend: Backend, inbox: Inbox) -> None:
    first = nudge(inbox, dedupe_key="k")
    inbox.drain("s")
    duplicates: list[InboxEntry] = []
    run_with_parked_wait(backend, inbox, lambda: duplicates.append(nudge(inbox, dedupe_key="k")))
    assert duplicates == [first]
    assert inbox.statistics("s").duplicates == 1


def test_a_duplicate_is_logged_with_outcome_duplicate(logged: Inbox, logs: list[EventDict]) -> None:
    first = nudge(logged, dedupe_key="k")
    nudge(logged, dedupe_key="k")
    plain, duplicate = events(logs, "inbox.push")
    assert "outcome" not in plain
    assert duplicate["outcome"] == "duplicate"
    assert duplicate["sequence"] == first.sequence
    assert duplicate["session_id"] == "s"
    nudge(logged, dedupe_key="k")
    assert events(logs, "inbox.push")[-1]["duplicates_total"] == 2  # what statistics() counts


def test_dedupe_keys_held_stay_bounded_as_the_window_moves_on(clock: ManualClock) -> None:
    window, pushes_per_second = 10, 4
    with Inbox(clock=clock, dedupe_window=window) as inbox:
        for index in range(2_000):
            nudge(inbox, dedupe_key=f"call-{index}")
            inbox.drain("s")
            clock.advance(1 / pushes_per_second)
            # White-box: the keys the session holds (a key per push still in its window).
            extras = inbox._store._sessions["s"].extras  # type: ignore[attr-defined]
            assert len(extras.dedupe) <= window * pushes_per_second + 1
            assert len(extras.dedupe_order) <= window * pushes_per_second + 1
        assert inbox.statistics("s").duplicates == 0


def test_dedupe_keys_held_stay_bounded_over_many_sessions(clock: ManualClock) -> None:
    # A session that sees no keyed push again must not keep its keys (and the
    # first entries they hold) for ever: each keyed push, into any session,
    # forgets the keys whose window has closed in every session.
    window, pushes_per_second = 10, 4
    with Inbox(clock=clock, dedupe_window=window) as inbox:
        for index in range(2_000):
            session_id = f"session-{index}"
            inbox.push(session_id, "tool_result", "ok", "worker", dedupe_key="call")
            inbox.drain(session_id)
            clock.advance(1 / pushes_per_second)
            # White-box: the keys held over every session (one per push in the window).
            sessions = inbox._store._sessions.values()  # type: ignore[attr-defined]
            held = sum(len(state.extras.dedupe) for state in sessions if state.extras)
            assert held <= window * pushes_per_second + 1


def test_threads_pushing_one_dedupe_key_at_once_store_one_entry(
    inbox: Inbox, run_in_thread: Callable[..., ThreadCall]
) -> None:
    count = 16
    returned = push_at_once_from_threads(
        run_in_thread, count, lambda index: nudge(inbox, f"try-{index}", dedupe_key="k")
    )
    (stored,) = inbox.snapshot("s")
    assert all(entry is stored for entry in returned)
    stats = inbox.statistics("s")
    assert (stats.last_sequence, stats.duplicates) == (1, count - 1)


# -- coalesce_key --------------------------------------------------------------------------------


def test_coalescing_push_replaces_the_pending_entry_of_its_key(inbox: Inbox) -> None:
    old = nudge(inbox, "progress 10%", coalesce_key="job-1")
    other = nudge(inbox, "unrelated")
    new = nudge(inbox, "progress 50%", coalesce_key="job-1")
    assert new.sequence == 3
    assert inbox.snapshot("s") == [other, new]
    assert inbox.revoke("s", old.sequence) is None  # gone, not just moved
    stats = inbox.statistics("s")
    assert (stats.pending, stats.coalesced, stats.last_sequence) == (2, 1, 3)


def test_coalesce_keys_are_per_key_and_per_session(inbox: Inbox) -> None:
    nudge(inbox, "a1", coalesce_key="a")
    nudge(inbox, "b1", coalesce_key="b")
    nudge(inbox, "a1 elsewhere", session_id="t", coalesce_key="a")
    nudge(inbox, "a2", coalesce_key="a")
    assert contents(inbox) == ["b1", "a2"]
    assert contents(inbox, "t") == ["a1 elsewhere"]


@pytest.mark.parametrize(
    "take",
    [lambda inbox: inbox.drain("s"), lambda inbox: inbox.revoke("s", 1)],
    ids=["drained", "revoked"],
)
def test_coalescing_after_the_entry_was_taken_just_appends(
    inbox: Inbox, take: Callable[[Inbox], object]
) -> None:
    nudge(inbox, "v1", coalesce_key="k")
    take(inbox)
    nudge(inbox, "v2", coalesce_key="k")
    assert contents(inbox) == ["v2"]
    assert inbox.statistics("s").coalesced == 0


def test_coalescing_is_logged_with_outcome_coalesced(logged: Inbox, logs: list[EventDict]) -> None:
    old = nudge(logged, coalesce_key="k")
    new = nudge(logged, coalesce_key="k")
    plain, coalesced = events(logs, "inbox.push")
    assert "outcome" not in plain
    assert coalesced["outcome"] == "coalesced"
    assert (coalesced["sequence"], coalesced["coalesced_sequence"]) == (new.sequence, old.sequence)
    assert coalesced["coalesced_total"] == 1


def test_coalescing_into_a_full_session_that_rejects_replaces(clock: ManualClock) -> None:
    with Inbox(clock=clock, max_pending=2, overflow="reject") as inbox:
        nudge(inbox, "old", coalesce_key="k")
        nudge(inbox, "other")
        nudge(inbox, "new", coalesce_key="k")
        assert contents(inbox) == ["other", "new"]
        assert inbox.statistics("s").dropped == 0


def test_threads_coalescing_leave_one_pending_entry_per_key(
    inbox: Inbox, run_in_thread: Callable[..., ThreadCall]
) -> None:
    threads, pushes, keys = 8, 50, 3

    def pusher(thread: int) -> list[InboxEntry]:
        return [
            nudge(inbox, key, coalesce_key=key)
            for key in (f"k{(thread + index) % keys}" for index in range(pushes))
        ]

    pushed = list(itertools.chain(*push_at_once_from_threads(run_in_thread, threads, pusher)))
    # Latest wins: what is pending is the last push of each key, in push order.
    last_of_key = {entry.content: entry for entry in sorted(pushed, key=lambda e: e.sequence)}
    assert inbox.snapshot("s") == sorted(last_of_key.values(), key=lambda e: e.sequence)
    assert len(last_of_key) == keys
    stats = inbox.statistics("s")
    assert stats.last_sequence == threads * pushes
    assert stats.coalesced == threads * pushes - keys


# -- expires_in ----------------------------------------------------------------------------------


def test_an_entry_is_pending_until_it_expires(inbox: Inbox, clock: ManualClock) -> None:
    entry = nudge(inbox, "short-lived", expires_in=5)
    lasting = nudge(inbox, "lasting", expires_in=float("inf"))
    clock.advance(4.999)
    assert inbox.snapshot("s") == [entry, lasting]
    clock.advance(0.001)
    assert inbox.snapshot("s") == [lasting]
    clock.advance(10**9)
    assert inbox.snapshot("s") == [lasting]


SYNC_READERS: dict[str, Callable[[Inbox], object]] = {
    "drain": lambda inbox: inbox.drain("s"),
    "drain_where": lambda inbox: inbox.drain_where("s", lambda entry: True),
    "snapshot": lambda inbox: inbox.snapshot("s"),
    "pending_count": lambda inbox: inbox.pending_count("s"),
    "sessions": lambda inbox: inbox.sessions(),
    "claim": lambda inbox: _claimed(inbox),
    "wait_sync": lambda inbox: inbox.wait_sync("s", timeout=0),
    "wait_any_sync": lambda inbox: inbox.wait_any_sync(["s"], timeout=0),
}

#: What a reader returns for a session with nothing pending, where that is not [].
NOTHING = {
    "pending_count": 0,
    "wait_sync": False,
    "wait_any_sync": None,
    "wait": False,
    "wait_any": None,
}


def _claimed(inbox: Inbox) -> list[InboxEntry]:
    with inbox.claim("s") as entries:
        return entries


@pytest.mark.parametrize("reader", SYNC_READERS)
def test_an_expired_entry_is_never_returned(inbox: Inbox, clock: ManualClock, reader: str) -> None:
    nudge(inbox, expires_in=1)
    clock.advance(1)
    assert SYNC_READERS[reader](inbox) == NOTHING.get(reader, [])
    assert inbox.statistics("s").expired == 1


ASYNC_READERS: dict[str, Callable[[Inbox], Awaitable[object]]] = {
    "wait_for": lambda inbox: inbox.wait_for("s", lambda entry: True, timeout=0),
    "wait": lambda inbox: inbox.wait("s", timeout=0),
    "wait_any": lambda inbox: inbox.wait_any(["s"], timeout=0),
}


@pytest.mark.parametrize("reader", ASYNC_READERS)
def test_an_expired_entry_is_never_returned_by_a_wait(
    backend: Backend, inbox: Inbox, clock: ManualClock, reader: str
) -> None:
    nudge(inbox, expires_in=1)
    clock.advance(1)
    assert backend.run(ASYNC_READERS[reader], inbox) == NOTHING.get(reader, [])
    assert inbox.statistics("s").expired == 1


def test_expiry_is_counted_once_per_entry(inbox: Inbox, clock: ManualClock) -> None:
    for index in range(3):
        nudge(inbox, f"e{index}", expires_in=1 + index)
    kept = nudge(inbox, "kept")
    clock.advance(2)
    for _ in range(3):  # looking again finds nothing more to count
        assert contents(inbox) == ["e2", "kept"]
        assert inbox.statistics("s").expired == 2
    clock.advance(1)
    assert inbox.drain("s") == [kept]
    assert inbox.statistics("s").expired == 3


def test_an_entry_requeued_by_hand_no_longer_expires(inbox: Inbox, clock: ManualClock) -> None:
    # requeue_front puts back the entry as it is, without its expiry: the
    # expiry it had when a selective claim took it must not catch it later
    # (found by the conformance kit: it expired, and counted twice).
    entry = nudge(inbox, expires_in=1)
    with inbox.claim("s", lambda entry: True) as taken:
        assert taken == [entry]
        inbox.requeue_front(entry)
    clock.advance(2)
    assert inbox.snapshot("s") == [entry]
    assert inbox.statistics("s").expired == 0


def test_expiry_is_logged_as_an_inbox_expired_event(
    logged: Inbox, logs: list[EventDict], clock: ManualClock
) -> None:
    entry = nudge(logged, expires_in=1)
    clock.advance(1)
    assert logged.pending_count("s") == 0
    (expired,) = events(logs, "inbox.expired")
    assert expired["log_level"] == "info"
    assert (expired["session_id"], expired["sequence"]) == ("s", entry.sequence)
    assert (expired["kind"], expired["source"]) == (entry.kind, entry.source)
    assert expired["expired_total"] == 1


def test_revoke_and_reserve_sequence_are_logged_with_their_totals(
    logged: Inbox, logs: list[EventDict]
) -> None:
    logged.reserve_sequence("s")
    logged.reserve_sequence("s")
    entry = nudge(logged)
    logged.revoke("s", entry.sequence)
    logged.revoke("s", entry.sequence)  # not pending any more: not counted
    assert [event["reserved_total"] for event in events(logs, "inbox.reserve_sequence")] == [1, 2]
    revokes = events(logs, "inbox.revoke")
    assert [(event["revoked"], event["revoked_total"]) for event in revokes] == [
        (True, 1),
        (False, 1),
    ]


def test_expiry_without_a_logger_goes_to_the_standard_logging_logger(
    inbox: Inbox, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    entry = nudge(inbox, expires_in=1)
    clock.advance(1)
    with caplog.at_level(logging.INFO, logger="harn_inbox"):
        assert inbox.snapshot("s") == []
    (record,) = [record for record in caplog.records if record.name == "harn_inbox"]
    assert record.levelno == logging.INFO
    assert "expired" in record.getMessage()
    assert f"'sequence': {entry.sequence}" in record.getMessage()


WAITS: dict[str, Callable[[Inbox], Awaitable[object]]] = {
    "wait": lambda inbox: inbox.wait("s"),
    "wait_for": lambda inbox: inbox.wait_for("s", lambda entry: True),
    "wait_any": lambda inbox: inbox.wait_any(["s"]),
}


@pytest.mark.parametrize("wait", WAITS)
def test_a_wait_woken_by_an_entry_that_expires_before_it_looks_parks_again(
    backend: Backend, inbox: Inbox, clock: ManualClock, wait: str
) -> None:
    async def main() -> tuple[object, InboxEntry]:
        async with backend.parked(inbox, WAITS[wait], inbox, session_id="s") as waiter:
            nudge(inbox, "short-lived", expires_in=1)  # wakes the wait ...
            clock.advance(1)  # ... and expires before it runs to look
            await backend.until(lambda: is_parked(inbox, "s"))
            await backend.turns()
            assert not waiter.finished
            lasting = nudge(inbox, "lasting")
        return waiter.result, lasting

    result, lasting = backend.run(main)
    assert result == {"wait": True, "wait_for": [lasting], "wait_any": "s"}[wait]
    assert inbox.statistics("s").expired == 1


# -- revoke --------------------------------------------------------------------------------------


@pytest.mark.parametrize("requeued", [False, True], ids=["pushed", "requeued"])
def test_revoke_returns_the_pending_entry_and_the_others_keep_their_order(
    inbox: Inbox, requeued: bool
) -> None:
    entries = [nudge(inbox, content) for content in "abcd"]
    if requeued:
        inbox.drain("s")
        for entry in reversed(entries):
            inbox.requeue_front(entry)
    assert inbox.revoke("s", 2) is entries[1]
    assert inbox.snapshot("s") == [entries[0], entries[2], entries[3]]
    assert inbox.revoke("s", 4) is entries[3]
    assert inbox.snapshot("s") == [entries[0], entries[2]]
    assert inbox.statistics("s").revoked == 2


def taken(inbox: Inbox, clock: ManualClock) -> int:
    return inbox.drain("s")[0].sequence


def revoked(inbox: Inbox, clock: ManualClock) -> int:
    assert inbox.revoke("s", 1) is not None
    return 1


def never_pushed(inbox: Inbox, clock: ManualClock) -> int:
    return 99


def reserved(inbox: Inbox, clock: ManualClock) -> int:
    return inbox.reserve_sequence("s")


def expired(inbox: Inbox, clock: ManualClock) -> int:
    clock.advance(1)
    return 1


def coalesced(inbox: Inbox, clock: ManualClock) -> int:
    nudge(inbox, "newer", coalesce_key="k")
    return 1


@pytest.mark.parametrize(
    "not_pending",
    [taken, revoked, never_pushed, reserved, expired, coalesced],
    ids=lambda how: how.__name__,
)
def test_revoke_of_a_sequence_not_pending_returns_none(
    inbox: Inbox, clock: ManualClock, not_pending: Callable[[Inbox, ManualClock], int]
) -> None:
    nudge(inbox, "first", expires_in=1, coalesce_key="k")  # sequence 1
    sequence = not_pending(inbox, clock)
    before = inbox.statistics("s")
    assert inbox.revoke("s", sequence) is None
    assert inbox.statistics("s") == before


def test_revoke_of_an_unknown_session_returns_none(inbox: Inbox) -> None:
    assert inbox.revoke("nobody", 1) is None
    assert inbox.statistics("nobody").revoked == 0


def test_revoke_wakes_nobody(backend: Backend, inbox: Inbox) -> None:
    unwanted = nudge(inbox, "not what the wait wants")
    revoked: list[object] = []
    result = run_with_parked_wait(
        backend, inbox, lambda: revoked.append(inbox.revoke("s", unwanted.sequence))
    )
    assert revoked == [unwanted]
    assert [entry.content for entry in result] == ["wanted: ends the wait"]
