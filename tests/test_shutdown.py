"""Shutting an inbox down: `Inbox.close`, ``with`` and ``async with``.

The promise: close is idempotent; every parked waiter (threads, trio, asyncio,
``batches``) wakes at once and reports nothing pending; waits on a closed
inbox return at once; later pushes raise `InboxClosed` and store nothing;
whatever was accepted before the close can still be drained and requeued.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest
import structlog
import trio
from _support import (
    ThreadCall,
    catching,
    collect,
    join_all,
    parked_wait_sync,
    push_many,
    spin_until,
)
from structlog.testing import capture_logs

import harn_inbox
from harn_inbox import Inbox, InboxClosed, InboxEntry, InboxError, InboxFull, ManualClock

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from conftest import Backend, TaskHandle


async def _returns_without_parking(
    backend: Backend, inbox: Inbox, fn: Callable[..., Awaitable[Any]], *args: Any
) -> Any:
    """Await fn(*args) in a task that must finish on its own, within a few scheduler turns.

    A task that parks instead is cancelled (so the test fails instead of hanging).
    """
    async with backend.task_group() as group:
        handle: TaskHandle = group.start_soon(fn, *args)
        for _ in range(20):
            if handle.finished:
                break
            await backend.checkpoint()
        else:
            handle.cancel()
    assert handle.finished
    assert handle.raised is None, f"{fn.__name__}{args!r} blocked or raised: {handle.raised!r}"
    return handle.result


# -- The exceptions --------------------------------------------------------------------------------


def test_shutdown_and_capacity_errors_share_the_exported_base() -> None:
    assert {"InboxError", "InboxClosed", "InboxFull"} <= set(harn_inbox.__all__)
    assert issubclass(InboxClosed, InboxError)
    assert issubclass(InboxFull, InboxError)
    assert issubclass(InboxError, Exception)
    assert not issubclass(InboxError, (TypeError, ValueError))
    assert (InboxClosed.__module__, InboxError.__module__) == ("harn_inbox", "harn_inbox")


# -- close(), with, async with ---------------------------------------------------------------------


def test_close_is_idempotent_and_logs_one_close(clock: ManualClock) -> None:
    with capture_logs() as logs:
        inbox = Inbox(clock=clock, logger=structlog.get_logger())
        assert not inbox.closed
        inbox.close()
        inbox.close()
        inbox.close()
    assert inbox.closed
    assert [log["event"] for log in logs].count("inbox.close") == 1
    assert "closed" in repr(inbox)


def test_with_block_closes_the_inbox_on_exit(clock: ManualClock) -> None:
    with Inbox(clock=clock) as inbox:
        assert isinstance(inbox, Inbox)
        inbox.push("s", "k", "c", "src")
        assert not inbox.closed
    assert inbox.closed
    assert [entry.content for entry in inbox.drain("s")] == ["c"]


def test_with_block_closes_the_inbox_when_the_body_raises_and_lets_the_error_through(
    clock: ManualClock,
) -> None:
    made: list[Inbox] = []

    def body() -> None:
        with Inbox(clock=clock) as inbox:
            made.append(inbox)
            inbox.push("s", "k", "c", "src")
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        body()
    [inbox] = made
    assert inbox.closed
    assert inbox.pending_count("s") == 1


def test_async_with_closes_the_inbox_on_exit(backend: Backend, clock: ManualClock) -> None:
    async def main() -> Inbox:
        async with Inbox(clock=clock) as inbox:
            inbox.push("s", "k", "c", "src")
            assert await inbox.wait("s") is True
            assert not inbox.closed
        assert inbox.closed
        with pytest.raises(RuntimeError, match="inside"):
            async with Inbox(clock=clock) as failing:
                raise RuntimeError("inside")
        assert failing.closed
        return inbox

    inbox = backend.run(main)
    assert [entry.content for entry in inbox.drain("s")] == ["c"]


# -- Parked waiters wake at once and report nothing pending ----------------------------------------


def test_close_wakes_parked_thread_waiters_and_they_report_nothing_pending(
    inbox: Inbox, clock: ManualClock
) -> None:
    waits = [
        parked_wait_sync(inbox, "a"),
        parked_wait_sync(inbox, "a"),
        parked_wait_sync(inbox, "b", 30),  # a timer on the ManualClock
    ]
    assert "timers=1" in repr(clock)
    inbox.close()
    assert [wait.outcome() for wait in waits] == [False, False, False]
    assert inbox.waiter_count("a") == inbox.waiter_count("b") == 0
    assert "timers=0" in repr(clock)  # the close ended the timed wait; no time had to pass
    assert clock.now_ms() == 1_000_000


def test_close_wakes_a_thread_waiter_with_a_real_timeout() -> None:
    with capture_logs() as logs:
        inbox = Inbox(logger=structlog.get_logger())
        wait = parked_wait_sync(inbox, "a", 3600)
        inbox.close()
        assert wait.outcome() is False
    [wait] = [log for log in logs if log["event"] == "inbox.wait"]
    assert wait["outcome"] == "closed"  # woken by the close, not by its timeout


def test_close_wakes_parked_async_waiters_and_they_report_nothing_pending(
    backend: Backend, inbox: Inbox, clock: ManualClock
) -> None:
    def never(entry: InboxEntry) -> bool:
        return entry.kind == "never"

    async def main() -> list[TaskHandle]:
        inbox.push("busy", "other", "stays", "src")  # pending, but never matching
        async with backend.task_group() as group:
            handles = [
                group.start_soon(inbox.wait, "a"),
                group.start_soon(inbox.wait, "a", 30),
                group.start_soon(inbox.wait_for, "b", never),
                group.start_soon(inbox.wait_for, "busy", never, 30),
                group.start_soon(collect, inbox.batches("c")),
                group.start_soon(catching, trio.EndOfChannel, inbox.batches("d").receive),
            ]
            await backend.wait_parked(inbox, "a", 2)
            for session_id in ("b", "busy", "c", "d"):
                await backend.wait_parked(inbox, session_id)
            inbox.close()
        return handles

    handles = backend.run(main)
    *results, receive_ended = [handle.result for handle in handles]
    assert results == [False, False, [], [], []]
    assert isinstance(receive_ended, trio.EndOfChannel)  # as `async for` above ends
    assert all(handle.raised is None for handle in handles)
    assert [inbox.waiter_count(sid) for sid in ("a", "b", "busy", "c", "d")] == [0] * 5
    assert [entry.content for entry in inbox.snapshot("busy")] == ["stays"]
    assert "timers=0" in repr(clock)
    assert clock.now_ms() == 1_000_000


def test_close_wakes_async_waiters_whose_timeout_runs_on_the_framework_timer(
    backend: Backend,
) -> None:
    def never(entry: InboxEntry) -> bool:
        return False

    with capture_logs() as logs:
        inbox = Inbox(logger=structlog.get_logger())  # SystemClock: trio's / asyncio's own timers

        async def main() -> list[TaskHandle]:
            async with backend.task_group() as group:
                handles = [
                    group.start_soon(inbox.wait, "a", 3600),
                    group.start_soon(inbox.wait_for, "a", never, 3600),
                ]
                await backend.wait_parked(inbox, "a", 2)
                inbox.close()
            return handles

        handles = backend.run(main)
    assert [handle.result for handle in handles] == [False, []]
    waits = [log for log in logs if log["event"] in ("inbox.wait", "inbox.wait_for")]
    assert [log["outcome"] for log in waits] == ["closed", "closed"], "ended by the close"


def test_close_from_another_thread_wakes_async_waiters(backend: Backend, inbox: Inbox) -> None:
    async def main() -> tuple[TaskHandle, TaskHandle]:
        async with backend.task_group() as group:
            waiting = group.start_soon(inbox.wait, "a")
            receiving = group.start_soon(collect, inbox.batches("a"))
            await backend.wait_parked(inbox, "a", 2)
            await backend.to_thread(inbox.close)
        return waiting, receiving

    waiting, receiving = backend.run(main)
    assert (waiting.result, receiving.result) == (False, [])


def test_close_reports_how_many_waiters_it_woke_and_each_wait_says_closed(
    clock: ManualClock,
) -> None:
    with capture_logs() as logs:
        inbox = Inbox(clock=clock, logger=structlog.get_logger())
        waits = [parked_wait_sync(inbox, sid) for sid in ("a", "b", "b")]
        inbox.close()
        assert [wait.outcome() for wait in waits] == [False, False, False]
    [close] = [log for log in logs if log["event"] == "inbox.close"]
    assert close["woken"] == 3
    waits = [log for log in logs if log["event"] == "inbox.wait"]
    assert [log["outcome"] for log in waits] == ["closed"] * 3


# -- Waits on a closed inbox return at once --------------------------------------------------------


def test_thread_waits_on_a_closed_inbox_return_at_once(inbox: Inbox, clock: ManualClock) -> None:
    inbox.push("full", "k", "queued before the close", "src")
    inbox.close()
    for session_id, timeout, expected in [
        ("full", None, True),
        ("full", 30, True),
        ("empty", None, False),
        ("empty", 30, False),
        ("empty", 0, False),
    ]:
        wait = ThreadCall(inbox.wait_sync, session_id, timeout)
        assert wait.outcome() is expected, (session_id, timeout)
    assert inbox.waiter_count("empty") == 0
    assert "timers=0" in repr(clock)
    assert inbox.pending_count("full") == 1  # a wait takes nothing


def test_async_waits_on_a_closed_inbox_return_at_once(
    backend: Backend, inbox: Inbox, clock: ManualClock
) -> None:
    x = inbox.push("full", "x", "wanted", "src")
    y = inbox.push("full", "y", "unwanted", "src")
    inbox.close()

    def kind_is(kind: str) -> Callable[[InboxEntry], bool]:
        return lambda entry: entry.kind == kind

    async def main() -> None:
        assert await _returns_without_parking(backend, inbox, inbox.wait, "full") is True
        assert await _returns_without_parking(backend, inbox, inbox.wait, "full", 30) is True
        assert await _returns_without_parking(backend, inbox, inbox.wait, "empty") is False
        assert await _returns_without_parking(backend, inbox, inbox.wait, "empty", 30) is False
        took = await _returns_without_parking(backend, inbox, inbox.wait_for, "full", kind_is("z"))
        assert took == []
        took = await _returns_without_parking(
            backend, inbox, inbox.wait_for, "full", kind_is("x"), 30
        )
        assert took == [x]
        took = await _returns_without_parking(backend, inbox, inbox.wait_for, "empty", kind_is("x"))
        assert took == []

    backend.run(main)
    assert inbox.snapshot("full") == [y]
    assert inbox.waiter_count("full") == inbox.waiter_count("empty") == 0
    assert "timers=0" in repr(clock)


# -- batches: what is left, then the end -----------------------------------------------------------


@pytest.mark.parametrize("opened", ["before the close", "after the close"])
def test_batches_yield_what_is_left_after_close_then_end(
    backend: Backend, inbox: Inbox, opened: str
) -> None:
    before = inbox.batches("s")
    entries = push_many(inbox, "s", 3)
    inbox.close()
    after = inbox.batches("s")
    taker, other = (before, after) if opened == "before the close" else (after, before)

    async def main() -> tuple[list[InboxEntry], list[list[InboxEntry]]]:
        leftovers = await taker.receive()
        for _ in range(2):  # it ends, and stays ended
            with pytest.raises(trio.EndOfChannel):
                await taker.receive()
        return leftovers, await collect(other)

    assert backend.run(main) == (entries, [])
    assert inbox.pending_count("s") == 0


def test_batches_consumer_gets_everything_pushed_before_a_close_from_another_thread(
    backend: Backend, inbox: Inbox
) -> None:
    pushed: list[InboxEntry] = []

    def produce() -> None:
        pushed.extend(inbox.push("s", "k", f"#{n}", "thread") for n in range(500))
        inbox.close()

    async def main() -> list[list[InboxEntry]]:
        async with backend.parked(inbox, collect, inbox.batches("s"), session_id="s") as consumer:
            await backend.to_thread(produce)
        result: list[list[InboxEntry]] = consumer.result
        return result

    batches = backend.run(main)
    assert all(batches), "a batch is never empty"
    assert [entry for batch in batches for entry in batch] == pushed
    assert inbox.pending_count("s") == 0


# -- Pushes after close: refused loudly, nothing stored --------------------------------------------


def test_push_after_close_raises_inbox_closed_and_stores_nothing(inbox: Inbox) -> None:
    queued = push_many(inbox, "a", 2)
    inbox.close()
    with pytest.raises(InboxClosed, match="session 'a'"):
        inbox.push("a", "k", "late", "src")
    with pytest.raises(InboxError, match="session 'new'"):
        inbox.push("new", "k", "late", "src")
    assert inbox.sessions() == ["a"]
    assert inbox.snapshot("a") == queued
    assert inbox.pending_count("new") == 0


def test_push_after_close_raises_in_threads_and_tasks_alike(backend: Backend, inbox: Inbox) -> None:
    inbox.close()

    def push_from_thread() -> None:
        inbox.push("s", "k", "from a thread", "thread")

    async def push_from_task() -> None:
        await backend.checkpoint()
        inbox.push("s", "k", "from a task", "task")

    async def main() -> None:
        with pytest.raises(InboxClosed):
            await backend.to_thread(push_from_thread)
        with pytest.raises(InboxClosed):
            await push_from_task()

    backend.run(main)
    assert inbox.sessions() == []


def test_pushing_threads_racing_a_close_lose_nothing_and_each_stop_on_inbox_closed(
    inbox: Inbox,
) -> None:
    producers = 8
    accepted: list[list[InboxEntry]] = [[] for _ in range(producers)]
    refusals: list[list[BaseException]] = [[] for _ in range(producers)]
    start = threading.Barrier(producers + 1)

    def produce(index: int) -> None:
        start.wait()
        for n in range(1_000_000):
            session_id = "shared" if n % 2 else f"own-{index}"
            try:
                accepted[index].append(inbox.push(session_id, "k", f"{index}:{n}", f"p{index}"))
            except InboxClosed as error:
                refusals[index].append(error)
                return

    threads = [ThreadCall(produce, i) for i in range(producers)]
    start.wait()
    spin_until(lambda: inbox.pending_count("shared") >= 2_000, "pushes under way")
    inbox.close()
    join_all(threads)

    assert all(len(errors) == 1 for errors in refusals), "every producer is told, once"
    every_accepted = [entry for entries in accepted for entry in entries]
    for session_id in {entry.session_id for entry in every_accepted}:
        queued = inbox.drain(session_id)
        expected = sorted(
            (e for e in every_accepted if e.session_id == session_id), key=lambda e: e.sequence
        )
        assert queued == expected, f"{session_id}: what was accepted is exactly what is queued"
        assert [entry.sequence for entry in queued] == list(range(1, len(queued) + 1))
    assert inbox.sessions() == []


# -- After close, what was accepted can still be taken (and put back) ------------------------------


def test_drain_and_drain_where_after_close_return_what_was_queued(inbox: Inbox) -> None:
    a = push_many(inbox, "a", 4)
    b = push_many(inbox, "b", 2)
    inbox.close()
    assert inbox.pending_count("a") == 4
    assert inbox.drain_where("a", lambda entry: entry.sequence % 2 == 1) == [a[0], a[2]]
    assert inbox.drain("a") == [a[1], a[3]]
    assert inbox.snapshot("b") == b
    assert inbox.drain("b") == b
    assert inbox.sessions() == []


def test_requeue_front_after_close_puts_entries_back_in_order(inbox: Inbox) -> None:
    first, second = push_many(inbox, "s", 2)
    taken = inbox.drain("s")
    inbox.close()
    for entry in reversed(taken):
        inbox.requeue_front(entry)
    assert inbox.snapshot("s") == [first, second]
    with pytest.raises(ValueError, match="already pending"):
        inbox.requeue_front(first)  # the duplicate guard still holds after close
    assert inbox.drain("s") == [first, second]


def test_requeued_entry_after_close_is_seen_by_a_wait(backend: Backend, inbox: Inbox) -> None:
    [entry] = push_many(inbox, "s", 1)
    inbox.drain("s")
    inbox.close()

    async def main() -> tuple[bool, list[list[InboxEntry]]]:
        assert await inbox.wait("s") is False
        inbox.requeue_front(entry)
        return await inbox.wait("s"), await collect(inbox.batches("s"))

    assert backend.run(main) == (True, [[entry]])
