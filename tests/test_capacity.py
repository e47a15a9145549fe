"""Bounded sessions: ``Inbox(max_pending=N, overflow="reject" | "drop_oldest")``.

The promise: unbounded by default. ``"reject"`` refuses a push to a full
session with `InboxFull` (naming the session and the limit) and stores nothing,
not even a sequence number. ``"drop_oldest"`` makes room by discarding the
session's oldest entry, counts it in `Inbox.dropped` (until `clear_session`),
reports it at warning level, and keeps sequences gapless. `requeue_front` may
go beyond the limit: an entry accepted once is never lost to the bound.
"""

from __future__ import annotations

import copy
import pickle
import threading
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from _support import ThreadCall, join_all, parked_wait_sync, push_many
from structlog.testing import capture_logs

from harn_inbox import Inbox, InboxEntry, InboxError, InboxFull, ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping

    from conftest import Backend


def _sequences(entries: list[InboxEntry]) -> list[int]:
    return [entry.sequence for entry in entries]


def _push_events(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [log for log in logs if log["event"] == "inbox.push"]


def drained_while_producing(
    inbox: Inbox, produce: Callable[[int], object], producers: int, bound: int
) -> list[InboxEntry]:
    """Run ``produce(i)`` in *producers* threads while a thread drains "s"; what it drained.

    Every batch holds at most *bound* entries. (The consumer's short waits
    only pace it; they decide nothing.)
    """
    delivered: list[InboxEntry] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set() or inbox.pending_count("s"):
            batch = inbox.drain("s")
            assert len(batch) <= bound
            delivered.extend(batch)
            if not batch:
                inbox.wait_sync("s", 0.001)

    consumer = ThreadCall(consume)
    join_all([ThreadCall(produce, i) for i in range(producers)])
    done.set()
    join_all([consumer])
    return delivered


# -- Off by default --------------------------------------------------------------------------------


def test_sessions_are_unbounded_by_default(inbox: Inbox) -> None:
    push_many(inbox, "s", 20_000)
    assert inbox.pending_count("s") == 20_000
    assert inbox.dropped("s") == 0
    assert _sequences(inbox.drain("s")) == list(range(1, 20_001))


# -- Arguments -------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_pending", [0, -1, -(2**70)])
def test_max_pending_below_one_is_a_value_error(max_pending: int) -> None:
    with pytest.raises(ValueError, match=rf"max_pending must be at least 1.*{max_pending}"):
        Inbox(max_pending=max_pending)


@pytest.mark.parametrize("max_pending", [1.0, 2.5, "3", True, False, b"3", [3], float("inf")])
def test_max_pending_that_is_not_an_int_is_a_type_error(max_pending: object) -> None:
    with pytest.raises(TypeError, match="max_pending must be int"):
        Inbox(max_pending=max_pending)  # type: ignore[arg-type]


@pytest.mark.parametrize("overflow", ["", "Reject", "drop-oldest", "block"])
def test_unknown_overflow_is_a_value_error(overflow: object) -> None:
    with pytest.raises(ValueError, match="overflow must be 'reject' or 'drop_oldest'"):
        Inbox(max_pending=3, overflow=overflow)  # type: ignore[arg-type]


@pytest.mark.parametrize("overflow", [None, 1, ("reject",)])
def test_an_overflow_that_is_not_a_str_is_a_type_error(overflow: object) -> None:
    with pytest.raises(TypeError, match=r"^overflow must be str, not "):
        Inbox(max_pending=3, overflow=overflow)  # type: ignore[arg-type]


@pytest.mark.parametrize("overflow", ["reject", "drop_oldest"])
def test_overflow_without_max_pending_changes_nothing(overflow: Any) -> None:
    inbox = Inbox(overflow=overflow)
    push_many(inbox, "s", 1_000)
    assert inbox.pending_count("s") == 1_000
    assert inbox.dropped("s") == 0


# -- "reject" --------------------------------------------------------------------------------------


def test_reject_raises_inbox_full_naming_session_and_limit_and_stores_nothing(
    clock: ManualClock,
) -> None:
    inbox = Inbox(clock=clock, max_pending=3, overflow="reject")
    queued = push_many(inbox, "agent-7", 3)
    with pytest.raises(InboxFull) as caught:
        inbox.push("agent-7", "k", "one too many", "test")
    error = caught.value
    assert isinstance(error, InboxError)
    assert (error.session_id, error.max_pending) == ("agent-7", 3)
    assert "'agent-7'" in str(error)
    assert "max_pending=3" in str(error)
    assert inbox.snapshot("agent-7") == queued
    assert inbox.dropped("agent-7") == 0


@pytest.mark.parametrize(
    "duplicate",
    [lambda error: pickle.loads(pickle.dumps(error)), copy.copy, copy.deepcopy],
    ids=["pickle", "copy", "deepcopy"],
)
def test_inbox_full_survives_pickling_and_copying(
    clock: ManualClock, duplicate: Callable[[InboxFull], InboxFull]
) -> None:
    """An InboxFull may cross a process boundary or be copied by a logging or retry layer.

    Exception.__reduce__ rebuilds an exception from ``self.args``; InboxFull
    passes only the message to Exception.__init__, so rebuilding calls
    InboxFull(message) and fails with a TypeError about missing arguments.
    """
    inbox = Inbox(clock=clock, max_pending=1)
    inbox.push("s", "k", "c", "src")
    with pytest.raises(InboxFull) as caught:
        inbox.push("s", "k", "c", "src")
    copied = duplicate(caught.value)
    assert type(copied) is InboxFull
    assert (copied.session_id, copied.max_pending) == ("s", 1)
    assert str(copied) == str(caught.value)


def test_reject_is_the_default_overflow(clock: ManualClock) -> None:
    inbox = Inbox(clock=clock, max_pending=1)
    inbox.push("s", "k", "c", "src")
    with pytest.raises(InboxFull):
        inbox.push("s", "k", "c", "src")


def test_rejected_push_does_not_consume_a_sequence_number(clock: ManualClock) -> None:
    inbox = Inbox(clock=clock, max_pending=2, overflow="reject")
    push_many(inbox, "s", 2)
    for _ in range(5):
        with pytest.raises(InboxFull):
            inbox.push("s", "k", "refused", "test")
    inbox.drain("s")
    assert inbox.push("s", "k", "next", "test").sequence == 3


def test_reject_is_per_session(clock: ManualClock) -> None:
    inbox = Inbox(clock=clock, max_pending=2, overflow="reject")
    push_many(inbox, "full", 2)
    with pytest.raises(InboxFull, match="'full'"):
        inbox.push("full", "k", "c", "src")
    assert _sequences(push_many(inbox, "other", 2)) == [1, 2]
    assert inbox.pending_count("full") == 2


def test_taking_entries_makes_room_again(clock: ManualClock) -> None:
    inbox = Inbox(clock=clock, max_pending=3, overflow="reject")
    first, second, third = push_many(inbox, "s", 3)
    assert inbox.drain_where("s", lambda entry: entry is second) == [second]
    fourth = inbox.push("s", "k", "fits again", "test")
    assert inbox.snapshot("s") == [first, third, fourth]
    with pytest.raises(InboxFull):
        inbox.push("s", "k", "full again", "test")
    inbox.clear_session("s")
    assert _sequences(push_many(inbox, "s", 3)) == [1, 2, 3]


def test_reject_is_reported_at_warning_level(clock: ManualClock) -> None:
    with capture_logs() as logs:
        inbox = Inbox(clock=clock, logger=structlog.get_logger(), max_pending=1)
        inbox.push("s", "k", "c", "src")
        with pytest.raises(InboxFull):
            inbox.push("s", "k", "c", "src")
    [accepted, rejected] = _push_events(logs)
    assert accepted["log_level"] == "debug"
    assert rejected["log_level"] == "warning"
    assert rejected["outcome"] == "rejected"
    assert rejected["session_id"] == "s"
    assert rejected["max_pending"] == 1


def test_requeue_front_may_go_beyond_max_pending_under_reject(clock: ManualClock) -> None:
    inbox = Inbox(clock=clock, max_pending=2, overflow="reject")
    first, second = push_many(inbox, "s", 2)
    inbox.drain_where("s", lambda entry: entry is first)
    third = inbox.push("s", "k", "refills", "test")
    inbox.requeue_front(first)  # accepted once: never lost to the bound
    assert inbox.snapshot("s") == [first, second, third]
    with pytest.raises(InboxFull) as caught:
        inbox.push("s", "k", "still refused", "test")
    assert "3 pending" in str(caught.value)
    assert inbox.snapshot("s") == [first, second, third]


def test_rejecting_producers_and_a_draining_consumer_account_for_every_push() -> None:
    inbox = Inbox(max_pending=16, overflow="reject")
    producers, attempts = 4, 5_000
    accepted: list[list[InboxEntry]] = [[] for _ in range(producers)]
    rejected = [0] * producers
    refusals: list[InboxFull] = []

    def push_or_refusal(index: int, n: int) -> InboxEntry | InboxFull:
        try:
            return inbox.push("s", "k", f"{index}:{n}", f"p{index}")
        except InboxFull as error:
            return error

    def produce(index: int) -> None:
        for n in range(attempts):
            outcome = push_or_refusal(index, n)
            if isinstance(outcome, InboxFull):
                refusals.append(outcome)
                rejected[index] += 1
            else:
                accepted[index].append(outcome)

    delivered = drained_while_producing(inbox, produce, producers, bound=16)

    assert [len(a) + r for a, r in zip(accepted, rejected, strict=True)] == [attempts] * producers
    assert {(error.session_id, error.max_pending) for error in refusals} == {("s", 16)}
    assert sorted(delivered, key=lambda e: e.sequence) == delivered, "delivered in order"
    assert _sequences(delivered) == list(range(1, len(delivered) + 1)), "no number wasted"
    assert {entry for entries in accepted for entry in entries} == set(delivered)
    assert sum(rejected) > 0, "the bound was never reached: the test proved nothing"


# -- "drop_oldest" ---------------------------------------------------------------------------------


def test_drop_oldest_keeps_the_newest_and_counts_the_drops(clock: ManualClock) -> None:
    inbox = Inbox(clock=clock, max_pending=3, overflow="drop_oldest")
    pushed = push_many(inbox, "s", 10)
    assert _sequences(pushed) == list(range(1, 11)), "every push gets the next number"
    assert inbox.snapshot("s") == pushed[-3:]
    assert inbox.dropped("s") == 7
    assert inbox.dropped("other") == 0
    assert inbox.drain("s") == pushed[-3:]
    assert inbox.dropped("s") == 7, "draining does not reset the count"
    assert inbox.push("s", "k", "after", "test").sequence == 11


def test_drop_oldest_with_room_for_one_keeps_only_the_latest(clock: ManualClock) -> None:
    inbox = Inbox(clock=clock, max_pending=1, overflow="drop_oldest")
    pushed = push_many(inbox, "s", 5)
    assert inbox.snapshot("s") == [pushed[-1]]
    assert inbox.dropped("s") == 4


def test_drop_oldest_counts_per_session_and_clear_session_resets_the_count(
    clock: ManualClock,
) -> None:
    inbox = Inbox(clock=clock, max_pending=2, overflow="drop_oldest")
    push_many(inbox, "a", 5)
    push_many(inbox, "b", 3)
    assert (inbox.dropped("a"), inbox.dropped("b")) == (3, 1)
    assert inbox.clear_session("a") == 2
    assert (inbox.dropped("a"), inbox.dropped("b")) == (0, 1)
    assert _sequences(push_many(inbox, "a", 3)) == [1, 2, 3]
    assert inbox.dropped("a") == 1


def test_drop_oldest_is_reported_at_warning_level_with_the_dropped_sequence_and_count(
    clock: ManualClock,
) -> None:
    with capture_logs() as logs:
        inbox = Inbox(
            clock=clock, logger=structlog.get_logger(), max_pending=2, overflow="drop_oldest"
        )
        push_many(inbox, "s", 5)
    events = _push_events(logs)
    assert [event["sequence"] for event in events] == [1, 2, 3, 4, 5]
    assert [event["log_level"] for event in events] == ["debug"] * 2 + ["warning"] * 3
    drops = [event for event in events if event.get("outcome") == "dropped_oldest"]
    assert [
        (event["sequence"], event["dropped_sequence"], event["dropped_total"]) for event in drops
    ] == [(3, 1, 1), (4, 2, 2), (5, 3, 3)]
    assert all(event["session_id"] == "s" for event in drops)
    assert inbox.dropped("s") == 3


def test_drop_oldest_drops_a_requeued_entry_first_and_never_grows_the_session(
    clock: ManualClock,
) -> None:
    inbox = Inbox(clock=clock, max_pending=2, overflow="drop_oldest")
    first, second = push_many(inbox, "s", 2)
    inbox.drain_where("s", lambda entry: entry is first)
    third = inbox.push("s", "k", "#2", "test")
    inbox.requeue_front(first)  # beyond the bound, on purpose
    assert inbox.snapshot("s") == [first, second, third]
    fourth = inbox.push("s", "k", "#3", "test")
    assert inbox.snapshot("s") == [second, third, fourth], "the oldest (requeued) entry went"
    assert inbox.dropped("s") == 1
    for _ in range(5):
        inbox.push("s", "k", "more", "test")
        assert inbox.pending_count("s") <= 3


def test_drop_oldest_under_concurrent_pushes_and_drains_accounts_for_every_push() -> None:
    inbox = Inbox(max_pending=8, overflow="drop_oldest")
    producers, pushes = 4, 5_000
    pushed: list[list[InboxEntry]] = [[] for _ in range(producers)]

    def produce(index: int) -> None:
        for n in range(pushes):
            pushed[index].append(inbox.push("s", "k", f"{index}:{n}", f"p{index}"))

    delivered = drained_while_producing(inbox, produce, producers, bound=8)

    total = producers * pushes
    every_push = sorted((e for entries in pushed for e in entries), key=lambda e: e.sequence)
    assert _sequences(every_push) == list(range(1, total + 1)), "sequences stay gapless"
    assert _sequences(delivered) == sorted(set(_sequences(delivered))), "in order, no duplicate"
    assert set(delivered) <= set(every_push)
    assert len(delivered) + inbox.dropped("s") == total, "each push delivered or counted dropped"


def test_drop_oldest_wakes_a_selective_waiter_on_a_full_session(
    backend: Backend, clock: ManualClock
) -> None:
    inbox = Inbox(clock=clock, max_pending=3, overflow="drop_oldest")
    noise = push_many(inbox, "s", 3, kind="noise")

    def wanted(entry: InboxEntry) -> bool:
        return entry.kind == "wanted"

    async def main() -> list[InboxEntry]:
        async with backend.parked(inbox, inbox.wait_for, "s", wanted, 30) as waiter:
            inbox.push("s", "wanted", "the one", "test")
        result: list[InboxEntry] = waiter.result
        return result

    [taken] = backend.run(main)
    assert (taken.kind, taken.sequence) == ("wanted", 4)
    assert inbox.snapshot("s") == noise[1:]
    assert inbox.dropped("s") == 1
    assert inbox.waiter_count("s") == 0
    assert "timers=0" in repr(clock)


def test_reject_from_async_producers_while_a_batches_consumer_drains(
    backend: Backend, clock: ManualClock
) -> None:
    inbox = Inbox(clock=clock, max_pending=4, overflow="reject")
    accepted: list[InboxEntry] = []
    rejected: list[InboxFull] = []

    async def produce(index: int) -> None:
        for n in range(200):
            try:
                accepted.append(inbox.push("s", "k", f"{index}:{n}", f"task{index}"))
            except InboxFull as error:
                rejected.append(error)
            if n % 3 == 0:
                await backend.checkpoint()

    async def consume() -> list[InboxEntry]:
        received: list[InboxEntry] = []
        async for batch in inbox.batches("s"):
            assert 0 < len(batch) <= 4
            received.extend(batch)
        return received

    async def main() -> list[InboxEntry]:
        async with backend.task_group() as consumers:
            consumer = consumers.start_soon(consume)
            async with backend.task_group() as producers:
                for index in range(4):
                    producers.start_soon(produce, index)
            inbox.close()  # ends the channel once it is drained
        result: list[InboxEntry] = consumer.result
        return result

    received = backend.run(main)
    assert received == sorted(accepted, key=lambda entry: entry.sequence)
    assert _sequences(received) == list(range(1, len(received) + 1))
    assert len(accepted) + len(rejected) == 800
    assert rejected, "the bound was never reached: the test proved nothing"


def test_a_full_reject_session_does_not_disturb_a_parked_thread_on_another_session(
    clock: ManualClock,
) -> None:
    inbox = Inbox(clock=clock, max_pending=1, overflow="reject")
    inbox.push("full", "k", "c", "src")
    wait = parked_wait_sync(inbox, "quiet", 10)
    with pytest.raises(InboxFull):
        inbox.push("full", "k", "c", "src")
    assert inbox.waiter_count("quiet") == 1, "a refused push wakes nobody"
    inbox.push("quiet", "k", "c", "src")
    assert wait.outcome() is True


# -- drop_oldest while a predicate runs ------------------------------------------------------------
# A predicate runs outside the inbox's lock, so a push may make room in the very
# session it is judging. What was dropped is gone (it is counted in dropped());
# what arrived must be judged like any other entry.


def _pushing_predicate(inbox: Inbox, wanted: set[str]) -> Callable[[InboxEntry], bool]:
    pushed: list[InboxEntry] = []

    def predicate(entry: InboxEntry) -> bool:
        if not pushed:  # at the first judgment, push into the full session
            pushed.append(inbox.push(entry.session_id, "k", "new", "predicate"))
        return entry.content in wanted

    return predicate


def test_drain_where_never_returns_an_entry_dropped_while_its_predicate_ran(
    clock: ManualClock,
) -> None:
    inbox = Inbox(clock=clock, max_pending=3, overflow="drop_oldest")
    first, second, _ = push_many(inbox, "s", 3)

    taken = inbox.drain_where("s", _pushing_predicate(inbox, {"#0", "#2", "new"}))

    # #0 was dropped by the push; that push is later than the call, so "new" stays.
    assert [entry.content for entry in taken] == ["#2"]
    assert [entry.content for entry in inbox.snapshot("s")] == ["#1", "new"]
    assert inbox.snapshot("s")[0] == second
    assert inbox.dropped("s") == 1
    assert first not in taken


def test_wait_for_never_returns_an_entry_dropped_while_its_predicate_ran(
    backend: Backend, clock: ManualClock
) -> None:
    inbox = Inbox(clock=clock, max_pending=3, overflow="drop_oldest")
    _, second, _ = push_many(inbox, "s", 3)

    async def main() -> list[InboxEntry]:
        return await inbox.wait_for("s", _pushing_predicate(inbox, {"#0", "#2", "new"}), 30)

    taken = backend.run(main)

    assert [entry.content for entry in taken] == ["#2"]
    assert [entry.content for entry in inbox.snapshot("s")] == ["#1", "new"]
    assert inbox.snapshot("s")[0] == second
    assert inbox.dropped("s") == 1
    assert inbox.waiter_count("s") == 0
