"""Stress: many producers and consumers at once, in threads and under trio and asyncio.

Every test checks conservation, not just survival: each entry pushed is
delivered exactly once (or is accounted for by a `clear_session` count),
sequences are gapless, each consumer sees its entries in order, and each
producer's entries keep the order it pushed them in. Thread joins carry a
generous timeout that guards against hangs; it is never the verdict.

The load scales with ``HARN_STRESS_SCALE`` (default 1: a few hundred thousand
pushes across the file, sized for a 2-core CI box); e.g.
``HARN_STRESS_SCALE=20 pytest tests/test_stress.py`` for a heavy local run.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

from _support import ThreadCall, join_all, spin_until

from harn_inbox import Inbox, InboxEntry

if TYPE_CHECKING:
    from conftest import Backend, TaskHandle

SCALE = float(os.environ.get("HARN_STRESS_SCALE", "1"))
HANG_GUARD_SECONDS = 120.0 * max(1.0, SCALE)
# Pacing of the selective picker and the clearer, so they interleave with the
# producers instead of hogging the lock. It shapes the load; no verdict reads a clock.
PACE_PICKER_SECONDS = 0.0002
PACE_CLEARER_SECONDS = 0.001


def scaled(count: int) -> int:
    return max(1, round(count * SCALE))


def _producer_of(entry: InboxEntry) -> tuple[str, int]:
    """(producer, its push index) from the content the producers of this file write."""
    producer, index = entry.content.rsplit(":", 1)
    return producer, int(index)


def assert_exactly_once_and_gapless(
    session_id: str, pushed: list[InboxEntry], delivered: list[InboxEntry]
) -> None:
    duplicates = [entry for entry, n in Counter(delivered).items() if n > 1]
    assert not duplicates, f"{session_id}: delivered twice: {duplicates[:3]}"
    missing = set(pushed) - set(delivered)
    assert not missing, f"{session_id}: {len(missing)} lost, e.g. {sorted(missing)[:3]}"
    assert len(delivered) == len(pushed), f"{session_id}: delivered entries nobody pushed"
    assert sorted(entry.sequence for entry in pushed) == list(range(1, len(pushed) + 1))


def assert_in_order(stream: list[InboxEntry], who: str) -> None:
    sequences = [entry.sequence for entry in stream]
    assert sequences == sorted(sequences), f"{who} received entries out of order"


def assert_each_producer_in_push_order(pushed_by_producer: dict[str, list[InboxEntry]]) -> None:
    for producer, entries in pushed_by_producer.items():
        for session_id in {entry.session_id for entry in entries}:
            mine = [entry for entry in entries if entry.session_id == session_id]
            assert [_producer_of(entry)[1] for entry in mine] == sorted(
                _producer_of(entry)[1] for entry in mine
            )
            assert_in_order(mine, f"{producer} on {session_id}")


# -- Threads only ----------------------------------------------------------------------------------


def test_thread_producers_and_consumers_deliver_exactly_once_with_requeues_and_clears() -> None:
    """8 producers; drains, drain_where, requeue_front and clear_session, all concurrently.

    Sessions o0..o3 are taken by a waiting drainer and a drain_where picker each
    (order checkable per consumer); r0, r1 by two consumers that put the last
    few entries of each batch back with requeue_front; c0 is drained while a clearer thread
    clears it, and clear_session's counts close the books.
    """
    inbox = Inbox()
    producers, per_producer = 8, scaled(40_000)
    ordered = ["o0", "o1", "o2", "o3"]
    requeued = ["r0", "r1"]
    cleared = "c0"
    sessions = [*ordered, *requeued, cleared]
    pushed: dict[str, list[InboxEntry]] = {f"p{i}": [] for i in range(producers)}
    received: dict[str, list[InboxEntry]] = {}  # consumer name -> what it took, in order
    clear_counts: list[int] = []
    producers_done = threading.Event()
    start = threading.Barrier(producers)

    def produce(name: str) -> None:
        start.wait()
        mine = pushed[name]
        for n in range(per_producer):
            session_id = sessions[(n + int(name[1:])) % len(sessions)]
            mine.append(inbox.push(session_id, "k", f"{name}:{n}", name))

    def drainer(session_id: str, name: str) -> None:
        took = received.setdefault(name, [])
        while inbox.wait_sync(session_id) or not inbox.closed:
            took.extend(inbox.drain(session_id))
        # A wait that a clear_session ended reports nothing pending, whatever
        # was pushed after the clear (as documented); if the close came
        # before this drainer looked again, that is still queued: take it.
        took.extend(inbox.drain(session_id))

    def picker(session_id: str, name: str) -> None:
        took = received.setdefault(name, [])

        def mine(entry: InboxEntry) -> bool:
            return int(entry.source[1:]) % 3 == 0

        while not (inbox.closed and inbox.pending_count(session_id) == 0):
            took.extend(inbox.drain_where(session_id, mine))
            time.sleep(PACE_PICKER_SECONDS)

    def requeuer(session_id: str, name: str) -> None:
        took = received.setdefault(name, [])
        while inbox.wait_sync(session_id) or not inbox.closed:
            batch = inbox.drain(session_id)
            keep = len(batch) - min(3, len(batch) // 2)  # put back a few it "cannot handle yet"
            took.extend(batch[:keep])
            for entry in reversed(batch[keep:]):
                inbox.requeue_front(entry)  # never "already pending": each is ours alone

    def clearer() -> None:
        while not producers_done.is_set() or len(clear_counts) < 10:
            clear_counts.append(inbox.clear_session(cleared))
            time.sleep(PACE_CLEARER_SECONDS)

    consumers = [
        ThreadCall(work, session_id, f"{kind}-{session_id}", name=f"{kind}-{session_id}")
        for session_id in ordered
        for kind, work in (("drainer", drainer), ("picker", picker))
    ]
    consumers += [
        ThreadCall(requeuer, session_id, name, name=name)
        for session_id in requeued
        for name in (f"requeuer{k}-{session_id}" for k in range(2))
    ]
    consumers.append(ThreadCall(drainer, cleared, "drainer-c0", name="drainer-c0"))
    consumers.append(ThreadCall(clearer, name="clearer"))
    join_all(
        [ThreadCall(produce, name, name=name) for name in pushed], guard_seconds=HANG_GUARD_SECONDS
    )
    producers_done.set()
    inbox.close()  # waiters wake; consumers take what is left and stop
    join_all(consumers, guard_seconds=HANG_GUARD_SECONDS)

    every_push = [entry for entries in pushed.values() for entry in entries]
    assert len(every_push) == producers * per_producer
    for session_id in [*ordered, *requeued]:
        delivered = [
            entry for name, took in received.items() if name.endswith(session_id) for entry in took
        ]
        to_session = [entry for entry in every_push if entry.session_id == session_id]
        assert_exactly_once_and_gapless(session_id, to_session, delivered)
    for name, took in received.items():
        if not name.startswith("requeuer") and name != "drainer-c0":  # c0 restarts at each clear
            assert_in_order(took, name)
    assert_each_producer_in_push_order(
        {p: [e for e in entries if e.session_id != cleared] for p, entries in pushed.items()}
    )
    # c0: clear_session restarts its sequence, so entries are told apart by content.
    to_c0 = [entry.content for entry in every_push if entry.session_id == cleared]
    from_c0 = [entry.content for entry in received["drainer-c0"]]
    assert len(set(from_c0)) == len(from_c0), "c0: delivered twice"
    assert set(from_c0) <= set(to_c0)
    assert len(from_c0) + sum(clear_counts) + inbox.pending_count(cleared) == len(to_c0)
    assert inbox.sessions() == []
    assert all(inbox.waiter_count(session_id) == 0 for session_id in sessions)


def test_a_thousand_waiting_threads_all_wake_and_none_stays_registered() -> None:
    inbox = Inbox()
    crowd, loners = 600, 400
    sessions = ["crowd"] * crowd + [f"alone-{n}" for n in range(crowd, crowd + loners)]
    threads = [ThreadCall(inbox.wait_sync, session_id) for session_id in sessions]
    spin_until(lambda: inbox.waiter_count("crowd") >= crowd, "threads parked", HANG_GUARD_SECONDS)
    inbox.push("crowd", "k", "one push wakes all of them", "test")
    for n in range(crowd, crowd + loners):
        inbox.push(f"alone-{n}", "k", "one each", "test")
    join_all(threads, guard_seconds=HANG_GUARD_SECONDS)
    assert [thread.result for thread in threads] == [True] * (crowd + loners)
    assert inbox.waiter_count("crowd") == 0
    assert all(inbox.waiter_count(f"alone-{n}") == 0 for n in range(crowd, crowd + loners))
    assert inbox.pending_count("crowd") == 1, "waking takes nothing"


# -- trio and asyncio, with thread producers alongside ---------------------------------------------


def test_async_and_thread_producers_with_wait_wait_for_and_batches_consumers(
    backend: Backend,
) -> None:
    """4 task producers and 4 thread producers; three kinds of consumer; then a close ends them."""
    inbox = Inbox()
    task_producers, thread_producers = 4, 4
    per_task, per_thread = scaled(20_000), scaled(20_000)
    sessions = ["a0", "a1", "a2"]
    pushed: dict[str, list[InboxEntry]] = {}
    received: dict[str, list[InboxEntry]] = {}

    def push_from_thread(name: str) -> None:
        mine = pushed.setdefault(name, [])
        for n in range(per_thread):
            mine.append(inbox.push(sessions[n % 3], "k", f"{name}:{n}", name))

    async def push_from_task(name: str) -> None:
        mine = pushed.setdefault(name, [])
        for n in range(per_task):
            mine.append(inbox.push(sessions[n % 3], "k", f"{name}:{n}", name))
            if n % 50 == 0:
                await backend.checkpoint()

    async def waiting_drainer(name: str) -> None:
        took = received.setdefault(name, [])
        while await inbox.wait("a0"):
            took.extend(inbox.drain("a0"))
            await backend.checkpoint()

    async def selective(name: str, prefix: str) -> None:
        took = received.setdefault(name, [])

        def match(entry: InboxEntry) -> bool:
            return entry.source.startswith(prefix)

        while batch := await inbox.wait_for("a1", match):
            took.extend(batch)

    async def batch_reader(name: str) -> None:
        took = received.setdefault(name, [])
        async with inbox.batches("a2") as channel:
            async for batch in channel:
                assert batch, "a batch is never empty"
                took.extend(batch)

    async def main() -> None:
        async with backend.task_group() as consumers:
            consumers.start_soon(waiting_drainer, "wait-a0")
            consumers.start_soon(waiting_drainer, "wait-a0-second")
            consumers.start_soon(selective, "wait_for-tasks-a1", "task")
            consumers.start_soon(selective, "wait_for-threads-a1", "thread")
            consumers.start_soon(batch_reader, "batches-a2")
            consumers.start_soon(batch_reader, "batches-a2-second")
            async with backend.task_group() as producers:
                for i in range(task_producers):
                    producers.start_soon(push_from_task, f"task{i}")
                for i in range(thread_producers):
                    producers.start_soon(backend.to_thread, push_from_thread, f"thread{i}")
            inbox.close()

    backend.run_in_real_time(main)

    every_push = [entry for entries in pushed.values() for entry in entries]
    assert len(every_push) == task_producers * per_task + thread_producers * per_thread
    for session_id in sessions:
        delivered = [e for took in received.values() for e in took if e.session_id == session_id]
        to_session = [entry for entry in every_push if entry.session_id == session_id]
        assert_exactly_once_and_gapless(session_id, to_session, delivered)
    for name, took in received.items():
        assert_in_order(took, name)
    assert_each_producer_in_push_order(pushed)
    assert all(inbox.waiter_count(session_id) == 0 for session_id in sessions)


def test_waits_cancelled_at_random_moments_under_load_lose_nothing(backend: Backend) -> None:
    """Selective waits started and cancelled over and over while a thread pushes."""
    inbox = Inbox()
    total = scaled(50_000)
    rng = random.Random(20_240_611)
    pushed: list[InboxEntry] = []
    taken: list[InboxEntry] = []
    cancelled = 0

    def produce() -> None:
        pushed.extend(inbox.push("s", "k", f"thread:{n}", "thread") for n in range(total))

    async def main() -> None:
        nonlocal cancelled
        async with backend.task_group() as outer:
            producer: TaskHandle = outer.start_soon(backend.to_thread, produce)
            while not producer.finished:
                async with backend.task_group() as group:
                    handle = group.start_soon(inbox.wait_for, "s", lambda entry: True)
                    for _ in range(rng.randrange(4)):
                        await backend.checkpoint()
                    handle.cancel()
                if handle.finished and handle.raised is None:
                    taken.extend(handle.result)
                else:  # cancelled while parked, or (asyncio) before it even started
                    assert handle.raised is None or isinstance(handle.raised, backend.cancelled)
                    cancelled += 1
                assert inbox.waiter_count("s") == 0

    backend.run_in_real_time(main)
    taken.extend(inbox.drain("s"))
    assert_exactly_once_and_gapless("s", pushed, taken)
    assert_in_order(taken, "the consumer")
    assert cancelled > 0, "no wait was ever cancelled: the test proved nothing"
