"""Who listens to a Redis store's channels: its thread, or the event loop whose waits hear them.

The first event loop whose wait looks at a session takes the listener role
(`harn_inbox.stores._loop_listener`), so that a message wakes its waits with no
hop between threads; the role goes back to the store's thread when that loop
ends, stops answering, or the store closes. Every change of hands must leave
every wait, on any loop or thread, woken by a push from another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import threading
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import pytest
import trio
from _support import (
    LookCounter,
    ThreadCall,
    asleep_on_a_fresh_copy,
    parked_wait_sync,
    spin_until,
    spy_on_thread_safe_entry,
    store_of,
)

from harn_inbox._waiters import in_loop_callback
from harn_inbox.stores import RedisStore
from harn_inbox.stores._loop_listener import AsyncioListener, LoopListener, TrioListener
from harn_inbox.stores._redis import _THREAD

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from _redis_server import RedisServer
    from conftest import Backend

    from harn_inbox import Inbox, InboxEntry


LISTENER_OF = {"trio": TrioListener, "asyncio": AsyncioListener}


def two_inboxes(connect: Callable[..., Inbox], redis_server: RedisServer) -> tuple[Inbox, Inbox]:
    """Two inboxes on a new namespace, as two processes: one waits, one pushes."""
    namespace = redis_server.namespace()
    return connect(namespace), connect(namespace)


def fresh(inbox: Inbox, session_id: str) -> bool:
    """*inbox*'s copy of *session_id* is heard and settled by a look at the server: a wait
    parked on it was woken for the last time by that look's notify, and only a message
    heard from now on wakes it."""
    track = store_of(inbox)._track(session_id)
    return track.listening and track.settled == track.marks


def loop_listens(inbox: Inbox, session_id: str) -> bool:
    """An event loop holds *inbox*'s listener role, and *session_id*'s copy is fresh."""
    return isinstance(store_of(inbox)._holder, LoopListener) and fresh(inbox, session_id)


def thread_listens(inbox: Inbox, session_id: str) -> bool:
    return store_of(inbox)._holder is _THREAD and store_of(inbox)._track(session_id).listening


def on_a_loop_of_its_own(backend: Backend, wait: Callable[[], Awaitable[object]]) -> ThreadCall:
    """``wait()`` under a new event loop (of *backend*'s framework) in a thread of its own."""

    async def main() -> object:
        return await wait()

    if backend.name == "trio":
        return ThreadCall(trio.run, main)
    return ThreadCall(asyncio.run, main())


async def parked_while_a_loop_listens(backend: Backend, inbox: Inbox, session_id: str) -> None:
    """Until a wait on *session_id* sleeps on a fresh copy, heard by an event loop."""
    await backend.to_thread(spin_until, asleep_while_a_loop_listens(inbox, session_id), "asleep")


def asleep_while_a_loop_listens(inbox: Inbox, session_id: str) -> Callable[[], bool]:
    asleep = asleep_on_a_fresh_copy(store_of(inbox), session_id)
    return lambda: isinstance(store_of(inbox)._holder, LoopListener) and asleep()


def test_a_wait_on_an_event_loop_takes_the_role_and_the_thread_takes_it_back_after(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    waiting, pushing = two_inboxes(connect, redis_server)
    store = store_of(waiting)

    async def main() -> tuple[object, InboxEntry, object]:
        async with backend.task_group() as group:
            task = group.start_soon(waiting.wait, "s")
            await parked_while_a_loop_listens(backend, waiting, "s")
            holder = store._holder
            pushed = pushing.push("s", "k", "x", "src")
        return task.result, pushed, holder

    result, pushed, holder = backend.run_in_real_time(main)
    assert result is True
    assert type(holder) is LISTENER_OF[backend.name]
    assert waiting.drain("s") == [pushed]
    # The loop ended: its connection is closed, and the thread listens again.
    spin_until(lambda: thread_listens(waiting, "s"), "the thread listens again")
    spin_until(lambda: redis_server.subscriptions(pushing_namespace(waiting)) == 1, "one listener")
    wait = parked_wait_sync(waiting, "s")
    pushed = pushing.push("s", "k", "y", "src")
    assert wait.outcome() is True
    assert waiting.drain("s") == [pushed]


def pushing_namespace(inbox: Inbox) -> str:
    return store_of(inbox).namespace


def test_a_loop_that_stops_answering_loses_the_role_and_every_wait_still_wakes(
    backend: Backend,
    connect: Callable[..., Inbox],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The loop is blocked (as by a blocking call made on it): it can neither
    # hear nor subscribe. A thread's wait on another session, asked for while
    # it was blocked, is woken only once the thread has taken the role back.
    waiting, pushing = two_inboxes(connect, redis_server)
    store = store_of(waiting)
    store._loop_patience = 0.05

    async def main() -> tuple[object, object, InboxEntry]:
        async with backend.task_group() as group:
            task = group.start_soon(waiting.wait, "s")
            await parked_while_a_loop_listens(backend, waiting, "s")
            # From here to the end of the block, the loop runs nothing.
            looks = LookCounter(store)
            other = parked_wait_sync(waiting, "t")
            # Its armed look found nothing: only a wake makes it look again.
            spin_until(lambda: looks.of("t") >= 2, "the thread's wait looked twice")
            pushing.push("t", "k", "x", "src")
            woken = other.outcome()
            pushed = pushing.push("s", "k", "y", "src")
        return task.result, woken, pushed

    with caplog.at_level(logging.WARNING, logger="harn_inbox"):
        result, woken, pushed = backend.run_in_real_time(main)
    assert woken is True
    assert result is True
    assert waiting.drain("s") == [pushed]
    assert "did not answer" in caplog.text
    assert store._holder is _THREAD
    assert store._loops_may_listen is False  # (for good: no loop takes it again)
    spin_until(
        lambda: redis_server.subscriptions(store.namespace) == 1, "the loop's connection closed"
    )


async def while_a_loop_listens(
    backend: Backend,
    waiting: Inbox,
    pushing: Inbox,
    body: Callable[[], Awaitable[object]],
) -> tuple[object, object, object]:
    """Run *body* while a wait on "s" sleeps, its loop holding *waiting*'s listener role;
    then push to "s". The wait's result, *body*'s, and whether the role never moved."""
    store = store_of(waiting)
    async with backend.task_group() as group:
        task = group.start_soon(waiting.wait, "s")
        await parked_while_a_loop_listens(backend, waiting, "s")
        holder = store._holder
        outcome = await body()
        pushing.push("s", "k", "end of the wait", "src")
    return task.result, outcome, store._holder is holder


def test_a_wait_on_the_loop_that_listens_is_woken_there_with_no_thread_safe_call(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # The listener replays the message and wakes the wait in the loop's own
    # thread (a trio system task; an asyncio reader callback): no call through
    # the loop's thread-safe entry from there. (The store's thread pokes the loop
    # through it to tend: calls from other threads are not counted.)
    waiting, pushing = two_inboxes(connect, redis_server)
    # (A slow turn of the loop must not hand the role back: the wake would then
    # come from the thread, and the test would prove nothing.)
    store_of(waiting)._loop_patience = math.inf

    async def main() -> tuple[object, object, list[object], object]:
        loop_thread = threading.current_thread()
        with spy_on_thread_safe_entry(backend) as calls:
            result, _, kept = await while_a_loop_listens(backend, waiting, pushing, nothing)
        return result, kept, [fn for thread, fn in calls if thread is loop_thread], said()

    result, kept, from_the_loop, said_after = backend.run_in_real_time(main)
    assert result is True
    assert kept
    assert from_the_loop == []
    assert said_after is None  # (the reader callback no longer says it runs)


async def nothing() -> None:
    pass


def said() -> object:
    """The loop that a callback of this thread says it runs on (`in_loop_callback`)."""
    return in_loop_callback.loop


def test_the_asyncio_listener_says_it_runs_on_its_loop_only_while_it_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[object] = []

    def readable(self: LoopListener) -> None:
        seen.append(said())
        raise RuntimeError("a reading that fails")

    monkeypatch.setattr(LoopListener, "_readable", readable)

    async def main() -> asyncio.AbstractEventLoop:
        listener = AsyncioListener(cast("Any", None))  # (no store: only its callback is run)
        with pytest.raises(RuntimeError, match="a reading that fails"):
            listener._readable()
        return asyncio.get_running_loop()

    loop = asyncio.run(main())
    assert seen == [loop]
    assert said() is None


def test_a_wait_on_a_second_event_loop_is_woken_through_the_loop_that_listens(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    waiting, pushing = two_inboxes(connect, redis_server)

    async def on_the_other_loop() -> object:
        asleep = asleep_while_a_loop_listens(waiting, "t")
        other = on_a_loop_of_its_own(backend, partial(waiting.wait, "t"))
        await backend.to_thread(
            spin_until, asleep, "the other loop's wait parked, heard by the first"
        )
        pushing.push("t", "k", "x", "src")
        return await backend.to_thread(other.outcome)

    result, woken, kept = backend.run_in_real_time(
        while_a_loop_listens, backend, waiting, pushing, on_the_other_loop
    )
    assert result is True
    assert woken is True
    assert kept is True


def test_a_loop_whose_connection_is_killed_listens_again_on_a_new_one(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    waiting, pushing = two_inboxes(connect, redis_server)
    store = store_of(waiting)

    async def killed_and_back() -> object:
        killed = redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed.startswith(b":")
        assert killed != b":0"
        await backend.to_thread(
            spin_until,
            lambda: (
                store._track("s").listening and redis_server.subscriptions(store.namespace) == 1
            ),
            "subscribed again",
        )
        return None

    result, _, kept = backend.run_in_real_time(
        while_a_loop_listens, backend, waiting, pushing, killed_and_back
    )
    assert result is True
    assert kept is True  # (it reconnected: the role never left the loop)
    assert [entry.content for entry in waiting.drain("s")] == ["end of the wait"]


def test_closing_the_inbox_ends_the_listener_of_its_loop(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    waiting, pushing = two_inboxes(connect, redis_server)
    store = store_of(waiting)

    async def main() -> object:
        async with backend.task_group() as group:
            task = group.start_soon(waiting.wait, "s")
            await parked_while_a_loop_listens(backend, waiting, "s")
            await backend.to_thread(waiting.close)
            await backend.to_thread(
                spin_until,
                lambda: redis_server.subscriptions(store.namespace) == 0,
                "the listener's connection closed",
            )
        return task.result

    assert backend.run_in_real_time(main) is False
    assert store._holder is None
    assert pushing.push("s", "k", "x", "src").sequence == 1


@pytest.mark.parametrize(("url", "loops"), [("redis://h/0", True), ("rediss://h/0", False)])
def test_no_event_loop_listens_over_tls(url: str, loops: bool) -> None:
    # A TLS socket may hold data it has decrypted that the loop's readiness
    # never shows: its thread reads it, as redis-py does.
    store: Any = RedisStore(url)
    try:
        assert store._loops_may_listen is loops
    finally:
        store.close()


def test_a_wait_on_another_loop_is_woken_after_the_listening_loop_ends(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    # The wait on "t" trusts the first loop's listening; that loop ends, and
    # until the thread has subscribed again nobody hears the push.
    waiting, pushing = two_inboxes(connect, redis_server)
    store = store_of(waiting)
    subscribing = threading.Event()
    held = threading.Event()
    pubsub = store._client.pubsub

    def held_pubsub(**kwargs: Any) -> Any:
        held.set()
        assert subscribing.wait(60)
        return pubsub(**kwargs)

    async def main() -> tuple[object, ThreadCall]:
        async with backend.task_group() as group:
            task = group.start_soon(waiting.wait, "s")
            await parked_while_a_loop_listens(backend, waiting, "s")
            asleep = asleep_while_a_loop_listens(waiting, "t")
            other = on_a_loop_of_its_own(backend, partial(waiting.wait, "t"))
            await backend.to_thread(
                spin_until,
                asleep,
                "the other loop's wait parked, heard by the first",
            )
            store._client.pubsub = held_pubsub
            pushing.push("s", "k", "x", "src")
        return task.result, other

    result, other = backend.run_in_real_time(main)
    assert result is True
    spin_until(held.is_set, "the thread is about to listen again")
    pushed = pushing.push("t", "k", "while nobody listened", "src")
    subscribing.set()
    assert other.outcome() is True
    assert waiting.drain("t") == [pushed]


def test_subscriptions_more_than_the_socket_takes_at_once_all_go_out(
    backend: Backend, connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    waiting, pushing = two_inboxes(connect, redis_server)
    store = store_of(waiting)
    # No request to tend from the store's thread from now on: what the socket does
    # not take at once goes out when it takes more, not at the next tend.
    store._housekeeping = 3600.0
    store._next_poke = math.inf  # (nor the first, when it sees a loop take the role)
    connect_listener = store._connect_listener

    def small_buffers(listener: object, again: bool) -> Any:
        connection = connect_listener(listener, again)
        if connection is not None:
            connection._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return connection

    store._connect_listener = small_buffers  # type: ignore[method-assign]
    sessions = [f"many-{n:05}" for n in range(3000)]  # ~100 kB of SUBSCRIBE

    async def main() -> object:
        async with backend.task_group() as group:
            task = group.start_soon(waiting.wait, "s")
            await parked_while_a_loop_listens(backend, waiting, "s")
            for session_id in sessions:  # as many waits' first looks would, at once
                store._want(session_id)
            await backend.to_thread(
                spin_until,
                lambda: all(store._track(session_id).listening for session_id in sessions),
                "every session heard",
            )
            assert redis_server.subscriptions(store.namespace, sessions[-1]) == 1
            pushing.push("s", "k", "x", "src")
        return task.result

    assert backend.run_in_real_time(main) is True


def test_a_loop_listener_that_fails_on_its_own_error_leaves_the_role_to_the_thread(
    backend: Backend,
    connect: Callable[..., Inbox],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    waiting, pushing = two_inboxes(connect, redis_server)
    store = store_of(waiting)

    def broken(listener: object, again: bool) -> Any:
        raise RuntimeError("a loop this listener cannot serve")

    store._connect_listener = broken  # type: ignore[method-assign]

    async def main() -> object:
        async with backend.task_group() as group:
            task = group.start_soon(waiting.wait, "s")
            await backend.to_thread(
                spin_until,
                lambda: waiting.waiter_count("s") == 1 and thread_listens(waiting, "s"),
                "the thread listens again",
            )
            pushing.push("s", "k", "x", "src")
        return task.result

    assert backend.run_in_real_time(main) is True
    assert "the Redis listener on an event loop stopped" in caplog.text
    assert store._loops_may_listen is False  # (no loop tries again, and fails again)


def test_an_asyncio_loop_that_stops_gives_the_role_back_until_it_runs_again(
    connect: Callable[..., Inbox], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # run_until_complete, then a thread's wait: the stopped loop cannot hear.
    waiting, pushing = two_inboxes(connect, redis_server)
    store = store_of(waiting)
    started: list[AsyncioListener] = []
    start = AsyncioListener.start

    def recorded(listener: AsyncioListener) -> None:
        started.append(listener)
        start(listener)

    monkeypatch.setattr(AsyncioListener, "start", recorded)

    async def takes_the_role() -> None:
        task = asyncio.ensure_future(waiting.wait("s"))
        await asyncio.to_thread(spin_until, lambda: loop_listens(waiting, "s"), "the loop listens")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(takes_the_role())
        (listener,) = started
        spin_until(lambda: thread_listens(waiting, "s"), "the thread took the role back")
        assert store._loops_may_listen is True  # (not stuck: it may listen again)
        wait = parked_wait_sync(waiting, "s")
        pushed = pushing.push("s", "k", "x", "src")
        assert wait.outcome() is True
        assert waiting.drain("s") == [pushed]
        assert listener._task is not None
        loop.run_until_complete(listener._task)  # it ends once its loop runs again
    finally:
        loop.close()
    spin_until(
        lambda: redis_server.subscriptions(store.namespace) == 1, "the loop's connection closed"
    )
