"""`RedisStore` faults: what the inbox does when its server is down, dies, stalls or is newer.

Each test runs on the test session's private ``redis-server`` (the
``redis_server`` fixture: AOF with ``appendfsync always``, killed, restarted,
paused and resumed on demand), in a namespace of its own, and checks two
things: the documented outcome of the fault (a `StoreError` naming the server,
a wait that still wakes, a lease that gives entries back, a local close), and
the accounting around it: every entry pushed and acknowledged is delivered
exactly once, and each session's sequences stay gapless.

Waking across the network is real time, so some steps wait for an event with
a generous bound (`GUARD_SECONDS`); no verdict depends on how long anything
took, only a broken library gets near the bound. Timeouts and leases run on
a `ManualClock`. Where a test must know more than the public surface says (a
waiter has finished its armed look; a subscriber is reconnecting), it wraps a
store's private method on that one instance: `LookCounter`, `ReconnectGate`.

Where the library falls short of that, the test states what should hold and
is marked ``xfail(strict=True)``, its reason saying precisely what happens
instead: a fix makes it pass, and strict xfail then fails until the mark goes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import redis
from _redis_server import RedisServer, free_port, integer
from _support import (
    LookCounter,
    ThreadCall,
    asleep_on_a_fresh_copy,
    everything,
    parked_wait_sync,
    spin_until,
    store_of,
    turns_of_housekeeping,
)

from harn_inbox import Inbox, InboxClosed, InboxEntry, ManualClock, StoreError
from harn_inbox.stores import RedisStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from conftest import Backend

#: The start of every test's `ManualClock`.
START_MS = 1_000_000

#: How long a step may wait for something that should happen at once (a wake over the
#: network, a reconnection) before the test fails saying so. Not a verdict.
GUARD_SECONDS = 10.0

#: What a `StoreError` for an operation that may have reached the server says about it.
MAY_OR_MAY_NOT = "an operation that changes a session may or may not have been applied"

# -- Helpers ---------------------------------------------------------------------------------------


def push(inbox: Inbox, session_id: str, content: str, **options: Any) -> InboxEntry:
    return inbox.push(session_id, "tool_result", content, "worker", **options)


def listed(entries: list[InboxEntry]) -> list[tuple[int, str]]:
    """Entries as (sequence, content): what accounting compares."""
    return [(entry.sequence, entry.content) for entry in entries]


def gapless(entries: list[InboxEntry]) -> bool:
    return [entry.sequence for entry in entries] == list(range(1, len(entries) + 1))


def subscribers(namespace: str) -> list[threading.Thread]:
    """The live subscriber threads of stores on *namespace* (in this process)."""
    name = f"harn_inbox redis subscriber {namespace}"
    return [thread for thread in threading.enumerate() if thread.name == name]


def listening(server: RedisServer, namespace: str, inbox: Inbox) -> None:
    """Have *inbox*'s store listen to session "s" (a wait's look does that), and see it does."""
    assert inbox.wait_sync("s", timeout=0) is False
    spin_until(lambda: server.subscriptions(namespace) == 1, "subscribed", GUARD_SECONDS)


@contextmanager
def server_down(server: RedisServer) -> Iterator[None]:
    """SIGKILL the server; start it again (it replays its AOF) on the way out, whatever happened."""
    server.kill()
    try:
        yield
    finally:
        assert server.process is not None
        if server.process.poll() is not None:
            server.start()


@contextmanager
def server_paused(server: RedisServer) -> Iterator[None]:
    """SIGSTOP the server; SIGCONT it on the way out, whatever happened."""
    server.pause()
    try:
        yield
    finally:
        server.resume()


class ReconnectGate:
    """Holds a store's listener (its thread, or an event loop's) back from subscribing
    again until `open`.

    A listener slow to reconnect: anything pushed while it is held publishes
    to nobody of that store, so only the ``notify_all`` that follows its
    reconnection can wake that store's waiters. Install it once the store is
    subscribed (`subscriptions`), so that only re-subscriptions are held.
    """

    def __init__(self, store: RedisStore) -> None:
        self.held = 0
        self._opened = threading.Event()
        client = store._client
        pubsub, connect_listener = client.pubsub, store._connect_listener

        def held_pubsub(**kwargs: Any) -> Any:
            self._hold()
            return pubsub(**kwargs)

        def held_connect_listener(listener: object, again: bool) -> Any:
            if again:  # (an event loop's first connection is not a reconnection)
                self._hold()
            return connect_listener(listener, again)

        client.pubsub = held_pubsub
        store._connect_listener = held_connect_listener  # type: ignore[method-assign]

    def _hold(self) -> None:
        self.held += 1
        self._opened.wait(GUARD_SECONDS)

    def open(self) -> None:
        self._opened.set()


async def until(backend: Backend, condition: Callable[[], bool], what: str) -> None:
    """Let the loop run (in real time: threads do the work) until *condition* holds."""
    give_up = time.monotonic() + GUARD_SECONDS
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"never happened: {what}")
        await backend.sleep(0.001)


def kill_subscriptions(server: RedisServer) -> None:
    """Close every pub/sub connection of the server, as a network fault would."""
    assert server.command("CLIENT", "KILL", "TYPE", "pubsub").startswith(b":")


# -- 1. A server that cannot be reached ------------------------------------------------------------


def test_an_unreachable_server_fails_the_inbox_with_a_store_error_naming_it() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    namespace = f"unreachable{uuid.uuid4().hex[:8]}"
    store = RedisStore(url, namespace=namespace, retries=1)
    try:
        with pytest.raises(StoreError) as failure:
            Inbox(store=store)
    finally:
        store.close()
    message = str(failure.value)
    assert url in message
    assert f"namespace={namespace!r}" in message
    assert "did not answer after 2 tries" in message  # the first try and one retry
    assert not subscribers(namespace)  # no thread left listening for an inbox that never was


def test_an_attach_that_failed_wrote_nothing_on_the_server(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    namespace = redis_server.namespace()
    store = RedisStore(redis_server.url, namespace=namespace, retries=0)
    try:
        with server_down(redis_server), pytest.raises(StoreError, match="did not answer"):
            Inbox(store=store)
    finally:
        store.close()
    assert not subscribers(namespace)
    assert redis_server.command("KEYS", f"{namespace}:*") == b"*0\r\n"
    # The namespace is as new: a working inbox starts it at sequence 1.
    assert push(connect(namespace), "s", "first").sequence == 1


def test_a_store_whose_attach_failed_attaches_once_the_server_is_back(
    redis_server: RedisServer,
) -> None:
    namespace = redis_server.namespace()
    store = RedisStore(redis_server.url, namespace=namespace, retries=0)
    try:
        with server_down(redis_server), pytest.raises(StoreError):
            Inbox(store=store)
        inbox = Inbox(store=store, clock=ManualClock(start_ms=START_MS))
        assert push(inbox, "s", "first").sequence == 1
        inbox.close()
    finally:
        store.close()


# -- 2. A server killed mid-run --------------------------------------------------------------------


def test_a_push_while_the_server_is_dead_fails_and_pushes_resume_after_its_restart(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    namespace = redis_server.namespace()
    a = connect(namespace, retries=1)
    b = connect(namespace)
    acknowledged = [push(a, "s", "#0"), push(b, "s", "#1"), push(a, "s", "#2")]
    with server_down(redis_server):
        with pytest.raises(StoreError) as failure:
            push(a, "s", "while dead")
        message = str(failure.value)
        assert redis_server.url in message
        assert "did not answer after 2 tries" in message
        assert MAY_OR_MAY_NOT in message
        with pytest.raises(StoreError):
            b.drain("s")  # a take fails the same way (default retries)
    after = push(a, "s", "after restart")
    fresh = connect(namespace)
    pending = fresh.snapshot("s")
    # Everything acknowledged before the kill is there (AOF), in order; the failed push
    # may or may not be (the message says so), but never twice; sequences stay gapless.
    assert listed(pending[:3]) == listed(acknowledged)
    assert [entry.content for entry in pending].count("while dead") <= 1
    assert gapless(pending)
    assert pending[-1] == after
    assert a.snapshot("s") == b.snapshot("s") == pending
    delivered = b.drain("s")
    assert delivered == pending
    assert a.drain("s") == fresh.drain("s") == []


# -- 3. The subscription lost during a wait --------------------------------------------------------


def lose_the_subscription_and_push(
    server: RedisServer, namespace: str, gate: ReconnectGate, pusher: Inbox
) -> InboxEntry:
    """Kill every subscription, push from *pusher* while *gate*'s store is not subscribed."""
    kill_subscriptions(server)
    # The waiting store saw its connection die and is held before subscribing again.
    spin_until(lambda: gate.held >= 1, "the subscriber noticed its connection died", GUARD_SECONDS)
    return push(pusher, "s", "pushed while unsubscribed")


@pytest.mark.parametrize("way", ["wait", "wait_for"])
def test_an_async_wait_returns_an_entry_pushed_while_its_subscription_was_down(
    backend: Backend, redis_server: RedisServer, connect: Callable[..., Inbox], way: str
) -> None:
    namespace = redis_server.namespace()
    a = connect(namespace)
    b = connect(namespace)
    listening(redis_server, namespace, a)  # (b only pushes: it listens to nothing)
    looks = LookCounter(store_of(a))
    gate = ReconnectGate(store_of(a))

    async def main() -> tuple[object, InboxEntry]:
        async with backend.task_group() as group:
            if way == "wait":
                waiter = group.start_soon(a.wait, "s")
            else:
                waiter = group.start_soon(a.wait_for, "s", everything)
            # Parked, and heard by its event loop (which took over from the thread).
            await until(
                backend,
                lambda: (
                    a.waiter_count("s") == 1
                    and looks.count >= 2
                    and store_of(a)._track("s").listening
                ),
                "parked, heard",
            )
            try:
                pushed = await backend.to_thread(
                    lose_the_subscription_and_push, redis_server, namespace, gate, b
                )
            finally:
                gate.open()
        return waiter.result, pushed

    result, pushed = backend.run_in_real_time(main)
    if way == "wait":
        assert result is True
        assert a.drain("s") == [pushed]
    else:
        assert result == [pushed]
    assert a.drain("s") == b.drain("s") == []
    assert pushed.sequence == 1


def test_a_thread_wait_returns_an_entry_pushed_while_its_subscription_was_down(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    namespace = redis_server.namespace()
    a = connect(namespace)
    b = connect(namespace)
    listening(redis_server, namespace, a)  # (b only pushes: it listens to nothing)
    looks = LookCounter(store_of(a))
    gate = ReconnectGate(store_of(a))
    waiter = parked_wait_sync(a, "s")
    spin_until(lambda: looks.count >= 2, "the armed look finished", GUARD_SECONDS)
    try:
        pushed = lose_the_subscription_and_push(redis_server, namespace, gate, b)
    finally:
        gate.open()
    assert waiter.outcome() is True
    assert a.drain("s") == [pushed]
    assert a.drain("s") == b.drain("s") == []
    # Subscribed again, and a later push wakes across the stores as before.
    spin_until(
        lambda: redis_server.subscriptions(namespace) == 1, "subscribed again", GUARD_SECONDS
    )
    waiter = parked_wait_sync(a, "s")
    later = push(b, "s", "later")
    assert waiter.outcome() is True
    assert a.drain("s") == [later]
    assert later.sequence == 2


@pytest.mark.parametrize("listener", ["thread", "loop"])
def test_a_parked_wait_outlives_a_server_outage_and_wakes_on_a_push_after_it(
    backend: Backend, redis_server: RedisServer, connect: Callable[..., Inbox], listener: str
) -> None:
    # While the server is away the listener tries to subscribe again and
    # again; none of its tries may wake the wait, whose look would fail.
    namespace = redis_server.namespace()
    a, b = connect(namespace), connect(namespace)
    store = store_of(a)
    if listener == "thread":
        store._loops_may_listen = False
    tries = threading.Semaphore(0)
    begins, connect_listener = store._listening_begins, store._connect_listener

    def counted_begins(holder: object) -> Any:  # (the thread's try: then it subscribes)
        tries.release()
        return begins(holder)

    def counted_connect(holder: object, again: bool) -> Any:  # (a loop's try)
        tries.release()
        return connect_listener(holder, again)

    async def main() -> object:
        async with backend.task_group() as group:
            asleep = asleep_on_a_fresh_copy(store, "s")
            waiter = group.start_soon(a.wait, "s")
            await until(backend, asleep, "asleep on a fresh copy")
            store._listening_begins = counted_begins  # type: ignore[method-assign]
            store._connect_listener = counted_connect  # type: ignore[method-assign]
            with server_down(redis_server):
                for _ in range(10):  # a second of tries
                    assert await backend.to_thread(tries.acquire, True, GUARD_SECONDS)
                assert a.waiter_count("s") == 1  # still waiting, not failed
            await until(backend, lambda: store._track("s").listening, "subscribed again")
            pushed = push(b, "s", "after the outage")
        return waiter.result, pushed

    result, pushed = backend.run_in_real_time(main)
    assert result is True
    assert a.drain("s") == [pushed]


# -- 4. A server restarted: its AOF keeps what was acknowledged ------------------------------------


def test_a_restarted_server_keeps_exactly_the_acknowledged_undrained_entries(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    namespace = redis_server.namespace()
    clock = ManualClock(start_ms=START_MS)
    inboxes = [connect(namespace, clock) for _ in range(3)]
    pushed: dict[str, list[InboxEntry]] = {"s1": [], "s2": [], "s3": []}
    delivered: dict[str, list[InboxEntry]] = {"s1": [], "s2": [], "s3": []}
    for n in range(18):
        session_id = f"s{n % 3 + 1}"
        pushed[session_id].append(push(inboxes[n % 2], session_id, f"#{n}"))
        if n in (4, 10):
            delivered["s2"] += inboxes[2].drain("s2")
        clock.advance(0.001)
    delivered["s1"] += inboxes[1].drain_where("s1", lambda entry: entry.sequence % 2 == 1)
    delivered["s3"] += inboxes[0].drain("s3")
    expected = {
        session_id: [entry for entry in entries if entry not in delivered[session_id]]
        for session_id, entries in pushed.items()
    }
    assert expected["s3"] == []
    redis_server.restart()
    fresh = connect(namespace, clock)
    assert sorted(fresh.sessions()) == ["s1", "s2"]
    for session_id, entries in expected.items():
        assert fresh.snapshot(session_id) == entries
        for inbox in inboxes:  # replicas from before the restart agree
            assert inbox.snapshot(session_id) == entries
    # Sequences carry on where they stood, whoever pushes.
    for session_id, entries in pushed.items():
        after = [push(fresh, session_id, "after"), push(inboxes[0], session_id, "after")]
        assert [entry.sequence for entry in after] == [len(entries) + 1, len(entries) + 2]
        entries += after
    for session_id, entries in pushed.items():
        delivered[session_id] += inboxes[1].drain(session_id)
        assert sorted(delivered[session_id], key=lambda entry: entry.sequence) == entries
        assert gapless(entries)
        assert fresh.pending_count(session_id) == 0


# -- 5. A server paused (SIGSTOP): a look blocks in the 5 s socket timeout -------------------------


def test_a_timed_wait_whose_deadline_passes_in_a_pause_returns_false_once_the_server_answers(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    namespace = redis_server.namespace()
    clock = ManualClock(start_ms=START_MS)
    a = connect(namespace, clock)
    looks = LookCounter(store_of(a))
    waiter = parked_wait_sync(a, "s", timeout=1.0)
    spin_until(lambda: looks.count >= 2, "the armed look finished", GUARD_SECONDS)
    with server_paused(redis_server):
        clock.advance(1.0)  # the deadline passes: the wait looks once more, on a stalled server
    assert waiter.outcome() is False
    entry = push(a, "s", "after")
    assert entry.sequence == 1
    assert a.drain("s") == [entry]


def test_a_timed_wait_ends_with_false_at_its_deadline_while_the_server_is_paused(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    namespace = redis_server.namespace()
    clock = ManualClock(start_ms=START_MS)
    a = connect(namespace, clock, retries=0)
    looks = LookCounter(store_of(a))
    waiter = parked_wait_sync(a, "s", timeout=1.0)
    spin_until(lambda: looks.count >= 2, "the armed look finished", GUARD_SECONDS)
    with server_paused(redis_server):
        clock.advance(1.0)
        waiter.join(GUARD_SECONDS)
        assert not waiter.is_alive(), "the wait did not end at its deadline"
        assert waiter.outcome() is False


@pytest.mark.parametrize("way", ["wait", "wait_for"])
def test_an_async_timed_wait_ends_at_its_deadline_while_the_server_is_paused(
    backend: Backend, redis_server: RedisServer, connect: Callable[..., Inbox], way: str
) -> None:
    clock = ManualClock(start_ms=START_MS)
    a = connect(redis_server.namespace(), clock, retries=0)
    looks = LookCounter(store_of(a))
    call = (
        partial(a.wait, "s", 1.0)
        if way == "wait"
        else partial(a.wait_for, "s", lambda entry: True, 1.0)
    )

    async def main() -> object:
        async with backend.task_group() as group:
            task = group.start_soon(call)
            await until(backend, lambda: a.waiter_count("s") == 1 and looks.count >= 2, "parked")
            with server_paused(redis_server):
                clock.advance(1.0)  # its last look stalls; it is abandoned
                await until(backend, lambda: task.finished, "the wait ended")
        return task.result

    assert backend.run_in_real_time(main) in (False, [])


def test_a_push_that_timed_out_on_a_paused_server_is_stored_once_when_retried_with_its_key(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    namespace = redis_server.namespace()
    a = connect(namespace, retries=0)
    first = push(a, "s", "#0")
    with server_paused(redis_server), pytest.raises(StoreError) as failure:
        push(a, "s", "retried", dedupe_key="retried")
    message = str(failure.value)
    assert redis_server.url in message
    assert "did not answer after 1 tries" in message
    assert MAY_OR_MAY_NOT in message
    # The producer retries with the same key: the push is stored once, whether the
    # first attempt reached the server (it sat in its socket) or not.
    retried = push(a, "s", "retried", dedupe_key="retried")
    fresh = connect(namespace)
    assert listed(fresh.snapshot("s")) == [(1, "#0"), (2, "retried")]
    assert a.snapshot("s") == fresh.snapshot("s") == [first, retried]
    assert push(fresh, "s", "#2").sequence == 3
    assert listed(a.drain("s")) == [(1, "#0"), (2, "retried"), (3, "#2")]
    assert fresh.drain("s") == []


def test_a_drain_that_timed_out_on_a_paused_server_loses_no_entry(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    namespace = redis_server.namespace()
    a = connect(namespace, retries=0)
    pushed = [push(a, "s", "#0"), push(a, "s", "#1")]
    with server_paused(redis_server), pytest.raises(StoreError, match="may or may not"):
        a.drain("s")
    # The drain reached the log when the server resumed and took the entries;
    # its process finds it there and gives them back, at the head, in order:
    # one operation, whose push to the head wakes a wait on the session.
    fresh = connect(namespace)
    assert ThreadCall(fresh.wait_sync, "s", None).outcome() is True
    assert fresh.drain("s") == pushed
    assert fresh.drain("s") == [] == a.drain("s")
    assert push(fresh, "s", "#2").sequence == 3


def test_a_drain_heard_before_its_reply_was_lost_returns_what_it_took(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    # Its message came back and was replayed before the connection failed: the
    # drain ran, once, and its result is in hand. Raising would lose the
    # entries: a replay that already happened gives nothing back.
    namespace = redis_server.namespace()
    a, other = connect(namespace, retries=0), connect(namespace)
    store = store_of(a)
    pushed = [push(other, "s", "#0"), push(other, "s", "#1")]
    store._want("s")
    spin_until(lambda: store._track("s").listening, "the session is heard")
    store.pending_count("s")  # the replica caught up: the drain's message is the next one
    heard = threading.Event()
    hear, append = store._heard, store._append

    def hearing(session_id: str, data: bytes) -> None:
        hear(session_id, data)
        if b'"o":"drain"' in data:
            heard.set()

    def append_then_lose_the_reply(**kwargs: Any) -> Any:
        append(**kwargs)
        assert heard.wait(GUARD_SECONDS), "the drain was not heard"
        raise redis.ConnectionError("the reply was lost")

    store._heard = hearing  # type: ignore[method-assign]
    store._append = append_then_lose_the_reply
    assert a.drain("s") == pushed
    store._append = append
    assert store._lost == {}
    assert other.drain("s") == [] == a.drain("s")
    assert push(other, "s", "#2").sequence == 3


def test_a_retried_drain_whose_first_copy_was_compacted_away_raises_and_gives_back(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    # Its first copy reached the log, its reply did not, and before the retry
    # another process replayed it and compacted the log past it: its result
    # is nowhere to be read. It raises rather than return nothing, and the
    # next operation of its process gives back what it took, at the head.
    namespace = redis_server.namespace()
    a, other = connect(namespace, retries=1), connect(namespace)
    store, others = store_of(a), store_of(other)
    others._compact_after = 10
    push(other, "s", "#0")
    append = store._append
    tries = 0

    def append_lose_the_reply_then_compact(**kwargs: Any) -> Any:
        nonlocal tries
        tries += 1
        reply = append(**kwargs)
        if tries == 1:
            for n in range(10):  # the other process goes on, and compacts
                push(other, "s", f"later {n}")
                other.drain("s")
            assert others._track("s").base > 1
            raise redis.ConnectionError("the reply was lost")
        return reply

    store._append = append_lose_the_reply_then_compact
    with pytest.raises(StoreError, match="compacted the log past it"):
        a.drain("s")
    assert tries == 2
    assert listed(a.drain("s")) == [(1, "#0")]
    assert a.drain("s") == [] == other.drain("s")


@contextmanager
def replies_lost(store: RedisStore, error: BaseException | None = None) -> Iterator[None]:
    """Every operation *store* appends reaches the log, and its reply is lost (*error*)."""
    append = store._append

    def append_then_lose_the_reply(**kwargs: Any) -> Any:
        append(**kwargs)
        raise error or redis.ConnectionError("the reply was lost")

    store._append = append_then_lose_the_reply
    try:
        yield
    finally:
        store._append = append


@contextmanager
def not_named_yet(store: RedisStore) -> Iterator[None]:
    """*store*'s subscriber does not name its lost operations (append a tick) until the end."""
    recover = store._name_lost
    store._name_lost = lambda: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        store._name_lost = recover  # type: ignore[method-assign]


def losing_and_other(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> tuple[Inbox, RedisStore, Inbox, list[InboxEntry]]:
    """An inbox whose replies are to be lost (no retries), its store, another, and two entries
    the other pushed into session "s"."""
    namespace = redis_server.namespace()
    a, other = connect(namespace, retries=0), connect(namespace)
    return a, store_of(a), other, [push(other, "s", f"#{n}") for n in range(2)]


def threads_stopped(store: RedisStore) -> None:
    """Stop *store*'s subscriber and housekeeping threads, as its close does first."""
    store._stopping.set()
    store._closing.set()
    for thread in (store._subscriber, store._keeper):
        assert thread is not None
        thread.join(GUARD_SECONDS)
        assert not thread.is_alive()


def drain_lost(inbox: Inbox, store: RedisStore, session_id: str = "s") -> None:
    """*inbox* drains *session_id*: the drain reaches the log, its caller gets `StoreError`."""
    with replies_lost(store), pytest.raises(StoreError, match=MAY_OR_MAY_NOT):
        inbox.drain(session_id)


@pytest.mark.parametrize("ahead", [0.0, 600.0], ids=["one clock", "the other's 10 min ahead"])
@pytest.mark.parametrize("taking", ["drain", "drain_where", "claim"])
def test_what_a_lost_operation_took_comes_back_though_another_process_compacted_past_it(
    redis_server: RedisServer, connect: Callable[..., Inbox], taking: str, ahead: float
) -> None:
    # Its reply was lost, and another process compacted the log past it before
    # this process could replay it: the snapshot keeps what it took (the last
    # take of each process, the claims held), and the tick its process appends
    # names it, so its replay gives it back, at the head, in order. (The other
    # process's clock may be ahead: what is kept does not depend on clocks.)
    namespace = redis_server.namespace()
    a = connect(namespace, retries=0, claim_lease=3600.0)  # (no lease passes on either clock)
    other = connect(namespace, ManualClock(start_ms=START_MS + round(ahead * 1000)))
    store, others = store_of(a), store_of(other)
    others._compact_after = 2
    pushed = [push(other, "s", f"#{n}") for n in range(3)]
    take = {
        "drain": partial(a.drain, "s"),
        "drain_where": partial(a.drain_where, "s", everything),
        "claim": a.claim("s").__enter__,
    }[taking]
    with not_named_yet(store):
        with replies_lost(store), pytest.raises(StoreError, match=MAY_OR_MAY_NOT):
            take()
        assert store._lost
        assert other.pending_count("s") == 0  # it took them
        for n in range(4):  # the other process goes on, and compacts past it
            push(other, "s", f"later #{n}")
            other.drain("s")
        assert others._track("s").base > 4
    spin_until(lambda: not store._lost, "the lost operation named", GUARD_SECONDS)
    fresh = connect(namespace)
    assert fresh.drain("s") == pushed
    assert fresh.drain("s") == [] == a.drain("s")
    assert push(fresh, "s", "#7").sequence == 8


class Interrupt(BaseException):
    """What a signal handler might raise in the middle of a round trip."""


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (redis.ConnectionError("the reply was lost"), StoreError),
        (redis.InvalidResponse("a reply it cannot read"), StoreError),
        (Interrupt(), Interrupt),
    ],
    ids=["connection", "garbled reply", "interrupt"],
)
def test_what_a_drain_took_comes_back_whatever_ended_its_round_trip(
    redis_server: RedisServer,
    connect: Callable[..., Inbox],
    error: BaseException,
    raised: type[BaseException],
) -> None:
    # Not only a failed connection: whatever leaves the round trip without its
    # result makes the operation a lost one. A push's loss takes nothing, and
    # is not named.
    a, store, other, pushed = losing_and_other(redis_server, connect)
    with not_named_yet(store), replies_lost(store, error):
        with pytest.raises(raised):
            push(a, "s", "#2")
        assert store._lost == {}
        pushed.append(other.snapshot("s")[-1])
        with pytest.raises(raised):
            a.drain("s")
        assert list(store._lost.values()) == ["s"]
    spin_until(lambda: not store._lost, "the lost drain named", GUARD_SECONDS)
    assert other.drain("s") == pushed


def test_a_lost_operation_is_named_a_last_time_when_its_store_closes(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    a, store, other, pushed = losing_and_other(redis_server, connect)
    with not_named_yet(store):
        drain_lost(a, store)
        threads_stopped(store)  # (nothing names it but the close)
    a.close()
    store.close()
    assert store._lost == {}
    assert other.drain("s") == pushed


def test_a_tick_whose_own_result_is_lost_keeps_the_operations_it_named(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    # The tick that names a lost drain fails as operations do (here: another
    # process compacted the log past it): the drain stays lost, and is named
    # again. Only a log this code cannot replay makes it give up.
    a, store, other, pushed = losing_and_other(redis_server, connect)
    assert a.pending_count("s") == 2  # (its copy reads the log, as a tick's reply would)
    run = store._run
    with not_named_yet(store):
        drain_lost(a, store)

        def compacted_past(session_id: str, operation: dict[str, Any], **kwargs: Any) -> Any:
            raise StoreError("an operation was applied, but its result is lost")

        store._run = compacted_past  # type: ignore[method-assign]
        lost = dict(store._lost)
        RedisStore._name_lost(store)  # (the subscriber's turn)
        assert store._lost == lost
        store._run = run  # type: ignore[method-assign]
    spin_until(lambda: not store._lost, "the lost drain named", GUARD_SECONDS)
    assert other.drain("s") == pushed


def test_a_close_names_lost_operations_once_and_stops_at_the_first_failure(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    # (Not a retry per session, each waiting out the server's timeout.)
    a, store, other, _ = losing_and_other(redis_server, connect)
    push(other, "t", "#0")
    with not_named_yet(store):
        for session_id in ("s", "t"):
            drain_lost(a, store, session_id)
    assert sorted(store._lost.values()) == ["s", "t"]
    store._retries = 3
    threads_stopped(store)
    sent = []
    append = store._append

    def counted(**kwargs: Any) -> Any:
        sent.append(kwargs)
        return append(**kwargs)

    store._append = counted
    with server_down(redis_server):
        a.close()
        store.close()
    assert len(sent) == 1
    assert sorted(store._lost.values()) == ["s", "t"]  # (not given up)


def test_what_several_lost_operations_took_comes_back_in_order(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    # Each operation names the lost ones before it: the second drain gives back
    # what the first took, then takes it again with the rest; its own loss is
    # named by the tick.
    a, store, other, pushed = losing_and_other(redis_server, connect)
    with not_named_yet(store):
        drain_lost(a, store)
        pushed.append(push(other, "s", "#2"))
        assert other.snapshot("s") == pushed[2:]
        drain_lost(a, store)
        assert other.snapshot("s") == []
        assert len(store._lost) == 2
    spin_until(lambda: not store._lost, "the lost operations named", GUARD_SECONDS)
    assert other.drain("s") == pushed


# -- 6. A namespace written by a newer schema ------------------------------------------------------


def test_a_namespace_of_a_newer_schema_is_refused_at_attach_saying_how_to_fix_it(
    redis_server: RedisServer,
) -> None:
    namespace = redis_server.namespace()
    assert redis_server.command("SET", f"{namespace}:schema", "2") == b"+OK\r\n"
    store = RedisStore(redis_server.url, namespace=namespace)
    try:
        with pytest.raises(StoreError) as failure:
            Inbox(store=store)
    finally:
        store.close()
    message = str(failure.value)
    assert redis_server.url in message
    assert repr(namespace) in message
    assert "schema 2" in message
    assert "reads schema 1" in message
    assert "upgrade harn_inbox, or use another namespace" in message
    assert not subscribers(namespace)
    # Nothing written, nothing rewritten: the newer schema's mark stands.
    assert redis_server.command("KEYS", f"{namespace}:*") == (
        f"*1\r\n${len(namespace) + 7}\r\n{namespace}:schema\r\n".encode()
    )
    assert redis_server.command("GET", f"{namespace}:schema") == b"$1\r\n2\r\n"


def test_an_operation_on_a_namespace_upgraded_under_it_is_refused_and_not_applied(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    namespace = redis_server.namespace()
    a = connect(namespace)
    first = push(a, "s", "#0")
    redis_server.command("SET", f"{namespace}:schema", "2")
    with pytest.raises(
        StoreError, match=r"schema 2\b.*upgrade harn_inbox, or use another namespace"
    ):
        push(a, "s", "refused")
    with pytest.raises(StoreError, match="schema 2"):
        a.drain("s")
    assert integer(redis_server.command("LLEN", f"{namespace}:log:s")) == 1
    redis_server.command("SET", f"{namespace}:schema", "1")
    second = push(a, "s", "#1")
    assert second.sequence == 2
    assert a.drain("s") == [first, second]


# -- 7. Claims across crashes: leases and fencing --------------------------------------------------

#: A claimant that dies: ``python -c CHILD url namespace start_ms lease session...``. It claims
#: each session's entries, prints ``<session> <sequence>...`` per claim, and exits
#: with ``os._exit(1)``: never settling, never releasing.
CHILD = """
import os, sys
from harn_inbox import Inbox, ManualClock
from harn_inbox.stores import RedisStore
url, namespace, start_ms, lease, *sessions = sys.argv[1:]
store = RedisStore(url, namespace=namespace, claim_lease=float(lease))
inbox = Inbox(store=store, clock=ManualClock(start_ms=int(start_ms)))
for session_id in sessions:
    entries = inbox.claim(session_id).__enter__()
    print(session_id, *(entry.sequence for entry in entries), flush=True)
os._exit(1)
"""

LEASE_SECONDS = 30.0


def claim_and_die(server: RedisServer, namespace: str, *session_ids: str) -> dict[str, list[int]]:
    """Run a child that claims *session_ids* and dies; return the sequences it claimed."""
    words = [server.url, namespace, str(START_MS), str(LEASE_SECONDS), *session_ids]
    child = subprocess.run(
        [sys.executable, "-c", CHILD, *words],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert child.returncode == 1, child.stderr
    claimed = {}
    for line in child.stdout.splitlines():
        session_id, *sequences = line.split()
        claimed[session_id] = [int(sequence) for sequence in sequences]
    return claimed


def test_entries_of_a_claimant_that_died_come_back_at_the_head_when_its_lease_passes(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    namespace = redis_server.namespace()
    clock = ManualClock(start_ms=START_MS)
    parent = connect(namespace, clock, claim_lease=LEASE_SECONDS)
    held = [push(parent, "held", f"held #{n}") for n in range(3)]
    queued = [push(parent, "queued", f"queued #{n}") for n in range(3)]
    assert claim_and_die(redis_server, namespace, "held", "queued") == {
        "held": [1, 2, 3],
        "queued": [1, 2, 3],
    }
    # The parent's replica replays the claims: nothing is pending while the lease runs.
    assert parent.pending_count("held") == parent.pending_count("queued") == 0
    queued += [push(parent, "queued", f"queued #{n}") for n in (3, 4)]
    waiter = parked_wait_sync(parent, "held")
    clock.advance(LEASE_SECONDS - 0.001)
    assert parent.snapshot("queued") == queued[3:]  # not yet
    clock.advance(0.001)
    # The parent's subscriber ticks the sessions whose leases passed: the wait wakes.
    assert waiter.outcome() is True
    assert parent.drain("held") == held
    assert parent.drain("queued") == queued  # given back at the head, in order
    assert gapless(queued)
    assert connect(namespace, clock).drain("queued") == []


def test_a_process_that_never_saw_a_dead_claim_drains_its_entries_once_the_lease_passed(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    namespace = redis_server.namespace()
    clock = ManualClock(start_ms=START_MS)
    parent = connect(namespace, clock, claim_lease=LEASE_SECONDS)
    pushed = [push(parent, "s", f"#{n}") for n in range(3)]
    assert claim_and_die(redis_server, namespace, "s") == {"s": [1, 2, 3]}
    clock.advance(LEASE_SECONDS)
    # The drain replays the claim, then itself at a clock past the lease: it takes them.
    assert parent.drain("s") == pushed
    late = connect(namespace, clock)
    assert late.drain("s") == []
    after = push(late, "s", "after")
    assert after.sequence == 4
    assert parent.drain("s") == [after]


def test_a_look_after_a_dead_claims_lease_passed_sees_its_entries(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    namespace = redis_server.namespace()
    clock = ManualClock(start_ms=START_MS)
    parent = connect(namespace, clock, claim_lease=LEASE_SECONDS)
    pushed = [push(parent, "s", f"#{n}") for n in range(3)]
    assert claim_and_die(redis_server, namespace, "s") == {"s": [1, 2, 3]}
    clock.advance(LEASE_SECONDS)
    assert parent.pending_count("s") == 3
    assert parent.snapshot("s") == pushed


def claimed(
    redis_server: RedisServer, connect: Callable[..., Inbox], count: int, **options: Any
) -> tuple[ManualClock, Inbox, Inbox, list[InboxEntry], Any]:
    """Inbox *a* (with the store *options*) holds a claim, its block running, on the
    *count* entries inbox *b* pushed into session "s"; both on one clock."""
    namespace = redis_server.namespace()
    clock = ManualClock(start_ms=START_MS)
    a = connect(namespace, clock, **options)
    b = connect(namespace, clock)
    pushed = [push(b, "s", f"#{n}") for n in range(count)]
    claim = a.claim("s")
    assert claim.__enter__() == pushed
    return clock, a, b, pushed, claim


@pytest.mark.parametrize("ending", ["settled", "released"])
def test_a_live_claimant_keeps_what_it_holds_however_many_leases_its_block_runs(
    redis_server: RedisServer, connect: Callable[..., Inbox], ending: str
) -> None:
    # Its store renews the lease once half of it is left: no other inbox gets
    # the entries while the block runs, and the block's end decides.
    clock, a, b, pushed, claim = claimed(redis_server, connect, 3, claim_lease=LEASE_SECONDS)
    claims = store_of(a)._tracks["s"].claims
    (claim_id,) = claims
    half = round(LEASE_SECONDS * 1000) // 2
    for _ in range(8):  # two leases, a quarter at a time
        deadline = claims[claim_id][1]
        clock.advance(LEASE_SECONDS / 4)
        if deadline - clock.now_ms() <= half:
            spin_until(lambda: claims[claim_id][1] > deadline, "renewed", GUARD_SECONDS)  # noqa: B023
        assert b.pending_count("s") == 0
        assert b.statistics("s").pending == 0
    if ending == "settled":
        claim.__exit__(None, None, None)
        assert b.drain("s") == []
    else:
        claim.__exit__(RuntimeError, RuntimeError("the block failed"), None)
        assert b.drain("s") == pushed
    assert a.drain("s") == []


def test_a_claim_whose_settle_failed_is_no_longer_renewed_and_comes_back(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    # Its block ended: the lease is not renewed, should the settle never have
    # reached the log. The entries come back when it passes (at least once).
    clock, a, b, pushed, claim = claimed(
        redis_server, connect, 2, claim_lease=LEASE_SECONDS, retries=0
    )
    store = store_of(a)
    append = store._append

    def unreachable(**kwargs: Any) -> Any:
        raise redis.ConnectionError("the server is away")

    store._append = unreachable
    with pytest.raises(StoreError, match=MAY_OR_MAY_NOT):
        claim.__exit__(None, None, None)
    store._append = append
    turns = turns_of_housekeeping(store)
    clock.advance(LEASE_SECONDS / 2)
    turns(2)
    (held,) = store._tracks["s"].claims.values()
    assert held[1] == START_MS + round(LEASE_SECONDS * 1000)  # not renewed
    clock.advance(LEASE_SECONDS / 2)
    assert b.drain("s") == pushed


def test_a_claim_taken_before_its_inbox_closed_is_renewed_while_its_block_runs(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    # (The inbox's close stops its waits, not its store's housekeeping.)
    clock, a, b, pushed, claim = claimed(redis_server, connect, 2, claim_lease=LEASE_SECONDS)
    a.close()
    claims = store_of(a)._tracks["s"].claims
    deadline = next(iter(claims.values()))[1]
    clock.advance(LEASE_SECONDS / 2)
    spin_until(lambda: next(iter(claims.values()))[1] > deadline, "renewed", GUARD_SECONDS)
    clock.advance(LEASE_SECONDS / 2)
    assert b.drain("s") == []
    claim.__exit__(RuntimeError, RuntimeError("the block failed"), None)
    assert b.drain("s") == pushed


def test_a_renewal_replayed_after_its_lease_passed_changes_nothing(
    redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    clock, a, b, pushed, claim = claimed(redis_server, connect, 2, claim_lease=1.0)
    (claim_id,) = store_of(a)._tracks["s"].claims
    clock.advance(1.0)  # (at once: no turn of housekeeping saw half of it left)
    late = {"o": "renew", "t": clock.now_ms(), "claims": [claim_id], "deadline": START_MS + 9_000}
    store_of(a)._run("s", late)
    assert b.drain("s") == pushed  # the lease had passed: given back, not renewed
    claim.__exit__(None, None, None)
    assert a.drain("s") == [] == b.drain("s")


@pytest.mark.parametrize("late", ["settles", "releases"])
def test_a_claimant_whose_lease_passed_is_fenced_off_what_another_inbox_took(
    redis_server: RedisServer, connect: Callable[..., Inbox], late: str
) -> None:
    clock, a, b, pushed, claim = claimed(redis_server, connect, 3, claim_lease=1.0)
    assert b.pending_count("s") == 0
    clock.advance(1.0)
    taken = b.drain("s")
    assert taken == pushed  # the lease passed: the entries went back, and B took them
    if late == "settles":
        claim.__exit__(None, None, None)
    else:
        error = RuntimeError("the block failed")
        claim.__exit__(RuntimeError, error, None)
    # The late settle or release changed nothing: B had the entries, once.
    assert a.snapshot("s") == b.snapshot("s") == []
    assert a.statistics("s") == b.statistics("s")
    assert a.statistics("s").last_sequence == 3
    after = push(a, "s", "after")
    assert after.sequence == 4
    assert b.drain("s") == [after]
    assert a.drain("s") == []


# -- 8. Closing an inbox is local ------------------------------------------------------------------


def test_closing_an_inbox_ends_its_own_waits_and_pushes_only(
    backend: Backend, redis_server: RedisServer, connect: Callable[..., Inbox]
) -> None:
    namespace = redis_server.namespace()
    a = connect(namespace)
    b = connect(namespace)
    c = connect(namespace)
    first = push(a, "s", "#0")
    thread_wait = parked_wait_sync(a, "idle")

    async def main() -> None:
        async with backend.task_group() as group:
            task_wait = group.start_soon(a.wait, "idle")
            await until(backend, lambda: a.waiter_count("idle") == 2, "both waits parked")
            a.close()
        assert task_wait.result is False
        with pytest.raises(InboxClosed):
            await a.apush("s", "tool_result", "refused", "worker")
        # B waits on, and wakes for a push made elsewhere (C).
        async with backend.task_group() as group:
            b_wait = group.start_soon(b.wait, "t")
            await until(backend, lambda: b.waiter_count("t") == 1, "B's wait parked")
            woke = await c.apush("t", "tool_result", "for B", "worker")
        assert b_wait.result is True
        assert await b.adrain("t") == [woke]

    backend.run_in_real_time(main)
    assert thread_wait.outcome() is False
    with pytest.raises(InboxClosed):
        push(a, "s", "refused")
    assert b.snapshot("s") == [first]  # nothing of A's refused pushes was stored
    second = push(b, "s", "#1")
    assert second.sequence == 2
    assert b.drain("s") == [first, second]
    third = push(c, "s", "#2")
    assert a.drain("s") == [third]  # A still drains: nothing accepted is lost
    assert b.drain("s") == c.drain("s") == []
    assert gapless([first, second, third])
