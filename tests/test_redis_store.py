"""What is `RedisStore`'s own: awaitable forms off the loop, cancellation, compaction, clears
across inboxes. The whole contract is the conformance kit's (test_redis_conformance.py);
faults are in test_redis_faults.py, many processes in test_redis_processes.py.

Waking across the network takes real time: those waits run on a real trio clock
(``run_in_real_time``), every timeout on a `ManualClock`, every verdict on events.
"""

from __future__ import annotations

import json
import threading
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from _redis_server import integer
from _support import (
    ThreadCall,
    parked_wait_sync,
    requeued_beside_a_twin,
    spin_until,
    store_of,
    turns_of_housekeeping,
)

from harn_inbox import Inbox, InboxEntry, ManualClock, StoreError
from harn_inbox.stores import MemoryStore, RedisStore
from harn_inbox.stores._protocol import ClaimRecord
from harn_inbox.stores._redis import REMEMBER_PROCESSES_FOR, SCHEMA_VERSION

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from _redis_server import RedisServer
    from conftest import Backend


def contents(entries: list[InboxEntry]) -> list[str]:
    return [entry.content for entry in entries]


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ({"url": b"redis://localhost"}, TypeError, "url must be str"),
        ({"namespace": 7}, TypeError, "namespace must be str"),
        ({"namespace": ""}, ValueError, "namespace must not be empty"),
        ({"claim_lease": True}, TypeError, "claim_lease must be a number"),
        ({"claim_lease": 0}, ValueError, "claim_lease must be positive"),
        ({"claim_lease": float("inf")}, ValueError, "claim_lease must be positive"),
        ({"retries": 1.0}, TypeError, "retries must be int"),
        ({"retries": -1}, ValueError, "retries must be at least 0"),
        ({"url": "redis://u:secret@localhost/0?encoding=latin-1"}, ValueError, "encoding='latin"),
        ({"url": "redis://localhost/0?encoding_errors=ignore"}, ValueError, "encoding_errors="),
        ({"url": "redis://localhost/0?decode_responses=true"}, ValueError, "decode_responses"),
    ],
)
def test_a_store_refuses_bad_arguments_naming_them(
    arguments: dict[str, Any], error: type[Exception], named: str
) -> None:
    # (Nothing connects before the inbox attaches: no server is needed.)
    with pytest.raises(error, match=named) as raised:
        RedisStore(**{"url": "redis://localhost/0", **arguments})
    assert "secret" not in str(raised.value)


def test_a_session_id_that_cannot_name_a_key_is_refused_and_changes_nothing(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    inbox = connect(redis_server.namespace())
    store = store_of(inbox)
    bad = "job-\udc80"  # (a lone surrogate, as a JSON "\\udc80" escape can make)
    calls: list[Callable[[], object]] = [
        lambda: inbox.push(bad, "k", "x", "src"),
        lambda: inbox.drain(bad),
        lambda: inbox.pending_count(bad),
        lambda: inbox.wait_sync(bad, timeout=0),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="session_id 'job-\\\\udc80' cannot name a Redis key"):
            call()
    assert bad not in store._tracks
    assert bad not in store._wanted
    assert store._lost == {}
    first = inbox.push("s", "k", "x", "src")
    assert inbox.drain("s") == [first]
    with pytest.raises(ValueError, match="namespace"):
        RedisStore(redis_server.url, namespace="ns-\udc80")


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_the_awaitable_forms_do_what_the_plain_forms_do(
    backend: Backend, store: str, request: pytest.FixtureRequest
) -> None:
    if store == "redis":  # (only this case needs a server: the memory one runs everywhere)
        server: RedisServer = request.getfixturevalue("redis_server")
        inbox = request.getfixturevalue("connect")(server.namespace())
    else:
        inbox = Inbox(store=MemoryStore(), clock=ManualClock())

    async def main() -> None:
        first = await inbox.apush("s", "k", "one", "src")
        await inbox.apush("s", "job", "two", "src", payload={"handle": "h2"})
        assert await inbox.areserve_sequence("s") == 3
        await inbox.apush("s", "k", "four", "src")
        assert await inbox.apending_count("s") == 3
        assert contents(await inbox.asnapshot("s")) == ["one", "two", "four"]
        assert await inbox.asessions() == ["s"]
        assert contents(await inbox.adrain_where("s", lambda e: e.kind == "job")) == ["two"]
        assert await inbox.arevoke("s", 4) is not None
        assert contents(await inbox.adrain("s")) == ["one"]
        await inbox.arequeue_front(first)
        statistics = await inbox.astatistics("s")
        assert (statistics.pending, statistics.last_sequence, statistics.reserved) == (1, 4, 1)
        assert statistics.durable is (store == "redis")
        assert await inbox.aclear_session("s") == 1
        assert await inbox.apending_count("s") == 0

    backend.run_in_real_time(main)


def test_async_with_claim_settles_or_gives_back_off_the_loop(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    inbox = connect(redis_server.namespace())
    inbox.push("s", "k", "one", "src")
    inbox.push("s", "k", "two", "src")

    async def fail_in_the_block() -> None:
        async with inbox.claim("s") as held:
            assert contents(held) == ["one", "two"]
            assert await inbox.apending_count("s") == 0
            raise RuntimeError("the handler failed")

    async def main() -> None:
        with pytest.raises(RuntimeError, match="the handler failed"):
            await fail_in_the_block()
        assert contents(await inbox.asnapshot("s")) == ["one", "two"]  # given back, in order
        async with inbox.claim("s", lambda e: e.content == "two") as held:
            assert contents(held) == ["two"]
        assert contents(await inbox.adrain("s")) == ["one"]

    backend.run_in_real_time(main)


class Held:
    """Makes one of the store's methods stop, after it did its work, until the test lets it return.

    As an answer still on the wire: what it took is taken, its caller does not know yet.
    """

    def __init__(self, store: RedisStore, method: str) -> None:
        self.took = threading.Event()
        self.go = threading.Event()
        original = getattr(store, method)

        def held(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            self.took.set()
            self.go.wait(10)  # a safety bound only: the test sets it
            return result

        setattr(store, method, held)


def test_a_drain_cancelled_on_the_wire_stops_at_once_and_loses_nothing(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    inbox = connect(namespace)
    store = store_of(inbox)
    held = Held(store, "drain")
    pushed = [inbox.push("s", "k", content, "src") for content in ("one", "two")]

    async def main() -> None:
        async with backend.task_group() as group:
            task = group.start_soon(inbox.adrain, "s")
            await backend.to_thread(held.took.wait, 10)
            task.cancel()
        # The task ended while its drain was still held on the "wire".
        assert isinstance(task.raised, backend.cancelled)

    backend.run_in_real_time(main)
    held.go.set()
    # When the drain answers, what it took goes back to the head, in order.
    assert given_back(connect(namespace), "s") == pushed


def test_a_clear_in_one_inbox_ends_the_waits_of_another(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    waiting, clearing = connect(namespace), connect(namespace)
    waiting.push("other", "k", "x", "src")

    async def main() -> None:
        async with backend.task_group() as group:
            plain = group.start_soon(waiting.wait, "s")
            selective = group.start_soon(waiting.wait_for, "s", lambda e: e.kind == "go")
            thread = group.start_soon(backend.to_thread, waiting.wait_sync, "s")
            await backend.to_thread(
                spin_until, lambda: waiting.waiter_count("s") == 3, "three waits parked"
            )
            # (Nothing pushed first: a plain wait woken by it may rightly
            # return True before the clear reaches it.)
            assert clearing.clear_session("s") == 0
        assert (plain.result, selective.result, thread.result) == (False, [], False)

    backend.run_in_real_time(main)


def given_back(inbox: Inbox, session_id: str) -> list[InboxEntry]:
    """Wait (woken by the give-back's push to the head) until *session_id* has entries; drain."""
    assert ThreadCall(inbox.wait_sync, session_id, None).outcome() is True
    return inbox.drain(session_id)


def test_sessions_reads_every_session_in_a_round_trip_per_500(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    pushing, listing = connect(namespace), connect(namespace)
    pushed = [pushing.push(f"s{n}", "k", f"#{n}", "src") for n in range(1100)]
    for n in range(0, 1100, 2):
        pushing.drain(f"s{n}")
    store = store_of(listing)
    call = store._call
    calls = 0

    def counted(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return call(*args)

    store._call = counted  # type: ignore[method-assign]
    assert sorted(listing.sessions()) == sorted(f"s{n}" for n in range(1, 1100, 2))
    assert calls == 1 + 3  # the set, then 500 + 500 + 100 sessions
    assert listing.snapshot("s1") == [pushed[1]]
    assert calls == 4 + 1  # a look: the session was replayed already (nothing new)


def compacting_every(
    operations: int, connect: Callable[..., Inbox], redis_server: RedisServer
) -> tuple[str, ManualClock, Inbox]:
    """An inbox on a new namespace whose store compacts a log every *operations*."""
    namespace = redis_server.namespace()
    clock = ManualClock(start_ms=1_000_000)
    inbox = connect(namespace, clock)
    store_of(inbox)._compact_after = operations
    return namespace, clock, inbox


def test_a_compacted_log_stays_short_and_a_new_inbox_starts_from_its_snapshot(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace, clock, inbox = compacting_every(10, connect, redis_server)
    first = inbox.push("s", "k", "keyed", "src", dedupe_key="once")
    for round_ in range(30):
        inbox.push("s", "k", f"#{round_}", "src")
        inbox.drain("s")
    log = redis_server.command("LLEN", f"{namespace}:log:s")
    assert int(log.split(b":")[1]) < 12  # at most what followed the last snapshot
    # A new process loads the snapshot: counters, dedupe keys and sequences carry on.
    fresh = connect(namespace, clock)
    assert fresh.statistics("s").last_sequence == 31
    assert fresh.push("s", "k", "keyed again", "src", dedupe_key="once") == first
    assert fresh.push("s", "k", "next", "src").sequence == 32
    assert contents(inbox.drain("s")) == ["next"]


def test_the_log_of_a_session_never_empty_stays_short_and_its_snapshot_holds_what_is_pending(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # One entry stays pending for ever while others come and go: the snapshot
    # holds it, with what it carries, and an entry claimed meanwhile.
    namespace, clock, inbox = compacting_every(10, connect, redis_server)
    sticky = inbox.push("s", "k", "sticky", "src", coalesce_key="c", expires_in=3600.0)
    for round_ in range(60):
        inbox.push("s", "k", f"#{round_}", "src")
        assert len(inbox.drain_where("s", lambda entry: entry.content != "sticky")) == 1
    claimed = inbox.push("s", "k", "claimed", "src")
    claim = inbox.claim("s", lambda entry: entry.content == "claimed")
    assert claim.__enter__() == [claimed]
    for _ in range(20):
        inbox.reserve_sequence("s")
    assert integer(redis_server.command("LLEN", f"{namespace}:log:s")) < 12
    fresh = connect(namespace, clock)
    assert fresh.snapshot("s") == [sticky]
    assert fresh.sessions() == ["s"]
    assert store_of(fresh)._track("s").base > 100  # (it loaded the snapshot)
    claim.__exit__(RuntimeError, RuntimeError("handler failed"), None)  # given back
    assert fresh.snapshot("s") == [claimed, sticky]
    # What the sticky entry carries came with it: its coalesce key, its expiry.
    replaced = fresh.push("s", "k", "replaces sticky", "src", coalesce_key="c")
    assert inbox.snapshot("s") == [claimed, replaced]
    again = fresh.push("s", "k", "expires", "src", expires_in=1.0)
    clock.advance(1.0)
    assert fresh.snapshot("s") == inbox.snapshot("s") == [claimed, replaced]
    assert again.sequence == replaced.sequence + 1


def test_a_selective_take_finds_what_it_read_after_its_copy_was_loaded_from_a_snapshot(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # Read, then another process reserves a number and compacts past this
    # copy, which loads the snapshot at its next look: the version stayed, so
    # the cursor still reads the session, and the entries it read are the
    # copy's own still (one object each), so the take finds them.
    namespace = redis_server.namespace()
    reading, pushing = connect(namespace), connect(namespace)
    store_of(pushing)._compact_after = 2
    first = pushing.push("s", "k", "#0", "src")
    store = store_of(reading)
    cursor, entries, _ = store.read("s", None)
    assert entries == [first]
    assert pushing.reserve_sequence("s") == 2
    assert store_of(pushing)._track("s").base == 2
    assert store.pending_count("s") == 1
    assert store._track("s").base == 2  # (loaded)
    assert store.take("s", cursor, entries) == [first]
    assert pushing.drain("s") == []


def test_a_session_forgets_the_processes_that_wrote_to_it_long_ago(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    clock = ManualClock(start_ms=1_000_000)

    def connected() -> Inbox:
        inbox = connect(namespace, clock)
        store_of(inbox)._remember_operations = 1  # (alike in every process, as the constant)
        return inbox

    writers = [connected() for _ in range(4)]
    for writer in writers:
        writer.push("s", "k", "x", "src")
    reader = connected()
    assert reader.pending_count("s") == 4
    assert len(store_of(reader)._track("s").applied) == 4
    clock.advance(REMEMBER_PROCESSES_FOR + 1)
    last = store_of(writers[0])
    last._compact_after = 2
    writers[0].push("s", "k", "y", "src")  # (index 4: those before index 3 are forgotten)
    writers[0].reserve_sequence("s")  # (index 5: all of them)
    assert reader.pending_count("s") == 5
    # Every replica forgets the same processes, at the same operation.
    for inbox in (writers[0], writers[1], reader):
        assert store_of(inbox).pending_count("s") == 5
        assert list(store_of(inbox)._track("s").applied) == [last._process]
    assert len(writers[0].drain("s")) == 5
    writers[0].reserve_sequence("s")  # (the drain's result learned: the log is compacted)
    snapshot = json.loads(redis_server.command("GET", f"{namespace}:snapshot:s").split(b"\r\n")[1])
    assert [process for process, *_ in snapshot["applied"]] == [last._process]
    fresh = connected()
    assert fresh.push("s", "k", "z", "src").sequence == 8
    assert list(store_of(fresh)._track("s").applied) == [last._process, store_of(fresh)._process]


def test_a_retried_operation_applies_once_though_another_clock_is_a_day_ahead(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # A process is forgotten only when its last operation is a day older by
    # the clocks and many operations back in the log: a clock a day off alone
    # does not forget the process whose retry is on its way.
    namespace = redis_server.namespace()
    early = connect(namespace, ManualClock(start_ms=1_000_000))
    late = connect(namespace, ManualClock(start_ms=1_000_000 + 2 * 86_400_000))
    first = early.push("s", "k", "x", "src")
    late.push("s", "k", "y", "src")
    store = store_of(early)
    log = store._log_key("s")
    text = store._client.lrange(log, 0, 0)[0]
    store._append(keys=[log], args=[text, 0, namespace, "s", SCHEMA_VERSION])  # a retried copy
    assert [entry.content for entry in connect(namespace).drain("s")] == ["x", "y"]
    assert early.push("s", "k", "z", "src").sequence == first.sequence + 2


def test_every_process_purges_what_expired_at_each_operation_alike(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # An operation that changes nothing of the entries (a settle) still purges
    # at its clock reading in every copy, so a copy that looked since (a look
    # purges at the last operation's reading) and one that did not agree.
    namespace = redis_server.namespace()
    behind = connect(namespace, ManualClock(start_ms=1_000_000))
    ahead = connect(namespace, ManualClock(start_ms=1_020_000))
    looking = connect(namespace, ManualClock(start_ms=1_000_000))
    behind.push("s", "k", "soon gone", "src", expires_in=10.0)  # until 1,010,000
    store_of(ahead).settle(ClaimRecord("s", [], [], "nobody/1"))  # at 1,020,000
    assert looking.pending_count("s") == 0
    assert behind.drain("s") == []  # at 1,000,000 by its own clock: purged before
    for inbox in (behind, ahead, looking):
        statistics = inbox.statistics("s")
        assert (statistics.pending, statistics.expired) == (0, 1)


def test_entries_given_back_after_they_expired_are_purged_by_the_operation_that_gave_them(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # A release puts back entries whose expiry may have passed by its clock:
    # they are purged by the release itself, in every process, and reported by
    # the releasing one (a later look elsewhere would purge them only there).
    namespace = redis_server.namespace()
    clock = ManualClock(start_ms=1_000_000)
    claiming, looking = connect(namespace, clock), connect(namespace, clock)
    store = store_of(claiming)
    reported: list[InboxEntry] = []
    assert store._settings is not None
    store._settings = attrs.evolve(store._settings, expired=reported.extend)
    pushed = claiming.push("s", "k", "soon gone", "src", expires_in=10.0)
    claim = claiming.claim("s")
    assert claim.__enter__() == [pushed]
    clock.advance(20.0)
    claim.__exit__(RuntimeError, RuntimeError("handler failed"), None)  # given back
    assert reported == [pushed]
    assert looking.pending_count("s") == 0
    for inbox in (claiming, looking):
        assert inbox.statistics("s").expired == 1


def test_a_snapshot_written_before_processes_were_forgotten_loads(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # (Its processes as {process: counter}, or [process, counter, clock].)
    namespace = redis_server.namespace()
    inbox = connect(namespace)
    inbox.push("s", "k", "x", "src")
    store = store_of(inbox)
    track = store._track("s")
    for old in ({"older": 3}, [["older", 3, 5]]):
        with store._lock:
            store._load("s", track, {"life": 0, "now": 7, "applied": old, "record": False}, 4)
        assert track.applied["older"][0] == 3
        assert track.applied["older"][2] == 3  # (remembered as long as can be)


def test_a_log_written_before_lost_operations_were_named_replays(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # (A process gave back what its lost operation took with a "restore" of its own.)
    namespace = redis_server.namespace()
    inbox = connect(namespace)
    pushed = [inbox.push("s", "k", f"#{n}", "src") for n in range(2)]
    assert inbox.drain("s") == pushed
    restore = {
        "o": "restore",
        "t": 1_000_000,
        "p": "older",
        "n": 1,
        "life": 0,
        "entries": [entry.to_dict() for entry in pushed],
        "metas": [[None, None]] * 2,
    }
    redis_server.command("RPUSH", f"{namespace}:log:s", json.dumps(restore))
    assert connect(namespace).drain("s") == pushed


def test_a_drain_whose_report_of_what_expired_fails_still_returns_what_it_took(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    clock = ManualClock(start_ms=1_000_000)
    inbox = connect(namespace, clock)
    store = store_of(inbox)
    inbox.push("s", "k", "short", "src", expires_in=1.0)
    kept = inbox.push("s", "k", "kept", "src")
    clock.advance(2.0)

    def failing(entries: list[InboxEntry]) -> None:
        raise StoreError("the report's look at the server failed")

    assert store._settings is not None
    store._settings = attrs.evolve(store._settings, expired=failing)
    assert inbox.drain("s") == [kept]  # (the report's failure is logged)
    assert store._lost == {}
    assert inbox.statistics("s").expired == 1


@pytest.mark.parametrize("ending", ["cancelled", "timed out", "closed"])
def test_a_wait_for_whose_take_is_stalled_ends_at_once_and_loses_nothing(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer, ending: str
) -> None:
    namespace = redis_server.namespace()
    clock = ManualClock(start_ms=1_000_000)
    inbox = connect(namespace, clock)
    store = store_of(inbox)
    held = Held(store, "take")
    pushed = inbox.push("s", "go", "wanted", "src")

    async def main() -> None:
        async with backend.task_group() as group:
            task = group.start_soon(inbox.wait_for, "s", lambda e: e.kind == "go", 5.0)
            await backend.to_thread(held.took.wait, 10)
            if ending == "cancelled":
                task.cancel()
            elif ending == "timed out":
                clock.advance(5.0)
            else:
                inbox.close()
        # It ended while its take was still held on the "wire".
        if ending == "cancelled":
            assert isinstance(task.raised, backend.cancelled)
        else:
            assert task.result == []

    backend.run_in_real_time(main)
    held.go.set()
    # When the take answers, what it took goes back to the head.
    assert given_back(connect(namespace), "s") == [pushed]


def test_a_thread_wait_whose_look_is_stalled_ends_at_its_deadline(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    clock = ManualClock(start_ms=1_000_000)
    inbox = connect(redis_server.namespace(), clock)
    store = store_of(inbox)
    stalled = threading.Event()
    go = threading.Event()
    pending_count = store.pending_count

    def held(session_id: str) -> int:
        if inbox.waiter_count(session_id):  # the armed look, not the first
            stalled.set()
            go.wait(10)  # a safety bound only: the test sets it
        return pending_count(session_id)

    store.pending_count = held  # type: ignore[method-assign]
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(inbox.wait_sync("s", timeout=5.0)))
    waiter.start()
    assert stalled.wait(10)
    clock.advance(5.0)
    waiter.join(10)
    assert result == [False]
    go.set()


def test_threads_of_one_process_pushing_into_one_session_each_get_their_entry(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # Operations of one process reach a session's log in the order of their
    # numbers: a number taken outside the session's lock once let a later
    # push overtake an earlier one, whose replay then skipped it as a copy.
    inbox = connect(redis_server.namespace())
    barrier = threading.Barrier(8)
    got: list[list[InboxEntry]] = [[] for _ in range(8)]

    def produce(index: int) -> None:
        barrier.wait()
        got[index] += [inbox.push("s", "k", f"{index}/{n}", "src") for n in range(100)]

    threads = [threading.Thread(target=produce, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sequences = sorted(entry.sequence for entries in got for entry in entries)
    assert sequences == list(range(1, 801))
    for entries in got:  # each thread's pushes in its order
        assert [entry.sequence for entry in entries] == sorted(entry.sequence for entry in entries)
    assert len(inbox.drain("s")) == 800


# -- Looks at the replica ------------------------------------------------------------------------


class ServerLooks:
    """Counts a store's looks at the server (``_catch_up``: a round trip each)."""

    def __init__(self, store: RedisStore) -> None:
        self.count = 0
        original = store._catch_up

        def counted(*session_ids: str) -> None:
            self.count += 1
            original(*session_ids)

        store._catch_up = counted  # type: ignore[method-assign]


def waiting_and_pushing(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> tuple[Inbox, Inbox, RedisStore]:
    """Two inboxes on a new namespace, as two processes: one waits, one pushes; the store
    of the one that waits."""
    namespace = redis_server.namespace()
    waiting, pushing = connect(namespace), connect(namespace)
    return waiting, pushing, store_of(waiting)


@pytest.mark.parametrize("way", ["wait", "wait_for"])
def test_a_parked_wait_woken_from_another_process_takes_no_look_at_the_server(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer, way: str
) -> None:
    # The pushed operation comes in its message; the subscriber replays it, and
    # the woken wait reads the replica (a wait_for then takes: one round trip).
    waiting, pushing, store = waiting_and_pushing(connect, redis_server)
    looks = ServerLooks(store)

    async def main() -> tuple[object, InboxEntry, int]:
        async with backend.task_group() as group:
            if way == "wait":
                task = group.start_soon(waiting.wait, "s")
            else:
                task = group.start_soon(waiting.wait_for, "s", lambda e: e.kind == "go")
            # Parked, subscribed, and its replica settled by a look at the server.
            await backend.to_thread(
                spin_until,
                lambda: waiting.waiter_count("s") == 1 and store.has_pending_here("s") is False,
                "a wait parked on a fresh replica",
            )
            before = looks.count
            pushed = pushing.push("s", "go", "x", "src")
        return task.result, pushed, looks.count - before

    result, pushed, server_looks = backend.run_in_real_time(main)
    assert (result is True) if way == "wait" else (result == [pushed])
    assert server_looks == 0
    assert waiting.drain("s") == ([pushed] if way == "wait" else [])


def test_a_push_heard_before_its_own_reply_leaves_the_replica_fresh(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # A process that pushes to a session it waits on hears its own push, often
    # before the push's reply comes. The message is replayed then and the reply
    # skips it: the session stays fresh, so the waits' looks need no round trip.
    inbox = connect(redis_server.namespace())
    store = store_of(inbox)
    store._want("s")
    spin_until(lambda: store._track("s").listening, "the session is heard")
    store.pending_count("s")  # a look at the server: the replica is settled
    assert store.has_pending_here("s") is False
    heard = threading.Event()
    hear, append = store._heard, store._append

    def hearing(session_id: str, data: bytes) -> None:
        hear(session_id, data)
        heard.set()

    def append_then_wait_to_be_heard(**kwargs: Any) -> Any:
        reply = append(**kwargs)
        assert heard.wait(10), "the push was not heard"
        return reply

    store._heard = hearing  # type: ignore[method-assign]
    store._append = append_then_wait_to_be_heard
    entry = inbox.push("s", "k", "c", "src")
    assert entry.sequence == 1
    assert store.has_pending_here("s") is True
    assert inbox.drain("s") == [entry]


def test_the_replica_is_not_read_while_a_look_at_the_server_replays_into_it(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # An operation appended before the session was heard reaches the replica
    # only through a look at the server. While one is on the wire, another
    # thread's look must not read the replica as if it held everything: that
    # look would miss the entry, and no message would come to make up for it.
    waiting, pushing, store = waiting_and_pushing(connect, redis_server)
    pushed = pushing.push("s", "k", "before anyone listened", "src")
    store._want("s")
    spin_until(lambda: store._track("s").listening, "the session is heard")
    assert store.has_pending_here("s") is None  # not settled: the server must be asked
    held = Held(store, "_tail")
    look = ThreadCall(lambda: store.pending_count("s"))
    assert held.took.wait(10)
    # The look at the server has its answer but has not replayed it yet.
    assert store.has_pending_here("s") is None
    held.go.set()
    assert look.outcome() == 1
    assert store.has_pending_here("s") is True
    assert waiting.drain("s") == [pushed]


def test_a_wait_whose_timeout_passes_looks_at_the_server_last(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # Pushed before the deadline, its message still on its way: the wait's last
    # look, made once the timeout passed, asks the server and counts the entry.
    clock = ManualClock()
    namespace = redis_server.namespace()
    waiting, pushing = connect(namespace, clock), connect(namespace)
    store = store_of(waiting)
    held_back: list[bytes] = []  # the messages this process hears, kept from it

    def hold_back(session_id: str, data: bytes) -> None:
        held_back.append(data)

    async def main() -> object:
        async with backend.task_group() as group:
            task = group.start_soon(waiting.wait, "s", 5)
            await backend.to_thread(
                spin_until,
                lambda: waiting.waiter_count("s") == 1 and store.has_pending_here("s") is False,
                "a wait parked on a fresh replica",
            )
            store._heard = hold_back  # type: ignore[method-assign]
            pushing.push("s", "k", "just in time", "src")
            await backend.to_thread(spin_until, lambda: bool(held_back), "its message came")
            clock.advance(5)
        return task.result

    assert backend.run_in_real_time(main) is True
    assert contents(waiting.drain("s")) == ["just in time"]


def woken_from_afar(
    backend: Backend, waiting: Inbox, pushing: Inbox, wait: Callable[[], Awaitable[object]]
) -> tuple[object, InboxEntry]:
    """Run *wait* (on session "s" of *waiting*) until parked and heard; push from *pushing*."""
    store = store_of(waiting)

    async def main() -> tuple[object, InboxEntry]:
        async with backend.task_group() as group:
            task = group.start_soon(wait)
            await backend.to_thread(
                spin_until,
                lambda: waiting.waiter_count("s") == 1 and store._track("s").listening,
                "a wait parked, its session heard",
            )
            pushed = pushing.push("s", "k", "x", "src")
        return task.result, pushed

    result: tuple[object, InboxEntry] = backend.run_in_real_time(main)
    return result


def test_a_batches_step_is_woken_by_another_process(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    waiting, pushing = connect(namespace), connect(namespace)

    batch, pushed = woken_from_afar(backend, waiting, pushing, waiting.batches("s").receive)
    assert batch == [pushed]


def test_the_subscriber_survives_an_error_of_its_own_and_waits_still_wake(
    backend: Backend,
    connect: Callable[..., Inbox],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    waiting, pushing, store = waiting_and_pushing(connect, redis_server)
    forget_idle = store._forget_idle
    failed = threading.Event()

    def fails_once() -> list[str]:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("a bug in the subscriber's housekeeping")
        return forget_idle()

    store._forget_idle = fails_once  # type: ignore[method-assign]
    assert failed.wait(10)

    taken, pushed = woken_from_afar(
        backend, waiting, pushing, partial(waiting.wait_for, "s", lambda e: True)
    )
    assert taken == [pushed]
    assert "the Redis subscriber starts again" in caplog.text


@pytest.mark.parametrize("stalled_part", ["_tend_leases", "_compact_dropped"])
def test_a_stalled_round_trip_of_housekeeping_holds_up_no_wake(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer, stalled_part: str
) -> None:
    # Lease ticks and renewals, ticks naming lost operations and the compactions
    # of dropped copies are round trips on a thread of their own: the subscriber
    # hears on meanwhile.
    waiting, pushing, store = waiting_and_pushing(connect, redis_server)
    part = getattr(store, stalled_part)
    stalled, woken = threading.Event(), threading.Event()
    outwaited = []

    def stalls(*args: Any) -> None:
        stalled.set()
        if not woken.wait(10.0):  # (a guard: only a wake held up by this gets near it)
            outwaited.append(True)
        part(*args)

    setattr(store, stalled_part, stalls)
    if stalled_part == "_compact_dropped":
        waiting.push("dropped", "k", "x", "src")
        waiting.drain("dropped")
        forgetting(store)  # (its copy is dropped, and its log to be compacted)
    assert stalled.wait(10.0)
    try:
        taken, pushed = woken_from_afar(
            backend, waiting, pushing, partial(waiting.wait_for, "s", lambda e: True)
        )
    finally:
        woken.set()
    assert taken == [pushed]
    assert not outwaited, "the wake waited for the stalled housekeeping"


def test_a_session_no_wait_has_looked_at_for_a_while_is_no_longer_heard(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    waiting, pushing = connect(namespace), connect(namespace)
    store = store_of(waiting)
    assert waiting.wait_sync("s", timeout=0) is False  # a wait's look: heard from now on
    spin_until(lambda: redis_server.subscriptions(namespace) == 1, "subscribed")
    store._forget_after = 0.0
    spin_until(lambda: redis_server.subscriptions(namespace) == 0, "no longer subscribed")
    assert not store._track("s").listening
    store._forget_after = 3600.0
    pushed = pushing.push("s", "k", "unheard", "src")
    # Not heard, so not in the replica: a look goes to the server, and hears again.
    assert store.has_pending_here("s") is None
    assert waiting.wait_sync("s", timeout=0) is True
    spin_until(lambda: redis_server.subscriptions(namespace) == 1, "subscribed again")
    assert waiting.drain("s") == [pushed]


def test_a_parked_wait_keeps_its_session_heard(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    waiting, pushing = connect(namespace), connect(namespace)
    store = store_of(waiting)
    wait = parked_wait_sync(waiting, "s")
    spin_until(lambda: redis_server.subscriptions(namespace) == 1, "subscribed")
    store._forget_after = 0.0
    assert store._forget_idle() == []  # looked at long enough ago, but waited on
    assert redis_server.subscriptions(namespace) == 1
    pushed = pushing.push("s", "k", "x", "src")
    assert wait.outcome() is True
    spin_until(lambda: redis_server.subscriptions(namespace) == 0, "forgotten once left")
    assert waiting.drain("s") == [pushed]


def test_a_wait_parked_on_a_session_as_it_is_forgotten_still_wakes(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # The lot's count is read before the session is forgotten: a wait can arm
    # and look in between. Here the count always says none, so the session is
    # forgotten under a parked wait again and again; each time the wait is
    # woken, looks at the server and wants the session again, and a push from
    # elsewhere still wakes it.
    waiting, pushing, store = waiting_and_pushing(connect, redis_server)
    assert store._settings is not None
    store._settings = attrs.evolve(store._settings, waiter_count=lambda session_id: 0)
    forget_idle = store._forget_idle
    forgotten = threading.Semaphore(0)

    def counted() -> list[str]:
        sessions = forget_idle()
        if sessions:
            forgotten.release()
        return sessions

    store._forget_idle = counted  # type: ignore[method-assign]

    async def main() -> tuple[object, InboxEntry]:
        async with backend.task_group() as group:
            task = group.start_soon(waiting.wait, "s")
            await backend.to_thread(
                spin_until, lambda: waiting.waiter_count("s") == 1, "the wait parked"
            )
            store._forget_after = 0.0
            try:
                for _ in range(2):  # forgotten while parked, then after it wanted the session again
                    assert await backend.to_thread(forgotten.acquire, True, 10.0)
                assert waiting.waiter_count("s") == 1
                pushed = await backend.to_thread(pushing.push, "s", "k", "x", "src")
                await backend.to_thread(
                    spin_until, lambda: waiting.waiter_count("s") == 0, "the push woke the wait"
                )
            except BaseException:
                waiting.close()  # (so that the task group ends and the failure shows)
                raise
        return task.result, pushed

    result, pushed = backend.run_in_real_time(main)
    assert result is True
    assert waiting.drain("s") == [pushed]


def test_a_subscription_confirmed_after_its_session_was_forgotten_is_dropped(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # The subscriber sends what was asked for; a session forgotten between the
    # asking and the confirmation is no longer wanted: not heard, unsubscribed.
    namespace = redis_server.namespace()
    waiting = connect(namespace)
    store = store_of(waiting)
    assert waiting.wait_sync("other", timeout=0) is False  # the subscriber is running
    spin_until(lambda: redis_server.subscriptions(namespace, "other") == 1, "subscribed")
    store._requests.append("s")  # asked for, but not (or no longer) wanted
    spin_until(lambda: store._track("s").marks > 0, "the subscription confirmed")
    spin_until(lambda: redis_server.subscriptions(namespace) == 0, "dropped")
    assert not store._track("s").listening
    assert redis_server.subscriptions(namespace, "other") == 1


# -- Copies dropped once unused ------------------------------------------------------------------


def hearing(inbox: Inbox, session_id: str) -> None:
    """Make *inbox* hear *session_id* (an empty one), its copy fresh: a wait's look asks for
    the channel, and a look at the server after the subscription settles the copy."""
    assert inbox.wait_sync(session_id, timeout=0) is False
    spin_until(lambda: store_of(inbox)._track(session_id).listening, "subscribed")
    assert inbox.pending_count(session_id) == 0


@attrs.define
class Drops:
    """What a store's subscriber dropped (`RedisStore._forget_copies`), pass by pass."""

    passes: int = 0
    sessions: list[str] = attrs.Factory(list)
    #: The sessions whose logs the housekeeping thread compacted after a drop.
    compacted: list[str] = attrs.Factory(list)


def forgetting(store: RedisStore) -> Drops:
    """Make *store* drop what it does not use at every turn of its subscriber."""
    drops = Drops()
    forget_copies = store._forget_copies

    def counted() -> list[str]:
        sessions = forget_copies()
        drops.sessions += sessions
        drops.passes += 1
        return sessions

    compact_dropped = store._compact_dropped

    def recorded(compactions: list[tuple[str, Any]]) -> None:
        drops.compacted += [session_id for session_id, *_ in compactions]
        compact_dropped(compactions)

    store._forget_copies = counted  # type: ignore[method-assign]
    store._compact_dropped = recorded  # type: ignore[method-assign]
    store._housekeeping = 0.0
    store._forget_after = 0.0
    return drops


def test_a_session_this_process_no_longer_uses_is_no_longer_copied(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    clock = ManualClock(start_ms=1_000_000)
    pushing, draining = connect(namespace, clock), connect(namespace, clock)
    store = store_of(pushing)
    store._compact_after = 2
    keyed = pushing.push("s", "k", "keyed", "src", dedupe_key="once")
    others = [pushing.push(f"t{n}", "k", "x", "src") for n in range(3)]
    assert draining.drain("s") == [keyed]
    pushing.drain("s")  # (nothing: compacts the log, now empty, into a snapshot)
    assert set(store._tracks) == {"s", "t0", "t1", "t2"}
    drops = forgetting(store)
    spin_until(lambda: len(drops.sessions) == 4, "every copy dropped")
    assert not store._tracks
    assert not store._replica._sessions
    assert sorted(drops.sessions) == ["s", "t0", "t1", "t2"]
    store._forget_after = 3600.0
    # The next use starts again from the log (here, its snapshot): sequences,
    # dedupe keys and what is pending are the server's.
    assert pushing.push("s", "k", "keyed again", "src", dedupe_key="once") == keyed
    assert pushing.push("s", "k", "next", "src").sequence == 2
    assert pushing.pending_count("t1") == 1
    assert [draining.drain(f"t{n}") for n in range(3)] == [[entry] for entry in others]


def test_a_copy_in_use_waited_on_or_with_a_claim_held_is_kept(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    inbox = connect(namespace)
    store = store_of(inbox)
    for session_id in ("used", "claimed"):
        inbox.push(session_id, "k", "x", "src")
    claim = inbox.claim("claimed")
    assert claim.__enter__() != []
    wait = parked_wait_sync(inbox, "waited")
    pinned = store._pin("used")
    drops = forgetting(store)
    spin_until(lambda: drops.passes >= 2, "the subscriber kept house")
    assert drops.sessions == []
    assert store._tracks["used"] is pinned[0]
    store._unpin(pinned)
    spin_until(lambda: "used" in drops.sessions, "dropped once let go")
    claim.__exit__(None, None, None)  # settled
    spin_until(lambda: "claimed" in drops.sessions, "dropped once settled")
    assert "waited" in store._tracks
    inbox.push("waited", "k", "x", "src")
    assert wait.outcome() is True
    spin_until(lambda: "waited" in drops.sessions, "dropped once no wait wants it")


def test_a_cursor_read_in_a_dropped_copy_takes_nothing(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    inbox = connect(namespace)
    store = store_of(inbox)
    pushed = inbox.push("s", "k", "x", "src")
    cursor, entries, _ = store.read("s", None)
    assert entries == [pushed]
    drops = forgetting(store)
    spin_until(lambda: "s" in drops.sessions, "dropped")
    store._forget_after = 3600.0
    assert inbox.pending_count("s") == 1  # a new copy, read from the log
    # The cursor names the dropped copy's session: refused, as a cursor of a
    # life that ended is; the caller reads again.
    assert store.take("s", cursor, entries) is None
    assert inbox.drain("s") == [pushed]


def test_a_look_at_a_copy_dropped_since_it_was_found_fresh_goes_to_the_server(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # (A wanted session is never dropped: this drops one anyway, between the
    # look's test of freshness and its read, to check the look's own guard.)
    waiting, pushing, store = waiting_and_pushing(connect, redis_server)
    hearing(waiting, "s")
    pushing.push("s", "k", "x", "src")
    spin_until(lambda: store.has_pending_here("s") is True, "heard into a fresh copy")
    fresh = store._fresh

    def dropped_meanwhile(session_id: str) -> Any:
        track = fresh(session_id)
        with store._lock:
            store._tracks.pop(session_id)
            store._replica.forget(session_id)
        return track

    store._fresh = dropped_meanwhile  # type: ignore[method-assign]
    assert store.has_pending_here("s") is None
    assert store.read_here("s", None) is None


def test_threads_pushing_and_draining_while_copies_are_dropped_lose_nothing(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    inbox, other = connect(namespace), connect(namespace)
    drops = forgetting(store_of(inbox))
    sessions = [f"s{n}" for n in range(3)]
    barrier = threading.Barrier(6)
    pushed: list[list[InboxEntry]] = [[] for _ in range(4)]
    taken: list[InboxEntry] = []
    done = threading.Event()

    def produce(index: int) -> None:
        barrier.wait()
        for n in range(150):
            pushed[index].append(inbox.push(sessions[n % 3], "k", f"{index}/{n}", "src"))
            if n % 50 == 49:
                # Let the subscriber drop what is idle (it waits for the GIL).
                spin_until(lambda count=drops.passes: drops.passes > count, "a drop")

    def consume(drain: Callable[[str], list[InboxEntry]]) -> None:
        barrier.wait()
        while not done.is_set():
            for session_id in sessions:
                taken.extend(drain(session_id))

    producers = [threading.Thread(target=produce, args=(index,)) for index in range(4)]
    consumers = [
        threading.Thread(target=consume, args=(drain,)) for drain in (inbox.drain, other.drain)
    ]
    for thread in producers + consumers:
        thread.start()
    for thread in producers:
        thread.join()
    done.set()
    for thread in consumers:
        thread.join()
    for session_id in sessions:
        taken.extend(other.drain(session_id))
    assert drops.sessions
    everything = [entry for entries in pushed for entry in entries]
    assert sorted(taken, key=lambda e: (e.session_id, e.sequence)) == sorted(
        everything, key=lambda e: (e.session_id, e.sequence)
    )
    for session_id in sessions:
        sequences = sorted(e.sequence for e in everything if e.session_id == session_id)
        assert sequences == list(range(1, 201))


def test_a_session_wanted_as_its_copy_is_dropped_has_its_copy(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # A wait's look finds the session's track, then makes it wanted: a drop
    # in between must not leave it wanted without a track (the subscriber
    # reads the track of every wanted session).
    inbox = connect(redis_server.namespace())
    store = store_of(inbox)
    store._track("s")

    class DroppedOnceFound(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            found = super().get(key, default)
            if key == "s" and found is not None and "s" not in store._wanted:
                del self[key]  # (as the subscriber would, under the lock: it is free here)
            return found

    with store._lock:
        store._tracks = DroppedOnceFound(store._tracks)
    wanted = store._want("s")
    assert "s" in store._wanted
    assert store._tracks["s"] is wanted
    assert wanted.looked > 0


@pytest.mark.parametrize("heard_late", [False, True])
def test_a_parked_wait_whose_copy_is_read_again_is_not_ended_by_a_clear_long_past(
    connect: Callable[..., Inbox], redis_server: RedisServer, heard_late: bool
) -> None:
    # A copy read again replays the session's old clears: they are not news.
    # (A wait's copy is dropped only as the wait begins; here it is dropped
    # under a parked wait, which it then wakes to look again.) A message still
    # on its way from before the drop makes a new copy, stale: no news either.
    namespace = redis_server.namespace()
    waiting, other = connect(namespace), connect(namespace)
    other.push("s", "k", "before", "src")
    assert other.clear_session("s") == 1
    store = store_of(waiting)
    looks = ServerLooks(store)
    wait = parked_wait_sync(waiting, "s")
    seen = looks.count
    with store._lock:
        store._wanted.discard("s")
        dropped = store._tracks.pop("s")
        dropped.listening = False
        dropped.marks += 1
        store._replica.forget("s")
    if heard_late:
        store._heard("s", b'7 {"o":"tick","p":"x","n":1,"t":0}')
        assert not store._tracks["s"].loaded
    store._notify("s")
    spin_until(lambda: looks.count > seen, "the wait looked at the server again")
    spin_until(lambda: waiting.waiter_count("s") == 1, "parked again")
    assert wait.is_alive()
    pushed = other.push("s", "k", "after", "src")
    assert wait.outcome() is True
    assert waiting.drain("s") == [pushed]


def members(redis_server: RedisServer, namespace: str) -> int:
    """How many sessions the namespace's sessions set holds."""
    return integer(redis_server.command("SCARD", f"{namespace}:sessions"))


def log_length(server: RedisServer, namespace: str, session_id: str = "s") -> int:
    return integer(server.command("LLEN", f"{namespace}:log:{session_id}"))


def test_a_dropped_copy_compacts_its_log_and_an_idle_session_leaves_the_sessions_set(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    inbox = connect(namespace)
    store = store_of(inbox)
    first = [inbox.push(session_id, "k", "x", "src") for session_id in ("idle", "full")]
    assert inbox.drain("idle") == first[:1]
    assert members(redis_server, namespace) == 2
    drops = forgetting(store)
    spin_until(lambda: {"idle", "full"} <= set(drops.sessions), "both dropped")
    # Both logs are compacted into snapshots (by the housekeeping thread). With
    # nothing pending, `sessions` no longer reads the idle one; the other keeps its place.
    spin_until(lambda: members(redis_server, namespace) == 1, "the idle one compacted")
    assert integer(redis_server.command("LLEN", f"{namespace}:log:idle")) == 0
    spin_until(lambda: log_length(redis_server, namespace, "full") == 0, "the other compacted")
    store._forget_after = 3600.0
    listing = connect(namespace)
    assert listing.sessions() == ["full"]
    assert "idle" not in store_of(listing)._tracks  # not read at all
    # Its next operation puts it back, and its sequences go on.
    assert inbox.push("idle", "k", "y", "src").sequence == 2
    assert members(redis_server, namespace) == 2
    assert sorted(connect(namespace).sessions()) == ["full", "idle"]


def test_a_copy_dropped_behind_its_log_keeps_the_session_in_the_sessions_set(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    draining, pushing = connect(namespace), connect(namespace)
    pushing.push("s", "k", "x", "src")
    assert len(draining.drain("s")) == 1  # empty as far as its copy goes
    later = pushing.push("s", "k", "y", "src")  # not heard: it waits on nothing
    drops = forgetting(store_of(draining))
    spin_until(lambda: "s" in drops.sessions, "dropped")
    spin_until(lambda: log_length(redis_server, namespace) == 1, "compacted as far as it went")
    assert members(redis_server, namespace) == 1
    assert connect(namespace).sessions() == ["s"]
    assert draining.drain("s") == [later]


def test_compactions_of_dropped_copies_still_queued_at_close_are_sent(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    inbox = connect(namespace)
    store = store_of(inbox)
    inbox.push("s", "k", "x", "src")
    inbox.drain("s")
    store._closing.set()  # (the housekeeping thread stops; the subscriber goes on)
    assert store._keeper is not None
    store._keeper.join()
    drops = forgetting(store)
    spin_until(lambda: "s" in drops.sessions, "dropped")
    assert log_length(redis_server, namespace) == 2  # queued, not sent
    store.close()
    assert drops.compacted == ["s"]
    assert log_length(redis_server, namespace) == 0
    assert members(redis_server, namespace) == 0


def lose_every_key(server: RedisServer, namespace: str) -> None:
    """What a flush or a failover does to the namespace."""
    script = "for _, key in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', key) end"
    server.command("EVAL", script, "0", f"{namespace}:*")


def test_a_compaction_takes_any_operation_text_at_its_position(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # (The guard compares the text's digest: text that a JSON decoder of another
    # language refuses, such as a lone surrogate Python writes as an escape, is fine.)
    namespace = redis_server.namespace()
    inbox = connect(namespace)
    store = store_of(inbox)
    inbox.push("s", "k", "a\udc80", "src")
    assert contents(inbox.drain("s")) == ["a\udc80"]
    with store._lock:
        compaction = store._compaction("s", store._tracks["s"], 1, sized=False)
    assert compaction is not None
    store._compact_dropped([("s", compaction)])
    assert log_length(redis_server, namespace) == 0


def test_a_late_compaction_never_trims_a_log_written_again_after_the_server_lost_it(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # A compaction of the old log, sent after the server lost the data (a flush,
    # a failover) and the session's log was written again as far: refused.
    namespace = redis_server.namespace()
    old, new = connect(namespace), connect(namespace)
    store = store_of(old)
    old.push("s", "k", "old one", "src")
    old.push("s", "k", "old two", "src")
    assert len(old.drain("s")) == 2
    with store._lock:
        late = store._compaction("s", store._tracks["s"], 1, sized=False)
    assert late is not None
    assert late.position == 3
    lose_every_key(redis_server, namespace)
    written_again = [new.push("s", "k", f"new {n}", "src") for n in range(3)]
    store._compact_dropped([("s", late)])
    assert log_length(redis_server, namespace) == 3
    assert connect(namespace).drain("s") == written_again


def test_a_copy_that_heard_operations_since_its_last_use_is_dropped_uncompacted(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # What it heard last may be an operation whose sender is still retrying
    # and will need its result from the log: it compacts nothing.
    namespace = redis_server.namespace()
    waiting, other = connect(namespace), connect(namespace)
    store = store_of(waiting)
    hearing(waiting, "s")
    other.push("s", "k", "x", "src")
    assert len(other.drain("s")) == 1  # empty again, as far as the log goes
    spin_until(lambda: store._track("s").position == 2, "both heard")
    turns = turns_of_housekeeping(store)
    drops = forgetting(store)
    spin_until(lambda: "s" in drops.sessions, "dropped")
    turns(1)  # (what the drop queued, the housekeeping thread has sent)
    assert drops.compacted == []
    assert integer(redis_server.command("LLEN", f"{namespace}:log:s")) == 2
    assert members(redis_server, namespace) == 1


@pytest.mark.parametrize(
    ("operation", "error"),
    [
        ('{"o":"newer","p":"x","n":1,"t":0}', "unknown operation 'newer'"),
        ('{"o":"push","t":0}', "operation 1 of session 's'.s log cannot be replayed"),
        ("not JSON", "operation 1 of session 's'.s log cannot be replayed"),
        # (a copy of this process's first operation, as a retry appends, but damaged)
        ('{"p":"<ours>","n":1,"t":0}', "operation 1 of session 's'.s log cannot be replayed"),
    ],
)
def test_an_operation_this_code_cannot_replay_fails_every_use_and_leaves_no_copy(
    connect: Callable[..., Inbox], redis_server: RedisServer, operation: str, error: str
) -> None:
    # (A newer layout's operation, say, in a namespace whose schema key says
    # this one; or a damaged one.) The copy is read again from the log at every
    # use, never carried past it, so this process never answers from a copy
    # that lacks it.
    namespace = redis_server.namespace()
    inbox = connect(namespace)
    store = store_of(inbox)
    inbox.push("s", "k", "x", "src")
    redis_server.command("RPUSH", f"{namespace}:log:s", operation.replace("<ours>", store._process))
    for _ in range(2):
        with pytest.raises(StoreError, match=error):
            inbox.push("s", "k", "y", "src")
        assert store._tracks["s"].position == 0
        assert store._tracks["s"].last is None
        assert "s" not in store._replica._sessions
    # The pushes reached the log, their results unknown: the subscriber, whose
    # tick fails likewise, stops naming them (nothing can be given back here).
    spin_until(lambda: not store._lost, "the lost operations given up")
    # A look whose copy is reset between its replay and its read (by the
    # subscriber, hearing such an operation) says so, rather than read nothing.
    inbox.push("t", "k", "x", "src")
    catch_up = store._catch_up

    def reset_after(*session_ids: str) -> None:
        catch_up(*session_ids)
        with store._lock:
            store._reset("t", store._tracks["t"])

    store._catch_up = reset_after  # type: ignore[method-assign]
    with pytest.raises(StoreError, match="'t' holds an operation this process could not"):
        inbox.pending_count("t")


def test_a_selective_take_of_entries_sharing_a_sequence_takes_the_ones_chosen(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # After a clear, an entry of the earlier life put back may share its
    # sequence with one pushed since: the take names which of them it chose.
    namespace = redis_server.namespace()
    inbox, other = connect(namespace), connect(namespace)
    old, new = requeued_beside_a_twin(inbox, "s", "old", "new")
    assert inbox.drain_where("s", lambda entry: entry.content == "new") == [new]
    assert other.snapshot("s") == inbox.snapshot("s") == [old]
    twin = inbox.push("s", "k", "old", "src")  # (equal to it but for its clock reading)
    assert inbox.drain_where("s", lambda entry: entry.content == "old") == [old, twin]
    assert other.pending_count("s") == 0


def test_a_selective_claim_of_two_equal_entries_takes_and_gives_back_both(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    namespace = redis_server.namespace()
    inbox, other = connect(namespace), connect(namespace)
    old, new = requeued_beside_a_twin(inbox, "s")
    assert new == old
    claim = inbox.claim("s", lambda entry: True)
    with pytest.raises(RuntimeError, match="handler"), claim as taken:  # noqa: PT012 (a claim's block)
        assert taken == [old, new]
        raise RuntimeError("handler failed")
    assert other.snapshot("s") == inbox.snapshot("s") == [old, new]
