"""`SqliteStore`: an inbox on a file behaves as the memory inbox, and survives a restart.

A restart is simulated in-process: close the store (`SqliteStore.close`) and
open a new `SqliteStore` and `Inbox` on the same file. A crash in a claim's
block is the same restart made inside the block: the old store never settles
the claim. Real processes killed at random are in ``test_sqlite_crash.py``,
faults of the file in ``test_sqlite_faults.py``; the conformance kit checks the
whole contract. This file checks what is specific to a durable store, and a
few representative operations against a memory inbox driven the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import structlog
import trio
from structlog.testing import capture_logs

from harn_inbox import Delivery, Inbox, InboxClosed, InboxEntry, ManualClock, StoreError
from harn_inbox._entry import MAX_SEQUENCE
from harn_inbox.stores import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from conftest import Backend

#: The helper program that holds a file open, or tries to, in another process.
CHILD = Path(__file__).with_name("sqlite_child.py")
#: Where the child finds harn_inbox: the checkout this test imports.
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
#: A guard against a hung child or thread; never a verdict.
HANG_GUARD_SECONDS = 60.0


class Boom(Exception):
    """What a failing claim block raises."""


class Restartable:
    """An inbox on a SQLite file that a test restarts as a new process would.

    `restart` closes the store and opens a new store and inbox on the file,
    with the same clock and options; it may be called inside a claim's block
    (a crash there: the claim is never settled).
    """

    def __init__(self, path: Path, clock: ManualClock, options: dict[str, Any]) -> None:
        self.path = path
        self.clock = clock
        self.options = options
        self.stores: list[SqliteStore] = []
        self.inbox = self._open()

    @property
    def store(self) -> SqliteStore:
        return self.stores[-1]

    def restart(self) -> Inbox:
        self.store.close()
        self.inbox = self._open()
        return self.inbox

    def close(self) -> None:
        for store in self.stores:
            store.close()

    def _open(self) -> Inbox:
        store = SqliteStore(self.path)
        self.stores.append(store)
        return Inbox(store=store, clock=self.clock, **self.options)


@pytest.fixture
def open_file(tmp_path: Path, clock: ManualClock) -> Iterator[Callable[..., Restartable]]:
    """``open_file(**inbox_options)``: a `Restartable` inbox on ``tmp_path / "x.db"``."""
    opened: list[Restartable] = []

    def open_(**options: Any) -> Restartable:
        opened.append(Restartable(tmp_path / "x.db", clock, options))
        return opened[-1]

    yield open_
    for restartable in opened:
        restartable.close()


@pytest.fixture
def durable(open_file: Callable[..., Restartable]) -> Restartable:
    return open_file()


def push(inbox: Inbox, session_id: str, content: str, **options: Any) -> InboxEntry:
    return inbox.push(session_id, "tool_result", content, "worker", **options)


def sequences(entries: list[InboxEntry]) -> list[int]:
    return [entry.sequence for entry in entries]


def state(inbox: Inbox, session_ids: tuple[str, ...]) -> dict[str, Any]:
    """What *inbox* holds for *session_ids*: pending entries and counters (not where they live)."""
    return {
        sid: (inbox.snapshot(sid), attrs.evolve(inbox.statistics(sid), durable=False))
        for sid in session_ids
    }


def until(condition: Callable[[], bool], what: str) -> None:
    """Return once *condition* holds; fail naming *what* if it never does (a hang guard)."""
    give_up = time.monotonic() + HANG_GUARD_SECONDS
    while not condition():
        assert time.monotonic() < give_up, f"never happened: {what}"
        time.sleep(1e-4)


# -- As the memory inbox, and across a restart ---------------------------------------------------

#: The inbox options of the comparison below: a bound that drops, a short dedupe window.
COMPARED_OPTIONS: dict[str, Any] = {
    "max_pending": 4,
    "overflow": "drop_oldest",
    "dedupe_window": 30,
}
COMPARED_SESSIONS = ("a", "b", "")


def prepare(inbox: Inbox) -> None:
    """Entries carrying every field and control, in three sessions (one named ``""``)."""
    push(inbox, "a", "a1", payload={"n": [1, 2.5, None, "é"], "big": 2**70}, delivery="immediate")
    push(inbox, "a", "a2", coalesce_key="progress", delivery=Delivery.TURN_BOUNDARY)
    push(inbox, "a", "a3\x00 with a NUL and 🙂", expires_in=60, dedupe_key="once")
    push(inbox, "b", "b1")
    push(inbox, "", "empty session")


def _requeue_two(inbox: Inbox, clock: ManualClock) -> list[InboxEntry]:
    taken = inbox.drain("a")
    push(inbox, "a", "a4")
    inbox.requeue_front(taken[2])
    inbox.requeue_front(taken[0])
    return taken


def _claim_and_settle(inbox: Inbox, clock: ManualClock) -> list[InboxEntry]:
    with inbox.claim("a", lambda entry: entry.content != "a2") as claimed:
        return claimed


def _claim_and_fail(inbox: Inbox, clock: ManualClock) -> list[InboxEntry]:
    try:
        with inbox.claim("a", lambda entry: entry.content != "a1") as claimed:
            raise Boom
    except Boom:
        return claimed


def _expire(inbox: Inbox, clock: ManualClock) -> int:
    clock.advance(61)
    return inbox.pending_count("a")


#: A change to the prepared inbox: ``change(inbox, clock)``, returning what the caller sees.
CHANGES: dict[str, Callable[[Inbox, ManualClock], object]] = {
    "push": lambda inbox, clock: push(inbox, "b", "b2", payload=["x", {"y": True}]),
    "push dropping the oldest": lambda inbox, clock: [push(inbox, "a", f"+{n}") for n in range(3)],
    "coalescing push": lambda inbox, clock: push(inbox, "a", "a2 again", coalesce_key="progress"),
    "duplicate push": lambda inbox, clock: push(inbox, "a", "again", dedupe_key="once"),
    "drain": lambda inbox, clock: inbox.drain("a"),
    "drain_where": lambda inbox, clock: inbox.drain_where("a", lambda e: e.content != "a2"),
    "requeue_front": _requeue_two,
    "clear_session": lambda inbox, clock: inbox.clear_session("a"),
    "revoke": lambda inbox, clock: inbox.revoke("a", 2),
    "reserve_sequence": lambda inbox, clock: inbox.reserve_sequence("b"),
    "settled claim": _claim_and_settle,
    "released claim": _claim_and_fail,
    "expiry": _expire,
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=list(CHANGES))
def test_each_change_behaves_as_in_memory_and_is_in_the_file_after_a_restart(
    open_file: Callable[..., Restartable], change: Callable[[Inbox, ManualClock], object]
) -> None:
    durable = open_file(**COMPARED_OPTIONS)
    # The memory inbox is the reference: same operations, its own clock at the same time.
    memory_clock = ManualClock(start_ms=durable.clock.now_ms())
    memory = Inbox(clock=memory_clock, **COMPARED_OPTIONS)
    for inbox in (memory, durable.inbox):
        prepare(inbox)
    assert change(durable.inbox, durable.clock) == change(memory, memory_clock)
    assert state(durable.inbox, COMPARED_SESSIONS) == state(memory, COMPARED_SESSIONS)

    restarted = durable.restart()
    assert state(restarted, COMPARED_SESSIONS) == state(memory, COMPARED_SESSIONS)
    # And the restarted inbox carries on as the memory one: sequences, coalesce and dedupe keys.
    memory_clock.advance(1)
    durable.clock.advance(1)
    for inbox in (memory, restarted):
        for sid in COMPARED_SESSIONS:
            push(inbox, sid, "next")
        push(inbox, "a", "latest", coalesce_key="progress")
        push(inbox, "a", "retried", dedupe_key="once")
    assert state(restarted, COMPARED_SESSIONS) == state(memory, COMPARED_SESSIONS)


def test_restart_restores_pending_entries_in_order_with_all_they_carried(
    durable: Restartable,
) -> None:
    prepare(durable.inbox)
    before = state(durable.inbox, COMPARED_SESSIONS)
    assert state(durable.restart(), COMPARED_SESSIONS) == before
    # Twice: opening a file changes nothing in it.
    assert state(durable.restart(), COMPARED_SESSIONS) == before


def test_sequence_counters_continue_after_a_restart_even_with_nothing_pending(
    durable: Restartable,
) -> None:
    for content in ("1", "2", "3"):
        push(durable.inbox, "s", content)
    assert durable.inbox.reserve_sequence("s") == 4
    durable.inbox.drain("s")
    inbox = durable.restart()
    assert inbox.snapshot("s") == []
    assert inbox.statistics("s").last_sequence == 4
    assert push(inbox, "s", "after").sequence == 5


def test_counters_are_restored_after_a_restart(
    open_file: Callable[..., Restartable], clock: ManualClock
) -> None:
    durable = open_file(max_pending=2, overflow="drop_oldest")
    inbox = durable.inbox
    for content in ("1", "2", "3"):  # 3 drops 1
        push(inbox, "s", content)
    push(inbox, "s", "4", coalesce_key="k")
    push(inbox, "s", "5", coalesce_key="k")
    push(inbox, "s", "6", dedupe_key="d")
    push(inbox, "s", "7", dedupe_key="d")
    inbox.reserve_sequence("s")
    push(inbox, "s", "8", expires_in=1)
    assert inbox.revoke("s", push(inbox, "s", "9").sequence) is not None
    clock.advance(2)
    before = inbox.statistics("s")
    counters = ("dropped", "duplicates", "coalesced", "expired", "revoked", "reserved")
    assert all(getattr(before, counter) > 0 for counter in counters), before
    assert durable.restart().statistics("s") == before


def test_a_coalesce_key_restored_from_the_file_is_replaced_by_a_later_coalescing_push(
    durable: Restartable,
) -> None:
    push(durable.inbox, "s", "old progress", coalesce_key="progress")
    push(durable.inbox, "s", "other")
    inbox = durable.restart()
    latest = push(inbox, "s", "new progress", coalesce_key="progress")
    assert [entry.content for entry in inbox.snapshot("s")] == ["other", "new progress"]
    assert latest.sequence == 3
    assert inbox.statistics("s").coalesced == 1


def test_an_expiry_restored_from_the_file_still_expires_on_the_clock(
    durable: Restartable, clock: ManualClock
) -> None:
    push(durable.inbox, "s", "short", expires_in=10)
    push(durable.inbox, "s", "stays")
    clock.advance(9)
    inbox = durable.restart()
    assert [entry.content for entry in inbox.snapshot("s")] == ["short", "stays"]
    clock.advance(1)
    assert [entry.content for entry in inbox.snapshot("s")] == ["stays"]
    assert inbox.statistics("s").expired == 1
    # The expiry itself is in the file.
    assert [entry.content for entry in durable.restart().snapshot("s")] == ["stays"]


def test_an_entry_whose_deadline_passed_while_the_file_was_shut_is_gone_at_the_first_look(
    durable: Restartable, clock: ManualClock
) -> None:
    push(durable.inbox, "s", "short", expires_in=10)
    durable.store.close()
    clock.advance(60)
    inbox = durable.restart()
    assert inbox.drain("s") == []
    assert inbox.statistics("s").expired == 1


def test_dedupe_keys_within_their_window_still_deduplicate_after_a_restart(
    open_file: Callable[..., Restartable], clock: ManualClock
) -> None:
    durable = open_file(dedupe_window=10)
    early = push(durable.inbox, "s", "early", dedupe_key="early")
    clock.advance(6)
    late = push(durable.inbox, "s", "late", dedupe_key="late")
    durable.inbox.drain("s")  # a duplicate returns the first push's entry, pending or not
    inbox = durable.restart()
    clock.advance(5)  # early's window has closed, late's has not
    assert push(inbox, "s", "late, retried", dedupe_key="late") == late
    again = push(inbox, "s", "early, again", dedupe_key="early")
    assert again != early
    assert again.sequence == 3
    assert inbox.snapshot("s") == [again]
    assert inbox.statistics("s").duplicates == 1


def test_dedupe_keys_whose_window_closed_while_the_file_was_shut_no_longer_deduplicate(
    open_file: Callable[..., Restartable], clock: ManualClock
) -> None:
    durable = open_file(dedupe_window=10)
    push(durable.inbox, "s", "first", dedupe_key="key")
    durable.store.close()
    clock.advance(11)
    inbox = durable.restart()
    assert push(inbox, "s", "second", dedupe_key="key").sequence == 2
    assert inbox.pending_count("s") == 2


def test_requeued_entries_keep_their_place_at_the_head_across_restarts(
    durable: Restartable,
) -> None:
    taken = [push(durable.inbox, "s", str(n)) for n in range(1, 5)]
    durable.inbox.drain("s")
    push(durable.inbox, "s", "5")
    durable.inbox.requeue_front(taken[3])
    durable.inbox.requeue_front(taken[2])
    inbox = durable.restart()
    assert sequences(inbox.snapshot("s")) == [3, 4, 5]
    inbox.requeue_front(taken[1])
    push(inbox, "s", "6")
    inbox = durable.restart()
    assert sequences(inbox.snapshot("s")) == [2, 3, 4, 5, 6]
    assert inbox.snapshot("s")[0] == taken[1]


def test_an_entry_with_the_largest_sequence_survives_a_restart(durable: Restartable) -> None:
    # Sequences are unsigned 64-bit; SQLite's integers are signed.
    entry = InboxEntry(
        sequence=2**64 - 1, session_id="s", kind="k", content="c", source="x", ts_ms=1
    )
    durable.inbox.requeue_front(entry)
    assert durable.restart().snapshot("s") == [entry]


def test_drained_entries_are_gone_after_a_restart(durable: Restartable) -> None:
    for content in ("1", "2", "3"):
        push(durable.inbox, "s", content)
    assert sequences(durable.inbox.drain("s")) == [1, 2, 3]
    push(durable.inbox, "s", "4")
    assert sequences(durable.restart().snapshot("s")) == [4]


def test_a_cleared_session_restarts_its_sequence_after_a_restart(durable: Restartable) -> None:
    push(durable.inbox, "s", "1", dedupe_key="key")
    push(durable.inbox, "s", "2")
    durable.inbox.clear_session("s")
    inbox = durable.restart()
    assert inbox.sessions() == []
    assert push(inbox, "s", "new life", dedupe_key="key").sequence == 1


# -- Claims and crashes --------------------------------------------------------------------------


def crash_in_claim(
    durable: Restartable,
    session_id: str,
    predicate: Callable[[InboxEntry], bool] | None = None,
    before_crash: Callable[[], object] = lambda: None,
) -> tuple[list[InboxEntry], Inbox]:
    """Enter a claim, call *before_crash*, then restart inside the block, as a crash there would.

    The old store never settles the claim: leaving the block raises its
    `StoreError`. Returns what the claim took and the restarted inbox.
    """
    claim = durable.inbox.claim(session_id, predicate)
    claimed = claim.__enter__()
    before_crash()
    restarted = durable.restart()
    with pytest.raises(StoreError, match="the store was closed"):
        claim.__exit__(None, None, None)
    return claimed, restarted


def test_entries_of_a_claim_open_at_a_crash_are_pending_again_at_the_head_in_order(
    durable: Restartable,
) -> None:
    pushed = [push(durable.inbox, "s", str(n), payload={"n": n}) for n in range(1, 4)]
    later: list[InboxEntry] = []
    claimed, inbox = crash_in_claim(
        durable, "s", before_crash=lambda: later.extend(push(durable.inbox, "s", n) for n in "45")
    )
    assert claimed == pushed
    assert inbox.snapshot("s") == pushed + later
    # Put back once: a second restart finds the same.
    assert durable.restart().snapshot("s") == pushed + later


def test_a_selective_claim_open_at_a_crash_puts_its_entries_ahead_of_the_rest(
    durable: Restartable,
) -> None:
    for n in range(1, 6):
        push(durable.inbox, "s", str(n))
    claimed, inbox = crash_in_claim(durable, "s", lambda entry: entry.sequence % 2 == 0)
    assert sequences(claimed) == [2, 4]
    assert sequences(inbox.snapshot("s")) == [2, 4, 1, 3, 5]


def test_claims_open_at_a_crash_go_back_in_the_order_they_were_taken(
    durable: Restartable,
) -> None:
    inbox = durable.inbox
    for content in ("1", "2"):
        push(inbox, "s", content)
    push(inbox, "t", "t1")
    assert sequences(inbox.claim("s").__enter__()) == [1, 2]  # never left: the crash comes first
    assert sequences(inbox.claim("t").__enter__()) == [1]
    push(inbox, "s", "3")
    second, restarted = crash_in_claim(durable, "s", before_crash=lambda: push(inbox, "s", "4"))
    assert sequences(second) == [3]
    assert sequences(restarted.snapshot("s")) == [1, 2, 3, 4]
    assert sequences(restarted.snapshot("t")) == [1]


def test_entries_of_a_claim_open_at_a_crash_keep_their_coalesce_key_and_expiry(
    durable: Restartable, clock: ManualClock
) -> None:
    push(durable.inbox, "s", "progress", coalesce_key="progress")
    push(durable.inbox, "s", "short", expires_in=10)
    _, inbox = crash_in_claim(durable, "s")
    push(inbox, "s", "progress, later", coalesce_key="progress")
    clock.advance(10)
    assert [entry.content for entry in inbox.snapshot("s")] == ["progress, later"]


def test_settled_claims_are_gone_after_a_restart(durable: Restartable) -> None:
    for content in ("1", "2"):
        push(durable.inbox, "s", content)
    with durable.inbox.claim("s") as claimed:
        assert sequences(claimed) == [1, 2]
    push(durable.inbox, "s", "3")
    assert sequences(durable.restart().snapshot("s")) == [3]


def test_an_async_claim_open_at_a_crash_gives_its_entries_back_at_the_head(
    backend: Backend, durable: Restartable
) -> None:
    pushed = [push(durable.inbox, "s", str(n)) for n in (1, 2)]

    async def hold_and_crash() -> None:
        async with durable.inbox.claim("s") as claimed:
            assert claimed == pushed
            await backend.checkpoint()
            durable.restart()  # the crash: leaving the block cannot settle

    async def main() -> None:
        with pytest.raises(StoreError, match="the store was closed"):
            await hold_and_crash()

    backend.run(main)
    assert durable.inbox.snapshot("s") == pushed


# -- Waits on a file's inbox ---------------------------------------------------------------------


def test_a_wait_returns_at_once_for_entries_restored_from_the_file(
    backend: Backend, durable: Restartable
) -> None:
    push(durable.inbox, "s", "before the restart")
    inbox = durable.restart()

    async def main() -> tuple[bool, list[InboxEntry], str | None]:
        with backend.fail_after(5):
            found = await inbox.wait("s")
            any_found = await inbox.wait_any(["x", "s"])
            taken = await inbox.wait_for("s", lambda entry: True)
        return found, taken, any_found

    found, taken, any_found = backend.run(main)
    assert (found, any_found) == (True, "s")
    assert [entry.content for entry in taken] == ["before the restart"]
    assert durable.restart().snapshot("s") == []


#: A call that waits on session "s" of an inbox and returns what it got.
WAYS_TO_WAIT: dict[str, Callable[[Inbox], Any]] = {
    "wait": lambda inbox: inbox.wait("s"),
    "wait_for": lambda inbox: inbox.wait_for("s", lambda entry: entry.content.startswith("want")),
    "wait_any": lambda inbox: inbox.wait_any(["other", "s"]),
    "batches": lambda inbox: inbox.batches("s").receive(),
}


@pytest.mark.parametrize("way", list(WAYS_TO_WAIT))
def test_a_push_wakes_a_wait_parked_on_a_restarted_inbox(
    backend: Backend, durable: Restartable, way: str
) -> None:
    push(durable.inbox, "s", "taken before the restart")
    durable.inbox.drain("s")
    inbox = durable.restart()

    async def main() -> tuple[object, InboxEntry]:
        async def wait() -> object:
            return await WAYS_TO_WAIT[way](inbox)

        async with backend.parked(inbox, wait, session_id="s") as waiter:
            wanted = push(inbox, "s", "wanted")
        return waiter.result, wanted

    result, wanted = backend.run(main)
    assert wanted.sequence == 2
    assert result == {"wait": True, "wait_any": "s"}.get(way, [wanted])
    # What a wait took is gone from the file; what it only looked at is there.
    kept = [] if way in ("wait_for", "batches") else [wanted]
    assert durable.restart().snapshot("s") == kept


def test_batches_receives_what_a_restart_restored_then_what_is_pushed(
    backend: Backend, durable: Restartable
) -> None:
    restored = push(durable.inbox, "s", "restored")
    inbox = durable.restart()

    async def main() -> list[list[InboxEntry]]:
        channel = inbox.batches("s")
        first = await channel.receive()
        async with backend.parked(inbox, channel.receive, session_id="s") as second:
            pushed = push(inbox, "s", "pushed")
        assert second.result == [pushed]
        inbox.close()
        with pytest.raises(trio.EndOfChannel):
            await channel.receive()
        return [first, second.result]

    assert backend.run(main)[0] == [restored]


# -- One owner at a time -------------------------------------------------------------------------


def test_a_second_store_on_an_open_file_raises_naming_it(durable: Restartable) -> None:
    push(durable.inbox, "s", "kept")
    link = durable.path.with_name("link.db")
    link.symlink_to(durable.path)
    spellings: list[str | os.PathLike[str]] = [
        durable.path,
        str(durable.path),
        os.path.join(durable.path.parent, ".", "x.db"),
        link,
    ]
    for spelling in spellings:
        with pytest.raises(StoreError, match="open in another inbox") as raised:
            SqliteStore(spelling)
        assert str(Path(spelling)) in str(raised.value)
    # The owner is unharmed.
    assert sequences(durable.inbox.snapshot("s")) == [1]
    assert push(durable.inbox, "s", "more").sequence == 2


def test_a_closed_store_frees_its_file_for_the_next_opener(durable: Restartable) -> None:
    push(durable.inbox, "s", "kept")
    durable.store.close()
    durable.store.close()  # idempotent
    with SqliteStore(durable.path) as store:
        assert [entry.content for entry in Inbox(store=store).snapshot("s")] == ["kept"]
    with SqliteStore(durable.path):
        pass


#: Calls on an inbox whose store was closed.
CALLS_AFTER_STORE_CLOSE: list[Any] = [
    pytest.param(lambda inbox: inbox.drain("s"), id="drain"),
    pytest.param(lambda inbox: inbox.snapshot("s"), id="snapshot"),
    pytest.param(lambda inbox: inbox.requeue_front(push(Inbox(), "s", "x")), id="requeue_front"),
    pytest.param(lambda inbox: push(inbox, "s", "late"), id="push"),
    pytest.param(lambda inbox: inbox.reserve_sequence("s"), id="reserve_sequence"),
]


@pytest.mark.parametrize("call", CALLS_AFTER_STORE_CLOSE)
def test_a_closed_store_refuses_calls_with_a_store_error_naming_the_file(
    durable: Restartable, call: Callable[[Inbox], object]
) -> None:
    push(durable.inbox, "s", "kept")
    durable.store.close()
    with pytest.raises(StoreError) as raised:
        call(durable.inbox)
    message = str(raised.value)
    assert message.startswith(f"{durable.path}: the store was closed"), message
    assert [entry.content for entry in durable.restart().snapshot("s")] == ["kept"]


def run_child(*arguments: str, **popen: Any) -> subprocess.Popen[str]:
    """``sqlite_child.py arguments...`` in a new process, its stdout a pipe of lines."""
    environment = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    return subprocess.Popen(
        [sys.executable, str(CHILD), *arguments],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
        **popen,
    )


def test_a_file_open_in_another_process_cannot_be_opened_here(durable: Restartable) -> None:
    push(durable.inbox, "s", "kept")
    durable.store.close()
    with run_child("hold", str(durable.path), stdin=subprocess.PIPE) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdin is not None
            assert holder.stdout.readline() == "ready\n"
            with pytest.raises(StoreError, match="open in another inbox") as raised:
                SqliteStore(durable.path)
            assert str(durable.path) in str(raised.value)
            holder.stdin.close()  # the holder closes its store and exits
            assert holder.wait(HANG_GUARD_SECONDS) == 0
        finally:
            holder.kill()
    assert [entry.content for entry in durable.restart().snapshot("s")] == ["kept"]


def test_a_file_open_here_cannot_be_opened_in_another_process(durable: Restartable) -> None:
    with run_child("try-open", str(durable.path)) as opener:
        output, _ = opener.communicate(timeout=HANG_GUARD_SECONDS)
    assert opener.returncode == 0
    assert output.startswith("StoreError: ")
    assert "open in another inbox" in output
    assert str(durable.path) in output


# -- Closing, statistics, options ----------------------------------------------------------------


def test_inbox_close_stops_pushes_but_drains_still_work_and_are_kept(
    durable: Restartable,
) -> None:
    for content in ("1", "2"):
        push(durable.inbox, "s", content)
    durable.inbox.close()
    with pytest.raises(InboxClosed):
        push(durable.inbox, "s", "late")
    with pytest.raises(InboxClosed):
        durable.inbox.reserve_sequence("s")
    assert sequences(durable.inbox.drain("s")) == [1, 2]
    inbox = durable.restart()
    assert inbox.snapshot("s") == []
    assert push(inbox, "s", "3").sequence == 3


def test_statistics_say_a_file_store_is_durable(durable: Restartable) -> None:
    assert durable.inbox.statistics("never seen").durable is True
    push(durable.inbox, "s", "1")
    assert durable.inbox.statistics("s").durable is True
    assert Inbox().statistics("s").durable is False


def test_threads_pushing_at_once_share_commits_and_every_returned_push_is_in_the_file(
    tmp_path: Path, clock: ManualClock, run_in_thread: Callable[..., Any]
) -> None:
    threads, pushes_each = 8, 20
    store = SqliteStore(tmp_path / "x.db")
    inbox = Inbox(store=store, clock=clock, logger=structlog.get_logger())
    start = threading.Barrier(threads + 1)

    def pushes(thread: int) -> list[InboxEntry]:
        start.wait()
        return [push(inbox, f"s{thread % 2}", f"{thread}-{n}") for n in range(pushes_each)]

    with capture_logs() as logs:
        # White-box gate: while the test holds the journal's commit lock, a
        # push can write its change but not commit it. So every thread's first
        # push is written before anyone commits, and the first commit must take
        # them together: sharing does not depend on how the threads are timed.
        with store._journal._committing:
            calls = [run_in_thread(pushes, thread) for thread in range(threads)]
            start.wait()
            until(
                lambda: inbox.pending_count("s0") + inbox.pending_count("s1") >= threads,
                "every thread's first push written",
            )
        pushed = [entry for call in calls for entry in call.outcome()]
    store.close()

    commits = [event for event in logs if event["event"] == "inbox.commit"]
    assert 0 < len(commits) < len(pushed)
    assert all(event["log_level"] == "debug" for event in commits)
    assert all(event["store"] == str(store.path) for event in commits)
    assert sum(event["changes"] for event in commits) >= len(pushed)
    assert sum(event["entries"] for event in commits) == len(pushed)
    assert max(event["entries"] for event in commits) >= threads  # the first, shared
    with SqliteStore(store.path) as reopened:
        restored = Inbox(store=reopened)
        for sid in ("s0", "s1"):
            assert sequences(restored.snapshot(sid)) == list(range(1, pushes_each * 4 + 1))
        in_file = restored.snapshot("s0") + restored.snapshot("s1")
    assert sorted(in_file, key=str) == sorted(pushed, key=str)


@pytest.mark.parametrize(("sync", "level"), [("normal", 1), ("full", 2)])
def test_each_sync_setting_is_the_connections_and_keeps_what_returned(
    tmp_path: Path, sync: str, level: int
) -> None:
    path = tmp_path / "x.db"
    with SqliteStore(str(path), sync=sync) as store:  # type: ignore[arg-type]
        # White-box: SQLite's own setting (1 NORMAL, 2 FULL), in write-ahead logging mode.
        connection = store._journal.connection
        assert connection.execute("PRAGMA synchronous").fetchone() == (level,)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        push(Inbox(store=store), "s", "kept")
    with SqliteStore(path, sync=sync) as store:  # type: ignore[arg-type]
        assert [entry.content for entry in Inbox(store=store).snapshot("s")] == ["kept"]


def test_a_store_repr_names_its_file_and_whether_it_is_open(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    assert repr(store) == f"<SqliteStore {str(tmp_path / 'x.db')!r} open>"
    store.close()
    assert repr(store) == f"<SqliteStore {str(tmp_path / 'x.db')!r} closed>"


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"path": 123}, TypeError, "path must be a str or a path, not int"),
        ({"path": None}, TypeError, "path must be a str or a path, not NoneType"),
        ({"path": b"x.db"}, TypeError, "path must be a str or a path, not bytes"),
        ({"sync": None}, TypeError, "sync must be 'normal' or 'full', not NoneType"),
        ({"sync": 2}, TypeError, "sync must be 'normal' or 'full', not int"),
        ({"sync": "FULL"}, ValueError, "sync must be 'normal' or 'full', not 'FULL'"),
        ({"sync": "off"}, ValueError, "sync must be 'normal' or 'full', not 'off'"),
    ],
)
def test_bad_arguments_raise_naming_the_argument_and_make_no_file(
    tmp_path: Path, arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments = {"path": tmp_path / "x.db", **arguments}
    with pytest.raises(error) as raised:
        SqliteStore(arguments.pop("path"), **arguments)
    assert str(raised.value) == message
    assert list(tmp_path.iterdir()) == []


def test_a_store_serves_one_inbox(durable: Restartable) -> None:
    with pytest.raises(ValueError, match="store is already used by another Inbox"):
        Inbox(store=durable.store)


def test_a_session_whose_sequence_wrapped_reads_only_what_was_appended_after_a_restart(
    tmp_path: Path,
) -> None:
    # White-box: the counter set two short of the wrap. Entries 2**64-1 and 1
    # (wrapped) come back from the file in their order; a selective reader's
    # cursor compares keys, so the loaded ones must be stacked as a push had
    # left them: entry 1 expiring must not hand 2**64-1 to the reader again.
    path, clock = tmp_path / "x.db", ManualClock(start_ms=1_000_000)
    with SqliteStore(path) as store:
        inbox = Inbox(store=store, clock=clock)
        inbox.reserve_sequence("s")
        store._sessions["s"].last_sequence = MAX_SEQUENCE - 1
        inbox.push("s", "k", "last before the wrap", "src")
        inbox.push("s", "k", "first after it", "src", expires_in=1)
    with SqliteStore(path) as store:
        inbox = Inbox(store=store, clock=clock)
        assert [e.sequence for e in inbox.snapshot("s")] == [MAX_SEQUENCE, 1]
        session = store._sessions["s"]
        cursor, read, _ = session.read(None)
        assert [e.sequence for e in read] == [MAX_SEQUENCE, 1]
        clock.advance(1)
        assert [e.sequence for e in inbox.snapshot("s")] == [MAX_SEQUENCE]  # 1 expired
        assert session.read(cursor)[1] == []
        inbox.push("s", "k", "appended", "src")
        assert [e.sequence for e in session.read(cursor)[1]] == [2]
