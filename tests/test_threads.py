"""Many producer threads, concurrent consumers: every entry arrives exactly once, in order."""

from __future__ import annotations

import itertools
import threading
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

import pytest
from _support import ThreadCall, join_all

from harn_inbox import Inbox, InboxEntry, ManualClock, SystemClock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

PRODUCERS = 8
PUSHES_PER_PRODUCER = 2_000
SESSIONS = ("alpha", "beta", "")


def session_for(producer: int, counter: int) -> str:
    return SESSIONS[(producer + counter) % len(SESSIONS)]


def expected_per_session() -> Counter[str]:
    return Counter(
        session_for(producer, counter)
        for producer in range(PRODUCERS)
        for counter in range(PUSHES_PER_PRODUCER)
    )


def parse(entry: InboxEntry) -> tuple[int, int]:
    producer, counter = entry.content.split(":")
    return int(producer), int(counter)


@pytest.fixture(params=["manual", "system"])
def shared_inbox(request: pytest.FixtureRequest) -> Iterator[Inbox]:
    clock = ManualClock(start_ms=1_000_000) if request.param == "manual" else SystemClock()
    with Inbox(clock=clock) as inbox:
        yield inbox


def producer(inbox: Inbox, barrier: threading.Barrier, number: int) -> Callable[[], None]:
    def produce() -> None:
        barrier.wait()
        for counter in range(PUSHES_PER_PRODUCER):
            inbox.push(session_for(number, counter), "k", f"{number}:{counter}", f"p{number}")

    return produce


def check_delivery(received: dict[str, list[InboxEntry]]) -> None:
    """Exactly once, sequences 1..N per session in arrival order, each producer's order kept."""
    expected = expected_per_session()
    assert {sid: len(entries) for sid, entries in received.items()} == dict(expected)
    delivered = [parse(entry) for entry in itertools.chain.from_iterable(received.values())]
    assert len(set(delivered)) == len(delivered) == PRODUCERS * PUSHES_PER_PRODUCER
    for session_id, entries in received.items():
        assert all(entry.session_id == session_id for entry in entries)
        assert [entry.sequence for entry in entries] == list(range(1, expected[session_id] + 1))
        counters: defaultdict[int, list[int]] = defaultdict(list)
        for entry in entries:
            number, counter = parse(entry)
            assert session_for(number, counter) == session_id
            assert entry.source == f"p{number}"
            counters[number].append(counter)
        for number, seen in counters.items():
            assert seen == sorted(seen), f"producer {number} reordered in {session_id!r}"


def test_concurrent_pushes_and_drains_deliver_every_entry_once_in_order(
    shared_inbox: Inbox,
) -> None:
    inbox = shared_inbox
    barrier = threading.Barrier(PRODUCERS + 1)
    finished = threading.Semaphore(0)
    received: dict[str, list[InboxEntry]] = {sid: [] for sid in SESSIONS}

    def produce_then_report(number: int) -> Callable[[], None]:
        produce = producer(inbox, barrier, number)

        def run() -> None:
            produce()
            finished.release()

        return run

    def drain_repeatedly() -> None:
        barrier.wait()
        done = 0
        while True:
            # Count the finished producers before draining: then this round sees all they pushed.
            while finished.acquire(blocking=False):
                done += 1
            for session_id in SESSIONS:
                received[session_id] += inbox.drain(session_id)
            if done == PRODUCERS:
                return

    crew = [ThreadCall(produce_then_report(number)) for number in range(PRODUCERS)]
    crew.append(ThreadCall(drain_repeatedly))
    assert barrier.parties == len(crew)
    join_all(crew, inbox)
    assert inbox.sessions() == []
    check_delivery(received)


def test_sync_waiters_miss_no_wake_up_under_concurrent_pushes(shared_inbox: Inbox) -> None:
    inbox = shared_inbox
    expected = expected_per_session()
    barrier = threading.Barrier(PRODUCERS + len(SESSIONS))
    received: dict[str, list[InboxEntry]] = {sid: [] for sid in SESSIONS}

    def consumer(session_id: str) -> Callable[[], None]:
        def consume() -> None:
            barrier.wait()
            mine = received[session_id]
            while len(mine) < expected[session_id]:
                if not inbox.wait_sync(session_id, None):
                    return  # closed by the hang guard: the counts will tell
                mine += inbox.drain(session_id)

        return consume

    crew = [ThreadCall(producer(inbox, barrier, number)) for number in range(PRODUCERS)]
    crew += [ThreadCall(consumer(session_id)) for session_id in SESSIONS]
    assert barrier.parties == len(crew)
    join_all(crew, inbox)
    assert inbox.sessions() == []
    assert all(inbox.waiter_count(sid) == 0 for sid in SESSIONS)
    check_delivery(received)


def test_concurrent_selective_and_plain_consumers_split_entries_exactly_once(
    shared_inbox: Inbox,
) -> None:
    inbox = shared_inbox
    expected_total = PRODUCERS * PUSHES_PER_PRODUCER
    barrier = threading.Barrier(PRODUCERS + 2)
    lock = threading.Lock()
    selective: list[InboxEntry] = []
    plain: list[InboxEntry] = []

    def total() -> int:
        with lock:
            return len(selective) + len(plain)

    def from_even_producer(entry: InboxEntry) -> bool:
        return parse(entry)[0] % 2 == 0

    def take_even() -> None:
        barrier.wait()
        while total() < expected_total:
            for session_id in SESSIONS:
                taken = inbox.drain_where(session_id, from_even_producer)
                with lock:
                    selective.extend(taken)

    def take_odd() -> None:
        barrier.wait()
        while total() < expected_total:
            for session_id in SESSIONS:
                taken = inbox.drain_where(session_id, lambda entry: not from_even_producer(entry))
                with lock:
                    plain.extend(taken)

    crew = [ThreadCall(producer(inbox, barrier, number)) for number in range(PRODUCERS)]
    crew += [ThreadCall(take_even), ThreadCall(take_odd)]
    assert barrier.parties == len(crew)
    join_all(crew, inbox)

    assert inbox.sessions() == []
    assert all(from_even_producer(entry) for entry in selective)
    assert not any(from_even_producer(entry) for entry in plain)
    everything = selective + plain
    assert len({parse(entry) for entry in everything}) == len(everything) == expected_total
    for consumer_entries in (selective, plain):
        for session_id in SESSIONS:
            in_session = [entry for entry in consumer_entries if entry.session_id == session_id]
            sequences = [entry.sequence for entry in in_session]
            assert sequences == sorted(sequences)  # each consumer sees its share in push order
    for session_id in SESSIONS:
        sequences = sorted(entry.sequence for entry in everything if entry.session_id == session_id)
        assert sequences == list(range(1, expected_per_session()[session_id] + 1))
