"""The synchronous core of Inbox: push, drain, drain_where, requeue_front, clear_session."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import pytest
from _support import contents, parked_wait_sync, push_many, raising_after, run_bounded

from harn_inbox import Inbox, InboxEntry, ManualClock, SessionStatistics
from harn_inbox.stores import MemoryStore

if TYPE_CHECKING:
    from collections.abc import Callable

MAX_SEQUENCE = 2**64 - 1

State = tuple[list[str], dict[str, list[InboxEntry]], dict[str, int]]


def state_of(inbox: Inbox) -> State:
    """Everything pending and waiting, per session: compare it before and after an operation."""
    sessions = sorted(inbox.sessions())
    return (
        sessions,
        {session_id: inbox.snapshot(session_id) for session_id in sessions},
        {session_id: inbox.waiter_count(session_id) for session_id in sessions},
    )


# -- Construction --------------------------------------------------------------------------------


def test_inbox_arguments_are_keyword_only(clock: ManualClock) -> None:
    with pytest.raises(TypeError):
        Inbox(clock)  # type: ignore[misc]


def test_inboxes_share_nothing(clock: ManualClock) -> None:
    one, two = Inbox(clock=clock), Inbox(clock=clock)
    push_many(one, "s", 3)
    assert two.push("s", "k", "c", "src").sequence == 1
    assert [entry.sequence for entry in one.drain("s")] == [1, 2, 3]
    assert two.pending_count("s") == 1
    two.clear_session("s")
    assert one.push("s", "k", "c", "src").sequence == 4
    assert two.push("s", "k", "c", "src").sequence == 1
    assert one.sessions() == two.sessions() == ["s"]
    assert one.snapshot("s") != two.snapshot("s")


def test_new_inbox_is_empty(inbox: Inbox) -> None:
    assert inbox.sessions() == []
    assert inbox.pending_count("s") == 0
    assert inbox.snapshot("s") == []
    assert inbox.drain("s") == []
    assert inbox.waiter_count("s") == 0


# -- The store -----------------------------------------------------------------------------------


def test_an_inbox_keeps_its_sessions_in_the_store_it_is_given(clock: ManualClock) -> None:
    store = MemoryStore()
    inbox = Inbox(store=store, clock=clock)
    entry = inbox.push("s", "k", "c", "src")
    assert repr(store) in repr(inbox)
    assert "sessions=1 with_pending=1" in repr(store)
    assert inbox.drain("s") == [entry]
    assert "sessions=1 with_pending=0" in repr(store)


def test_a_store_serves_one_inbox(clock: ManualClock) -> None:
    store = MemoryStore()
    first = Inbox(store=store, clock=clock)
    with pytest.raises(ValueError, match=r"^store is already used by another Inbox"):
        Inbox(store=store, clock=clock)
    assert first.push("s", "k", "c", "src").sequence == 1  # the first inbox is unharmed


def test_an_inbox_refused_for_another_argument_leaves_its_store_free() -> None:
    store = MemoryStore()
    with pytest.raises(ValueError, match="max_pending"):
        Inbox(store=store, max_pending=0)
    assert Inbox(store=store).push("s", "k", "c", "src").sequence == 1


@pytest.mark.parametrize("store", [object(), MemoryStore, {}, "memory", ManualClock()])
def test_something_that_is_not_a_store_is_refused_naming_store(store: object) -> None:
    with pytest.raises(TypeError, match=r"^store must be a store instance"):
        Inbox(store=store)  # type: ignore[arg-type]


# -- push ------------------------------------------------------------------------------------------


def test_push_returns_the_stamped_entry(inbox: Inbox, clock: ManualClock) -> None:
    entry = inbox.push("session-a", "tool_result", "payload", "worker-1")
    assert entry == InboxEntry(1, "session-a", "tool_result", "payload", "worker-1", 1_000_000)
    assert inbox.snapshot("session-a") == [entry]


def test_sequence_starts_at_one_and_rises_by_one_per_push(inbox: Inbox) -> None:
    entries = push_many(inbox, "s", 5)
    assert [entry.sequence for entry in entries] == [1, 2, 3, 4, 5]


def test_sequences_are_per_session(inbox: Inbox) -> None:
    a1 = inbox.push("a", "k", "c", "src")
    b1 = inbox.push("b", "k", "c", "src")
    a2 = inbox.push("a", "k", "c", "src")
    b2 = inbox.push("b", "k", "c", "src")
    b3 = inbox.push("b", "k", "c", "src")
    assert [a1.sequence, a2.sequence] == [1, 2]
    assert [b1.sequence, b2.sequence, b3.sequence] == [1, 2, 3]


def test_drain_does_not_restart_the_sequence(inbox: Inbox) -> None:
    push_many(inbox, "s", 3)
    inbox.drain("s")
    assert inbox.push("s", "k", "c", "src").sequence == 4
    inbox.drain_where("s", lambda entry: True)
    assert inbox.push("s", "k", "c", "src").sequence == 5


def test_empty_string_is_a_session_like_any_other(inbox: Inbox) -> None:
    first = inbox.push("", "k", "c", "src")
    second = inbox.push("", "k", "c", "src")
    assert [first.sequence, second.sequence] == [1, 2]
    assert inbox.sessions() == [""]
    assert inbox.pending_count("") == 2
    assert inbox.drain("") == [first, second]


def set_last_sequence(inbox: Inbox, session_id: str, sequence: int) -> None:
    # No public way to reach 2**64-1 pushes: set the session's counter directly.
    inbox.push(session_id, "k", "c", "src")
    inbox.drain(session_id)
    inbox._store._sessions[session_id].last_sequence = sequence  # type: ignore[attr-defined]


def test_sequence_reaches_u64_max_then_wraps_to_one_never_zero(inbox: Inbox) -> None:
    set_last_sequence(inbox, "s", MAX_SEQUENCE - 1)
    top = inbox.push("s", "k", "c", "src")
    wrapped = inbox.push("s", "k", "c", "src")
    after = inbox.push("s", "k", "c", "src")
    assert [top.sequence, wrapped.sequence, after.sequence] == [MAX_SEQUENCE, 1, 2]
    assert inbox.drain("s") == [top, wrapped, after]  # order is push order, not sequence order


@pytest.mark.parametrize("last", [2**30 - 2, 2**62 - 1, 2**63 - 1])
def test_sequence_counts_on_past_machine_word_boundaries(inbox: Inbox, last: int) -> None:
    # push tests for the wrap cheaply while sequences are small ints: no step
    # may be skipped or wrapped early where that test stops deciding.
    set_last_sequence(inbox, "s", last)
    sequences = [inbox.push("s", "k", "c", "src").sequence for _ in range(3)]
    assert sequences == [last + 1, last + 2, last + 3]


def test_wrap_in_one_session_leaves_others_alone(inbox: Inbox) -> None:
    inbox.push("other", "k", "c", "src")
    set_last_sequence(inbox, "s", MAX_SEQUENCE)
    assert inbox.push("s", "k", "c", "src").sequence == 1
    assert inbox.push("other", "k", "c", "src").sequence == 2


# -- drain -----------------------------------------------------------------------------------------


def test_drain_returns_everything_in_push_order_and_empties_the_session(inbox: Inbox) -> None:
    entries = push_many(inbox, "s", 4)
    assert inbox.drain("s") == entries
    assert inbox.pending_count("s") == 0
    assert inbox.drain("s") == []
    assert "s" not in inbox.sessions()


def test_drain_takes_only_its_session(inbox: Inbox) -> None:
    push_many(inbox, "a", 2)
    others = push_many(inbox, "b", 3)
    inbox.drain("a")
    assert inbox.snapshot("b") == others
    assert inbox.sessions() == ["b"]


def test_mutating_a_drained_list_does_not_reach_the_inbox(inbox: Inbox) -> None:
    push_many(inbox, "s", 2)
    drained = inbox.drain("s")
    drained.append(InboxEntry(99, "s", "k", "c", "src", 0))
    later = inbox.push("s", "k", "c", "src")
    assert inbox.snapshot("s") == [later]


# -- drain_where -----------------------------------------------------------------------------------


def test_drain_where_takes_matching_in_order_and_keeps_the_rest_in_order(inbox: Inbox) -> None:
    entries = [inbox.push("s", kind, f"c{n}", "src") for n, kind in enumerate("abaabba")]
    taken = inbox.drain_where("s", lambda entry: entry.kind == "a")
    assert taken == [entries[0], entries[2], entries[3], entries[6]]
    assert inbox.snapshot("s") == [entries[1], entries[4], entries[5]]


def test_drain_where_with_no_match_changes_nothing(inbox: Inbox) -> None:
    entries = push_many(inbox, "s", 3)
    assert inbox.drain_where("s", lambda entry: False) == []
    assert inbox.snapshot("s") == entries
    assert inbox.sessions() == ["s"]


def test_drain_where_taking_everything_leaves_the_session_empty(inbox: Inbox) -> None:
    entries = push_many(inbox, "s", 3)
    assert inbox.drain_where("s", lambda entry: True) == entries
    assert inbox.sessions() == []
    assert inbox.pending_count("s") == 0


def test_drain_where_on_an_empty_session_never_calls_the_predicate(inbox: Inbox) -> None:
    calls: list[InboxEntry] = []
    assert inbox.drain_where("s", calls.append) == []
    assert calls == []


def test_drain_where_asks_the_predicate_once_per_entry_in_order(inbox: Inbox) -> None:
    entries = push_many(inbox, "s", 5)
    seen: list[InboxEntry] = []

    def predicate(entry: InboxEntry) -> bool:
        seen.append(entry)
        return entry.sequence % 2 == 0

    inbox.drain_where("s", predicate)
    assert seen == entries


def test_drain_where_goes_by_truthiness(inbox: Inbox) -> None:
    entries = push_many(inbox, "s", 4)
    verdicts: dict[int, object] = {1: "yes", 2: "", 3: [0], 4: None}
    assert inbox.drain_where("s", lambda entry: verdicts[entry.sequence]) == [
        entries[0],
        entries[2],
    ]


def test_drain_where_takes_only_its_session(inbox: Inbox) -> None:
    other = push_many(inbox, "other", 2)
    push_many(inbox, "s", 2)
    inbox.drain_where("s", lambda entry: True)
    assert inbox.snapshot("other") == other


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, StopIteration])
@pytest.mark.parametrize("fails_at", range(5))
def test_predicate_error_propagates_and_leaves_the_inbox_exactly_as_before(
    inbox: Inbox, fails_at: int, error: type[Exception]
) -> None:
    # (A StopIteration, say from next() on an exhausted generator by mistake,
    # must propagate too, not end the judging as if every entry had been seen.)
    entries = push_many(inbox, "s", 5)
    push_many(inbox, "other", 2)
    before = state_of(inbox)
    with pytest.raises(error):  # after accepting the entries before: it would take them
        inbox.drain_where("s", raising_after(fails_at, error))
    assert state_of(inbox) == before
    assert inbox.drain_where("s", lambda entry: entry.sequence % 2 == 0) == entries[1::2]
    assert inbox.snapshot("s") == entries[0::2]
    assert inbox.push("s", "k", "c", "src").sequence == 6


def test_predicate_that_pushes_then_raises_keeps_both_entries(inbox: Inbox) -> None:
    first, second = push_many(inbox, "s", 2)
    pushed: list[InboxEntry] = []

    def predicate(entry: InboxEntry) -> bool:
        if not pushed:
            pushed.append(inbox.push("s", "k", "pushed by the predicate", "predicate"))
            return True
        raise Boom("on the second entry")

    with pytest.raises(Boom):
        inbox.drain_where("s", predicate)
    assert inbox.snapshot("s") == [first, second, *pushed]


def test_predicate_may_call_the_inbox_without_deadlock(inbox: Inbox) -> None:
    entries = push_many(inbox, "s", 3)
    observed: list[tuple[int, int, int, bool]] = []

    def predicate(entry: InboxEntry) -> bool:
        observed.append(
            (
                inbox.pending_count("s"),
                len(inbox.snapshot("s")),
                inbox.waiter_count("s"),
                "s" in inbox.sessions(),
            )
        )
        inbox.push("log", "seen", str(entry.sequence), "predicate")
        inbox.drain("elsewhere")
        return entry.sequence != 2

    taken = run_bounded(inbox.drain_where, "s", predicate)
    assert taken == [entries[0], entries[2]]
    assert observed == [(3, 3, 0, True)] * 3  # nothing is taken until every entry is judged
    assert inbox.snapshot("s") == [entries[1]]
    assert contents(inbox.drain("log")) == ["1", "2", "3"]


def test_entry_pushed_by_the_predicate_to_its_session_is_left_pending_not_lost(
    inbox: Inbox,
) -> None:
    entries = push_many(inbox, "s", 2)
    pushed: list[InboxEntry] = []

    def predicate(entry: InboxEntry) -> bool:
        if not pushed:
            pushed.append(inbox.push("s", "late", "c", "predicate"))
        return entry.kind != "late"

    taken = run_bounded(inbox.drain_where, "s", predicate)
    assert taken == entries
    assert inbox.snapshot("s") == pushed
    assert pushed[0].sequence == 3


def test_entries_drained_by_the_predicate_are_not_taken_twice(inbox: Inbox) -> None:
    entries = push_many(inbox, "s", 3)
    drained_inside: list[InboxEntry] = []

    def predicate(entry: InboxEntry) -> bool:
        if not drained_inside:
            drained_inside.extend(inbox.drain("s"))
        return True

    taken = run_bounded(inbox.drain_where, "s", predicate)
    assert drained_inside == entries
    assert taken == []
    assert inbox.sessions() == []


def test_drain_where_judges_each_entry_once_though_the_predicate_requeues_one_ahead(
    inbox: Inbox,
) -> None:
    back = inbox.push("s", "k", "back", "src")
    inbox.drain("s")
    entries = push_many(inbox, "s", 3)
    judged: list[InboxEntry] = []

    def predicate(entry: InboxEntry) -> bool:
        if not judged:
            inbox.requeue_front(back)  # another consumer, as it were
        judged.append(entry)
        return entry is entries[1]

    assert run_bounded(inbox.drain_where, "s", predicate) == [entries[1]]
    assert judged == [*entries, back]
    assert inbox.snapshot("s") == [back, entries[0], entries[2]]


def test_predicate_verdicts_are_judged_without_the_lock_held(inbox: Inbox) -> None:
    # A verdict's truthiness is user code too (a lazy or proxy object): it may call the inbox.
    push_many(inbox, "s", 2)
    lock_held: list[bool] = []

    class Verdict:
        def __init__(self, value: bool) -> None:
            self.value = value

        def __bool__(self) -> bool:
            lock_held.append(inbox._store._mutex.held() or inbox._lot.held())  # type: ignore[attr-defined]
            return self.value

    taken = inbox.drain_where("s", lambda entry: Verdict(entry.sequence == 1))
    assert [entry.sequence for entry in taken] == [1]
    assert lock_held
    assert not any(lock_held)


def test_returned_list_is_the_callers_own(inbox: Inbox) -> None:
    push_many(inbox, "s", 2)
    taken = inbox.drain_where("s", lambda entry: entry.sequence == 1)
    taken.clear()
    assert inbox.pending_count("s") == 1


# -- requeue_front ---------------------------------------------------------------------------------


def test_requeue_front_puts_the_entry_back_at_the_head_unchanged(inbox: Inbox) -> None:
    first, second, third = push_many(inbox, "s", 3)
    taken = inbox.drain_where("s", lambda entry: entry.sequence == 2)
    assert taken == [second]
    inbox.requeue_front(second)
    assert inbox.snapshot("s") == [second, first, third]
    assert inbox.snapshot("s")[0] is second


def test_requeue_front_into_an_empty_session(inbox: Inbox) -> None:
    (entry,) = push_many(inbox, "s", 1)
    inbox.drain("s")
    assert inbox.sessions() == []
    inbox.requeue_front(entry)
    assert inbox.sessions() == ["s"]
    assert inbox.drain("s") == [entry]


def test_requeue_front_keeps_the_sequence_and_the_counter_carries_on(inbox: Inbox) -> None:
    entries = push_many(inbox, "s", 3)
    inbox.drain("s")
    inbox.requeue_front(entries[0])
    assert inbox.push("s", "k", "c", "src").sequence == 4
    assert [entry.sequence for entry in inbox.snapshot("s")] == [1, 4]


def test_requeueing_in_reverse_restores_the_original_order(inbox: Inbox) -> None:
    entries = push_many(inbox, "s", 4)
    drained = inbox.drain("s")
    for entry in reversed(drained):
        inbox.requeue_front(entry)
    assert inbox.snapshot("s") == entries


def test_requeue_front_goes_to_the_entrys_own_session(inbox: Inbox) -> None:
    inbox.push("a", "k", "c", "src")
    (b_entry,) = push_many(inbox, "b", 1)
    inbox.drain("b")
    inbox.requeue_front(b_entry)
    assert inbox.pending_count("a") == 1
    assert inbox.snapshot("b") == [b_entry]


def test_requeue_front_accepts_a_hand_built_entry(inbox: Inbox) -> None:
    entry = InboxEntry(41, "s", "k", "c", "elsewhere", 5)
    inbox.requeue_front(entry)
    assert inbox.snapshot("s") == [entry]
    assert inbox.push("s", "k", "c", "src").sequence == 1  # the counter is not touched


def test_requeue_front_of_an_entry_still_pending_raises_and_changes_nothing(
    inbox: Inbox,
) -> None:
    entries = push_many(inbox, "s", 3)
    before = state_of(inbox)
    with pytest.raises(ValueError, match="already pending"):
        inbox.requeue_front(entries[1])
    assert state_of(inbox) == before


def test_requeue_front_refuses_an_equal_copy_of_a_pending_entry(inbox: Inbox) -> None:
    entries = push_many(inbox, "s", 2)
    before = state_of(inbox)
    copy = InboxEntry.from_dict(entries[1].to_dict())  # say, kept as JSON
    assert copy is not entries[1]
    with pytest.raises(ValueError, match="already pending: session 's' holds an equal entry"):
        inbox.requeue_front(copy)
    assert state_of(inbox) == before


def test_requeue_front_takes_an_entry_that_differs_from_the_pending_one_with_its_sequence(
    inbox: Inbox,
) -> None:
    # Only an equal entry would be delivered twice; one that shares just the
    # sequence is another entry (as after a clear_session, below).
    entries = push_many(inbox, "s", 2)
    other = attrs.evolve(entries[1], content="different")
    inbox.requeue_front(other)
    assert inbox.snapshot("s") == [other, *entries]


def test_requeue_front_twice_raises_the_second_time(inbox: Inbox) -> None:
    (entry,) = push_many(inbox, "s", 1)
    inbox.drain("s")
    inbox.requeue_front(entry)
    with pytest.raises(ValueError, match="already pending"):
        inbox.requeue_front(entry)
    assert inbox.snapshot("s") == [entry]


@pytest.mark.parametrize(
    "not_an_entry",
    [None, "entry", {"sequence": 1}, InboxEntry(1, "s", "k", "c", "src", 0).to_dict()],
)
def test_requeue_front_of_a_non_entry_raises_type_error(inbox: Inbox, not_an_entry: object) -> None:
    push_many(inbox, "s", 1)
    before = state_of(inbox)
    with pytest.raises(TypeError, match=r"^entry must be an InboxEntry, not "):
        inbox.requeue_front(not_an_entry)  # type: ignore[arg-type]
    assert state_of(inbox) == before


# -- clear_session ---------------------------------------------------------------------------------


def test_clear_session_drops_everything_and_says_how_much(inbox: Inbox) -> None:
    push_many(inbox, "s", 4)
    assert inbox.clear_session("s") == 4
    assert inbox.pending_count("s") == 0
    assert inbox.sessions() == []


def test_clear_session_restarts_the_sequence_at_one(inbox: Inbox) -> None:
    push_many(inbox, "s", 4)
    inbox.clear_session("s")
    assert inbox.push("s", "k", "c", "src").sequence == 1


def test_clear_session_of_a_drained_session_drops_nothing_but_restarts_the_sequence(
    inbox: Inbox,
) -> None:
    push_many(inbox, "s", 2)
    inbox.drain("s")
    assert inbox.clear_session("s") == 0
    assert inbox.push("s", "k", "c", "src").sequence == 1


def test_clear_session_of_an_unknown_session_drops_nothing(inbox: Inbox) -> None:
    assert inbox.clear_session("nobody") == 0
    assert inbox.sessions() == []


def test_clear_session_leaves_other_sessions_alone(inbox: Inbox) -> None:
    others = push_many(inbox, "other", 2)
    push_many(inbox, "s", 3)
    inbox.clear_session("s")
    assert inbox.snapshot("other") == others
    assert inbox.push("other", "k", "c", "src").sequence == 3


# -- Looking ---------------------------------------------------------------------------------------


def test_pending_count_follows_pushes_and_takes(inbox: Inbox) -> None:
    assert inbox.pending_count("s") == 0
    push_many(inbox, "s", 3)
    assert inbox.pending_count("s") == 3
    inbox.drain_where("s", lambda entry: entry.sequence == 1)
    assert inbox.pending_count("s") == 2
    inbox.drain("s")
    assert inbox.pending_count("s") == 0


def test_snapshot_is_a_copy_in_push_order(inbox: Inbox) -> None:
    entries = push_many(inbox, "s", 3)
    snapshot = inbox.snapshot("s")
    assert snapshot == entries
    snapshot.clear()
    snapshot.append(InboxEntry(99, "s", "k", "c", "src", 0))
    assert inbox.snapshot("s") == entries
    assert inbox.snapshot("s") is not inbox.snapshot("s")


def test_snapshot_takes_nothing(inbox: Inbox) -> None:
    entries = push_many(inbox, "s", 2)
    inbox.snapshot("s")
    inbox.snapshot("s")
    assert inbox.drain("s") == entries


def test_sessions_lists_exactly_the_sessions_with_pending_entries(inbox: Inbox) -> None:
    push_many(inbox, "a", 1)
    push_many(inbox, "b", 2)
    push_many(inbox, "c", 1)
    assert sorted(inbox.sessions()) == ["a", "b", "c"]
    inbox.drain("a")
    inbox.drain_where("b", lambda entry: entry.sequence == 1)
    inbox.clear_session("c")
    assert inbox.sessions() == ["b"]


def test_sessions_result_is_a_copy(inbox: Inbox) -> None:
    push_many(inbox, "a", 1)
    listed = inbox.sessions()
    listed.append("ghost")
    assert inbox.sessions() == ["a"]


def test_statistics_describe_a_session_at_one_instant_as_a_frozen_value(inbox: Inbox) -> None:
    assert inbox.statistics("s") == SessionStatistics(
        session_id="s", pending=0, waiters=0, last_sequence=0, dropped=0
    )  # an unknown session: zeros
    assert inbox.sessions() == []
    push_many(inbox, "s", 3)
    inbox.drain_where("s", lambda entry: entry.sequence == 1)
    stats = inbox.statistics("s")
    assert (stats.session_id, stats.pending, stats.waiters, stats.last_sequence) == ("s", 2, 0, 3)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.pending = 0  # type: ignore[misc]
    inbox.drain("s")
    assert stats.pending == 2  # a value: later changes do not reach it
    drained = inbox.statistics("s")
    assert (drained.pending, drained.last_sequence) == (0, 3)  # a drain keeps the counter
    inbox.clear_session("s")
    assert inbox.statistics("s").last_sequence == 0


def test_statistics_count_the_waits_in_progress_and_the_drops() -> None:
    inbox = Inbox(clock=ManualClock(), max_pending=2, overflow="drop_oldest")
    push_many(inbox, "s", 5)
    wait = parked_wait_sync(inbox, "quiet")
    stats, quiet = inbox.statistics("s"), inbox.statistics("quiet")
    assert (stats.pending, stats.dropped, stats.last_sequence) == (2, 3, 5)
    assert stats.dropped == inbox.dropped("s")
    assert (quiet.waiters, quiet.pending) == (1, 0)
    assert quiet.waiters == inbox.waiter_count("quiet")
    inbox.push("quiet", "k", "c", "src")
    assert wait.outcome() is True
    assert inbox.statistics("quiet").waiters == 0


def test_statistics_count_what_the_producer_and_consumer_controls_did(
    inbox: Inbox, clock: ManualClock
) -> None:
    inbox.push("s", "k", "first", "src", dedupe_key="d")
    inbox.push("s", "k", "retried", "src", dedupe_key="d")  # a duplicate: stores nothing
    inbox.push("s", "k", "10%", "src", coalesce_key="progress")
    inbox.push("s", "k", "20%", "src", coalesce_key="progress")  # replaces the 10%
    inbox.push("s", "k", "soon stale", "src", expires_in=1)
    clock.advance(1)
    revoked = inbox.push("s", "k", "taken back", "src")
    assert inbox.revoke("s", revoked.sequence) == revoked
    inbox.reserve_sequence("s")
    stats = inbox.statistics("s")
    counts = (stats.duplicates, stats.coalesced, stats.expired, stats.revoked, stats.reserved)
    assert counts == (1, 1, 1, 1, 1)
    assert (stats.pending, stats.last_sequence) == (2, 6)


def test_waiter_count_is_zero_without_waits(inbox: Inbox) -> None:
    push_many(inbox, "s", 1)
    assert inbox.wait_sync("s", 0) is True
    assert inbox.waiter_count("s") == 0
    assert inbox.waiter_count("nobody") == 0


# -- Wrong types: TypeError naming the argument, inbox unchanged -----------------------------------

BAD_TEXT = [(1, "int"), (None, "NoneType"), (b"s", "bytes"), (1.5, "float"), (["s"], "list")]


@pytest.fixture
def busy_inbox(inbox: Inbox) -> Inbox:
    push_many(inbox, "s", 2)
    push_many(inbox, "", 1)
    return inbox


@pytest.mark.parametrize(("value", "type_name"), BAD_TEXT)
@pytest.mark.parametrize("argument", ["session_id", "kind", "content", "source"])
def test_push_with_a_wrongly_typed_argument_raises_and_stores_nothing(
    busy_inbox: Inbox, argument: str, value: object, type_name: str
) -> None:
    inbox = busy_inbox
    arguments: dict[str, object] = {
        "session_id": "s",
        "kind": "k",
        "content": "c",
        "source": "src",
        argument: value,
    }
    before = state_of(inbox)
    with pytest.raises(TypeError, match=rf"^{argument} must be str, not {type_name}$"):
        inbox.push(**arguments)  # type: ignore[arg-type]
    assert state_of(inbox) == before
    assert inbox.push("s", "k", "c", "src").sequence == 3  # no number was used


def test_push_reports_the_first_wrongly_typed_argument(inbox: Inbox) -> None:
    with pytest.raises(TypeError, match=r"^kind must be str, not int$"):
        inbox.push("s", 1, 2, 3)  # type: ignore[arg-type]
    assert inbox.sessions() == []


SESSION_METHODS: list[tuple[str, Callable[[Inbox, Any], object]]] = [
    ("drain", lambda inbox, sid: inbox.drain(sid)),
    ("drain_where", lambda inbox, sid: inbox.drain_where(sid, lambda entry: True)),
    ("pending_count", lambda inbox, sid: inbox.pending_count(sid)),
    ("snapshot", lambda inbox, sid: inbox.snapshot(sid)),
    ("clear_session", lambda inbox, sid: inbox.clear_session(sid)),
    ("waiter_count", lambda inbox, sid: inbox.waiter_count(sid)),
    ("wait_sync", lambda inbox, sid: inbox.wait_sync(sid, 0)),
    ("statistics", lambda inbox, sid: inbox.statistics(sid)),
]


@pytest.mark.parametrize(("value", "type_name"), BAD_TEXT)
@pytest.mark.parametrize(("method", "call"), SESSION_METHODS, ids=[m for m, _ in SESSION_METHODS])
def test_wrongly_typed_session_id_raises_type_error_and_changes_nothing(
    busy_inbox: Inbox,
    method: str,
    call: Callable[[Inbox, Any], object],
    value: object,
    type_name: str,
) -> None:
    inbox = busy_inbox
    before = state_of(inbox)
    with pytest.raises(TypeError, match=rf"^session_id must be str, not {type_name}$"):
        call(inbox, value)
    assert state_of(inbox) == before


@pytest.mark.parametrize("predicate", [None, "kind", 3, InboxEntry(1, "s", "k", "c", "src", 0)])
def test_drain_where_with_a_non_callable_predicate_raises_and_changes_nothing(
    busy_inbox: Inbox, predicate: object
) -> None:
    inbox = busy_inbox
    before = state_of(inbox)
    with pytest.raises(TypeError, match=r"^predicate must be callable, not "):
        inbox.drain_where("s", predicate)  # type: ignore[arg-type]
    assert state_of(inbox) == before


def test_str_subclass_is_accepted_as_text(inbox: Inbox) -> None:
    class Name(str):
        pass

    entry = inbox.push(Name("s"), Name("k"), Name("c"), Name("src"))
    assert entry.session_id == "s"
    assert inbox.drain("s") == [entry]


def test_clearing_the_last_counted_session_keeps_entries_requeued_into_cleared_ones(
    inbox: Inbox,
) -> None:
    # An entry requeued into a cleared session is pending with no sequence
    # counter behind it; clearing the last counted session must not drop it.
    [entry] = [inbox.push("a", "k", "c", "s")]
    inbox.drain("a")
    inbox.clear_session("a")
    inbox.requeue_front(entry)
    inbox.push("b", "k", "c", "s")
    inbox.clear_session("b")
    assert inbox.snapshot("a") == [entry]
    assert inbox.sessions() == ["a"]


def test_an_entry_from_before_a_clear_goes_back_with_its_old_sequence(inbox: Inbox) -> None:
    # Documented: the counter restarts at the clear and is not touched by a
    # requeue, so the old entry's sequence may equal a new one's.
    old = inbox.push("s", "k", "before", "src")
    inbox.drain("s")
    inbox.clear_session("s")
    inbox.requeue_front(old)
    new = inbox.push("s", "k", "after", "src")
    assert (old.sequence, new.sequence) == (1, 1)
    assert inbox.drain("s") == [old, new]


def test_an_entry_from_before_a_clear_goes_back_after_a_new_one_took_its_sequence(
    inbox: Inbox,
) -> None:
    # The other order: the restarted counter has already issued the old
    # sequence to a pending entry. The old entry is not that one.
    old = inbox.push("s", "k", "before", "src")
    inbox.drain("s")
    inbox.clear_session("s")
    new = inbox.push("s", "k", "after", "src")
    inbox.requeue_front(old)
    assert inbox.drain("s") == [old, new]
    # The README's pattern: put back what was drained, newest first.
    inbox.requeue_front(new)
    inbox.requeue_front(old)
    assert inbox.drain("s") == [old, new]
