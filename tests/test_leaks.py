"""Long runs leave nothing behind: memory (tracemalloc) and registered waiters stay flat.

Each test runs a warm-up, notes tracemalloc's current size, runs the long
part, and requires the current size to have grown by less than `SLACK_BYTES`
(a leak of even one small object per wait, or a few bytes per push, shows up
far above it). Tracing starts before the inbox is made, so structures that are
merely replaced (a resized dict, a new sequence number) net out; the million
cycles are the exception: tracemalloc slows allocation about sixfold, so their
first 350,000 run untraced, then a traced settling stretch re-makes every
steady-state structure before the baseline. Afterwards no session has a
registered waiter and the ManualClock holds no timer.

The length scales with ``HARN_STRESS_SCALE`` (default 1: a million push/drain
cycles, about 10 s of the file's budget on a 2-core CI box).
"""

from __future__ import annotations

import gc
import os
import queue
import tracemalloc
from typing import TYPE_CHECKING, Any

import pytest
from _support import HANG_GUARD_SECONDS, ThreadCall, join_all, spin_until

from harn_inbox import Inbox, InboxEntry, ManualClock

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from conftest import Backend

SCALE = float(os.environ.get("HARN_STRESS_SCALE", "1"))
SLACK_BYTES = 64 * 1024


def scaled(count: int) -> int:
    return max(1, round(count * SCALE))


class Tracer:
    """tracemalloc around one test: a baseline after the warm-up, then the growth since."""

    def __init__(self) -> None:
        self.baseline = 0
        self.snapshot: tracemalloc.Snapshot | None = None

    def start(self) -> None:
        tracemalloc.start()

    def mark_baseline(self) -> None:
        gc.collect()
        self.baseline = tracemalloc.get_traced_memory()[0]
        self.snapshot = tracemalloc.take_snapshot()

    def assert_flat(self) -> None:
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - self.baseline
        if growth >= SLACK_BYTES:
            assert self.snapshot is not None
            top = tracemalloc.take_snapshot().compare_to(self.snapshot, "lineno")[:8]
            details = "\n".join(str(stat) for stat in top)
            raise AssertionError(f"memory grew by {growth} bytes after the warm-up:\n{details}")


@pytest.fixture
def tracer() -> Iterator[Tracer]:
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is already in use")
    try:
        yield Tracer()
    finally:
        tracemalloc.stop()


def assert_no_waiter_anywhere(inbox: Inbox, sessions: list[str], clock: ManualClock) -> None:
    assert [sid for sid in sessions if inbox.waiter_count(sid)] == []
    assert "waiters=0" in repr(inbox)
    assert "timers=0" in repr(clock)


# -- A million push/drain cycles -------------------------------------------------------------------


def test_a_million_push_drain_cycles_over_many_sessions_leave_memory_flat(
    tracer: Tracer,
) -> None:
    """Plain cycles, and every 100th a detour through the other calls, on 500 sessions.

    (clear_session has its own test below: here it would leave the sequence
    table's resizes to chance, which is noise for the baseline.)
    """
    clock = ManualClock(1_000_000)
    inbox = Inbox(clock=clock)
    sessions = [f"session-{n}" for n in range(500)]
    total = scaled(1_000_000)
    untraced = total * 35 // 100  # sequences pass 256 long before: ints are allocated from then on
    settled = untraced + total * 5 // 100  # every session touched again, under tracing

    def progress(entry: InboxEntry) -> bool:
        return entry.kind == "progress"

    def cycles(start: int, stop: int) -> None:
        for n in range(start, stop):
            session_id = sessions[n % 500]
            inbox.push(session_id, "tool_result", "done", "worker")
            if n % 100 == 0:
                other = sessions[(n // 100) % 500]
                inbox.push(other, "progress", "50%", "mcp")
                [entry] = inbox.drain_where(other, progress)
                inbox.requeue_front(entry)
                assert inbox.snapshot(other)[0] is entry
                assert inbox.wait_sync(other, 0) is True
                inbox.batches(other)  # made and dropped, never received from
                assert inbox.pending_count(other) >= 1
                assert inbox.dropped(other) == 0
                clock.advance(0.001)
                inbox.drain(other)
            inbox.drain(session_id)

    cycles(0, untraced)
    tracer.start()
    cycles(untraced, settled)
    tracer.mark_baseline()
    cycles(settled, total)
    tracer.assert_flat()
    assert inbox.sessions() == []
    assert_no_waiter_anywhere(inbox, sessions, clock)


def test_sessions_that_come_and_go_leave_nothing_behind_once_cleared(tracer: Tracer) -> None:
    """Each session is used once (entries, a drop, a batches channel) and then cleared.

    clear_session forgets a session entirely: its entries, its sequence, its
    drop count and its channels. Fresh ids every time, so anything kept per
    session would grow without bound.
    """
    tracer.start()
    clock = ManualClock(1_000_000)
    inbox = Inbox(clock=clock, max_pending=2, overflow="drop_oldest")
    total = scaled(15_000)
    warm_up = total // 4

    def lives(start: int, stop: int) -> None:
        for n in range(start, stop):
            session_id = f"job-{n}"
            for content in ("queued", "started", "done"):
                inbox.push(session_id, "tool_result", content, "worker")
            assert inbox.dropped(session_id) == 1
            inbox.batches(session_id)  # never received from, never closed
            assert inbox.clear_session(session_id) == 2
            assert inbox.dropped(session_id) == 0

    lives(0, warm_up)
    tracer.mark_baseline()
    lives(warm_up, total)
    tracer.assert_flat()
    assert inbox.sessions() == []
    assert "waiters=0" in repr(inbox)


# -- Waits, timeouts, clears and cancellations under trio and asyncio ------------------------------


def test_async_waits_timeouts_clears_and_cancellations_leave_memory_and_waiters_flat(
    backend: Backend, tracer: Tracer
) -> None:
    tracer.start()
    clock = ManualClock(1_000_000)
    inbox = Inbox(clock=clock)
    sessions = [f"session-{n}" for n in range(100)]
    rounds = scaled(1_500)  # one wait per round, amid 20 push/drain cycles
    warm_up = rounds // 5
    outcomes: list[set[str]] = [set() for _ in range(5)]  # what each kind of round ended with

    def anything(entry: InboxEntry) -> bool:
        return True

    async def receive_one(session_id: str) -> list[InboxEntry]:
        async with inbox.batches(session_id) as channel:
            return await channel.receive()

    async def one_round(n: int) -> None:
        session_id = sessions[n % 100]
        for k in range(20):
            inbox.push(sessions[(n + k) % 100], "k", "c", "src")
            inbox.drain(sessions[(n + k) % 100])
        how = n % 5
        waits: list[Callable[[], Awaitable[Any]]] = [
            lambda: inbox.wait(session_id),
            lambda: inbox.wait_for(session_id, anything, 5),
            lambda: inbox.wait(session_id, 5),
            lambda: receive_one(session_id),
            lambda: inbox.wait_for(session_id, anything),
        ]
        async with backend.task_group() as group:
            handle = group.start_soon(waits[how])
            await backend.wait_parked(inbox, session_id)
            if how == 0:
                inbox.push(session_id, "k", "wake", "src")  # woken, takes nothing
            elif how == 1:
                clock.advance(5)  # times out on the ManualClock
            elif how == 2:
                handle.cancel()  # cancelled while parked, with a timer running
            elif how == 3:
                await backend.to_thread(inbox.push, session_id, "k", "wake", "thread")
            else:
                inbox.clear_session(session_id)
        if handle.raised is not None:
            outcomes[how].add(type(handle.raised).__name__)
        else:
            outcomes[how].add(
                repr([entry.content for entry in handle.result])
                if isinstance(handle.result, list)
                else repr(handle.result)
            )
        inbox.drain(session_id)
        assert inbox.waiter_count(session_id) == 0

    async def main() -> None:
        for n in range(warm_up):
            await one_round(n)
        tracer.mark_baseline()
        for n in range(warm_up, rounds):
            await one_round(n)

    backend.run_in_real_time(main)
    tracer.assert_flat()
    assert_no_waiter_anywhere(inbox, sessions, clock)
    cancelled = backend.cancelled.__name__
    assert outcomes == [{"True"}, {"[]"}, {cancelled}, {"['wake']"}, {"[]"}]


# -- Threads parked in wait_sync -------------------------------------------------------------------


def test_thread_waits_woken_timed_out_and_cleared_leave_memory_and_waiters_flat(
    tracer: Tracer,
) -> None:
    tracer.start()
    clock = ManualClock(1_000_000)
    inbox = Inbox(clock=clock)
    sessions = [f"session-{n}" for n in range(50)]
    rounds = scaled(1_500)
    warm_up = rounds // 5
    requests: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    results: queue.SimpleQueue[bool] = queue.SimpleQueue()

    def worker() -> None:
        while (session_id := requests.get()) is not None:
            results.put(inbox.wait_sync(session_id, 5))

    def one_round(n: int) -> bool:
        session_id = sessions[n % 50]
        requests.put(session_id)
        spin_until(lambda: inbox.waiter_count(session_id) > 0, "the worker parked")
        how = n % 3
        if how == 0:
            inbox.push(session_id, "k", "wake", "src")
        elif how == 1:
            clock.advance(5)
        else:
            inbox.clear_session(session_id)
        result = results.get(timeout=HANG_GUARD_SECONDS)
        inbox.drain(session_id)
        return result

    thread = ThreadCall(worker)
    try:
        answers = [one_round(n) for n in range(warm_up)]
        tracer.mark_baseline()
        answers += [one_round(n) for n in range(warm_up, rounds)]
    finally:
        requests.put(None)
        join_all([thread])
    tracer.assert_flat()
    assert answers == [n % 3 == 0 for n in range(rounds)]
    assert_no_waiter_anywhere(inbox, sessions, clock)


# -- Channels and sessions dropped without a goodbye -----------------------------------------------


def test_batches_dropped_without_aclose_leave_no_registry_behind(backend: Backend) -> None:
    inbox = Inbox()

    async def main() -> None:
        for n in range(2_000):
            session = f"req-{n}"
            inbox.push(session, "k", "c", "t")
            async for _ in inbox.batches(session):  # take one batch and leave, as users do
                break

    backend.run(main)
    gc.collect()
    inbox.batches("one-more")  # registering a new session sweeps the dead ones
    assert len(inbox._batches) <= 64
