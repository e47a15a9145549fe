"""`RedisStore` across processes: every entry delivered once, gapless, in each producer's order.

Four producer processes (two pushing from threads, one from trio tasks with
``apush``, one from asyncio tasks) push ``HARN_INBOX_PROCESS_ENTRIES``
entries (100,000 by default) into eight sessions of one namespace, each
producer numbering its pushes per session. Three consumers take them at the
same time: a process running trio, a process running asyncio (each serving
every session from one task per session), and a thread of this process
(serving every session with ``wait_any_sync``). Each consumer mixes drains,
selective waits (``wait_for`` with a predicate and a limit), selective drains,
``batches`` steps, and claims; it gives back marked entries (see
``redis_child.py``) the first time it takes them, by ``requeue_front`` after a
drain or by raising in a claim's block, so given-back entries come again, at
the head, and are consumed again. Each consumer reports what it took, in
order, and whether it kept or gave back each entry.

Once every entry has been kept by some consumer, this process pushes a
``stop`` entry into each consumer's own session, and they end. The verdict:

- the producers got gapless sequences, 1..N per session;
- every pushed entry was kept (delivered) exactly once, with the content and
  payload it was pushed with, and nothing else was; every give-back was
  followed by a delivery; every session is empty at the end;
- per producer and session, the sequences rise with the producer's numbers
  (in what the producer got and in what the consumers took);
- (FIFO within a take is the conformance kit's: here a consumer's step that
  times out while its look is stalled on the loaded server gives back what
  the look took, at the head, unseen by the consumer.)

No verdict depends on timing: the clock only bounds how long a hung run
(a lost entry, a lost wake-up) may take before it fails, saying what is missing.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from redis_child import (
    CLAIM_LEASE,
    MARK_AT,
    MARK_EVERY,
    SESSIONS,
    Consumer,
    consume_in_thread,
    stop_session,
)

from harn_inbox import Inbox
from harn_inbox.stores import RedisStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from _redis_server import RedisServer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the children are POSIX processes")

log = logging.getLogger(__name__)

CHILD = Path(__file__).with_name("redis_child.py")
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
#: How many entries the producers push in all (set it lower for a quick run).
ENTRIES = int(os.environ.get("HARN_INBOX_PROCESS_ENTRIES", "100000"))
#: (name, how it pushes).
PRODUCERS = (("p0", "threads"), ("p1", "threads"), ("p2", "trio"), ("p3", "asyncio"))
#: (name, event loop) of the consumer processes; the thread of this process is THREAD_CONSUMER.
CONSUMER_PROCESSES = (("c-trio", "trio"), ("c-asyncio", "asyncio"))
THREAD_CONSUMER = "c-thread"
#: Not verdicts: how long a run may take, and go without any report, before it is called
#: hung (100,000 entries take about two minutes on two shared cores).
HANG_GUARD_SECONDS = max(300.0, ENTRIES / 100)
SILENCE_GUARD_SECONDS = 120.0

Key = tuple[str, int]  # (session, sequence)


def counts_of(entries: int) -> dict[str, list[int]]:
    """Each producer's pushes per session: *entries* spread as evenly as they go."""
    slots = [(name, index) for name, _ in PRODUCERS for index in range(len(SESSIONS))]
    base, extra = divmod(entries, len(slots))
    counts: dict[str, list[int]] = {name: [0] * len(SESSIONS) for name, _ in PRODUCERS}
    for position, (name, index) in enumerate(slots):
        counts[name][index] = base + (position < extra)
    return counts


class Ledger:
    """What the producers and consumers reported, and the verdict on it."""

    def __init__(self, counts: dict[str, list[int]]) -> None:
        self.counts = counts
        self.total = sum(map(sum, counts.values()))
        #: (session, sequence) -> (producer, number), as each push returned it.
        self.pushed: dict[Key, tuple[str, int]] = {}
        #: (producer, session) -> [(number, sequence)] in the order the producer pushed.
        self.pushes: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        #: (session, sequence) -> [(consumer, operation, content)] of each delivery.
        self.delivered: dict[Key, list[tuple[str, str, str]]] = defaultdict(list)
        self.takes: Counter[Key] = Counter()
        self.given_back: Counter[Key] = Counter()
        #: How many entries each (consumer, operation, fate) took.
        self.tally: Counter[tuple[str, str, str]] = Counter()
        self.problems: list[str] = []

    def push(self, producer: str, fields: list[str]) -> None:
        session_id, sequence, number = fields[0], int(fields[1]), int(fields[2])
        key = (session_id, sequence)
        if key in self.pushed:
            self.problems.append(f"{key} issued twice: {self.pushed[key]} and {(producer, number)}")
        self.pushed[key] = (producer, number)
        self.pushes[producer, session_id].append((number, sequence))

    def take(self, fields: list[str]) -> None:
        consumer, operation, session_id, fate = fields[:4]
        taken = [
            (int(sequence), content) for sequence, content in (f.split("=") for f in fields[4:])
        ]
        self.tally[consumer, operation, fate] += len(taken)
        for sequence, content in taken:
            key = (session_id, sequence)
            self.takes[key] += 1
            if fate == "F":
                self.delivered[key].append((consumer, operation, content))
            else:
                self.given_back[key] += 1

    def all_delivered(self) -> bool:
        return len(self.delivered) >= self.total and len(self.pushed) >= self.total

    def missing(self) -> str:
        """What a hung run is waiting for (for its failure message)."""
        undelivered = sorted(set(self.pushed) - set(self.delivered))
        return (
            f"{len(self.pushed)} of {self.total} pushes reported, {len(self.delivered)} "
            f"entries delivered; undelivered (first 20): {undelivered[:20]}; "
            f"given back and not delivered: "
            f"{sorted(k for k in self.given_back if k not in self.delivered)[:20]}"
        )

    # -- The verdict ------------------------------------------------------------------------------

    def check_pushes(self) -> None:
        assert not self.problems, self.problems[:20]
        for session_index, session_id in enumerate(SESSIONS):
            issued = sorted(seq for (sid, seq) in self.pushed if sid == session_id)
            expected = sum(counts[session_index] for counts in self.counts.values())
            assert issued == list(range(1, expected + 1)), f"{session_id}: sequences not gapless"
        for (producer, session_id), pushes in self.pushes.items():
            numbers = [number for number, _ in pushes]
            count = self.counts[producer][SESSIONS.index(session_id)]
            assert numbers == list(range(count)), f"{producer} in {session_id} reported out of turn"
            sequences = [sequence for _, sequence in pushes]
            assert sequences == sorted(sequences), (
                f"{producer}'s pushes to {session_id} got sequences out of its order"
            )

    def check_deliveries(self) -> None:
        twice = {key: got for key, got in self.delivered.items() if len(got) > 1}
        assert not twice, (
            f"{len(twice)} entries delivered more than once: {list(twice.items())[:10]}"
        )
        unknown = sorted(set(self.delivered) - set(self.pushed))
        assert not unknown, f"delivered but never pushed: {unknown[:20]}"
        lost = sorted(set(self.pushed) - set(self.delivered))
        assert not lost, f"{len(lost)} entries pushed but never delivered: {lost[:20]}"
        for key, [(consumer, operation, content)] in self.delivered.items():
            producer, number = self.pushed[key]
            assert content == f"{producer}/{number}", (
                f"{key} pushed as {producer}/{number}, delivered as {content} by {consumer}"
                f" ({operation})"
            )
        for key, takes in self.takes.items():
            # Every take either delivered the entry or gave it back to be taken again.
            assert takes == self.given_back[key] + 1, (key, takes, self.given_back[key])

    def check_order(self) -> None:
        by_producer: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for (session_id, sequence), [(_, _, content)] in self.delivered.items():
            producer, number = content.split("/")
            by_producer[producer, session_id].append((int(number), sequence))
        for (producer, session_id), numbered in by_producer.items():
            sequences = [sequence for _, sequence in sorted(numbered)]
            assert sequences == sorted(sequences), (
                f"{producer}'s entries in {session_id}: sequences do not rise with its numbers"
            )
        # (FIFO within each take is the conformance kit's to check. Here it
        # cannot be told from outside: a consumer's step that times out while
        # its look is stalled on the loaded server abandons the look, and the
        # library gives back what it took, at the head, unseen by the consumers.)

    def summary(self) -> str:
        lines = [f"{self.total} entries, {sum(self.given_back.values())} give-backs"]
        lines += [f"  {c} {op} {fate}: {n}" for (c, op, fate), n in sorted(self.tally.items())]
        return "\n".join(lines)


class Run:
    """The processes and the thread of one run, their reports on one queue, and their ends."""

    def __init__(self, server: RedisServer, namespace: str, directory: Path) -> None:
        self.server = server
        self.namespace = namespace
        self.directory = directory
        #: (reporter, line), or (reporter, None) when a child's stdout closed.
        self.events: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self.children: dict[str, subprocess.Popen[str]] = {}
        #: Reporters that said ``done``; children whose stdout closed.
        self.finished: set[str] = set()
        self.closed: set[str] = set()
        self.deadline = time.monotonic() + HANG_GUARD_SECONDS

    def start_child(self, config: dict[str, Any]) -> None:
        name = config["name"]
        config = {
            **config,
            "url": self.server.url,
            "namespace": self.namespace,
            "lifetime": HANG_GUARD_SECONDS + 120,
        }
        with (self.directory / f"{name}.stderr").open("w") as stderr:
            child = subprocess.Popen(
                [sys.executable, str(CHILD), json.dumps(config)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
            )
        self.children[name] = child
        threading.Thread(target=self._read, args=(name, child), daemon=True).start()

    def _read(self, name: str, child: subprocess.Popen[str]) -> None:
        assert child.stdout is not None
        for line in child.stdout:
            self.events.put((name, line.rstrip("\n")))
        self.events.put((name, None))

    def next_event(self, waiting_for: Callable[[], str]) -> tuple[str, list[str]]:
        """The next report: (reporter, fields); fails on a report of failure, or a hung run."""
        left = self.deadline - time.monotonic()
        try:
            name, line = self.events.get(timeout=max(min(left, SILENCE_GUARD_SECONDS), 0))
        except queue.Empty:
            hung = (
                f"{HANG_GUARD_SECONDS} s in all"
                if left <= SILENCE_GUARD_SECONDS
                else f"{SILENCE_GUARD_SECONDS} s without a report"
            )
            pytest.fail(f"hung ({hung}), waiting for {waiting_for()}")
        if line is None:
            self.closed.add(name)
            child = self.children[name]
            code = child.wait()
            if code != 0 or name not in self.finished:
                pytest.fail(f"{name} exited with {code} before it was done: {self.stderr(name)}")
            return name, ["exited"]
        fields = line.split(" ")
        if fields[0] == "X":
            pytest.fail(f"{name} failed: {line[2:].replace(' | ', chr(10))}")
        if fields[0] == "done":
            self.finished.add(name)
        return name, fields

    def stderr(self, name: str) -> str:
        path = self.directory / f"{name}.stderr"
        return path.read_text()[-3000:] if path.exists() else ""

    def kill_all(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()


@contextmanager
def opened(server: RedisServer, namespace: str) -> Iterator[Inbox]:
    """An inbox of its own on *namespace*; closed with its store."""
    store = RedisStore(server.url, namespace=namespace, claim_lease=CLAIM_LEASE)
    try:
        with Inbox(store=store) as inbox:
            yield inbox
    finally:
        store.close()


def run_thread_consumer(run: Run, inbox: Inbox, producers: list[str]) -> None:
    def report(line: str) -> None:
        run.events.put((THREAD_CONSUMER, line))

    try:
        consume_in_thread(inbox, Consumer(THREAD_CONSUMER, 0, producers, report))
    except BaseException:
        report("X " + traceback.format_exc().replace("\n", " | "))
    else:
        report("done")


def marked_count(counts: dict[str, list[int]]) -> int:
    """How many entries are marked: each goes back at least once (see ``redis_child.py``)."""
    return sum(len(range(MARK_AT, count, MARK_EVERY)) for row in counts.values() for count in row)


@pytest.mark.parametrize("entries", [ENTRIES])
def test_producer_and_consumer_processes_deliver_every_entry_once_in_each_producers_order(
    redis_server: RedisServer, tmp_path: Path, entries: int
) -> None:
    namespace = redis_server.namespace()
    counts = counts_of(entries)
    ledger = Ledger(counts)
    producers = [name for name, _ in PRODUCERS]
    consumers = {name for name, _ in CONSUMER_PROCESSES} | {THREAD_CONSUMER}
    run = Run(redis_server, namespace, tmp_path)
    with opened(redis_server, namespace) as parent, opened(redis_server, namespace) as own:
        consumer_thread = threading.Thread(
            target=run_thread_consumer, args=(run, own, producers), daemon=True
        )
        started = time.monotonic()
        try:
            for seed, (name, style) in enumerate(CONSUMER_PROCESSES, 1):
                run.start_child(
                    {"role": "consume", "name": name, "style": style, "seed": seed}
                    | {"producers": producers}
                )
            consumer_thread.start()
            ready = 0
            while ready < len(CONSUMER_PROCESSES):  # consumers first: they wait for the pushes
                _, fields = run.next_event(lambda: "the consumers to be ready")
                ready += fields == ["ready"]
            for name, style in PRODUCERS:
                run.start_child(
                    {"role": "produce", "name": name, "style": style, "counts": counts[name]}
                )
            while not (ledger.all_delivered() and run.finished >= set(producers)):
                name, fields = run.next_event(ledger.missing)
                if fields[0] == "P":
                    ledger.push(name, fields[1:])
                elif fields[0] == "T":
                    ledger.take(fields[1:])
            delivered = time.monotonic()
            for consumer in sorted(consumers):
                parent.push(stop_session(consumer), "stop", "stop", "parent")
            while not (run.finished >= consumers and run.closed >= set(run.children)):
                _, fields = run.next_event(lambda: f"{consumers - run.finished} to stop")
                if fields[0] == "T":  # only a defect takes more now: everything was delivered
                    ledger.take(fields[1:])
            consumer_thread.join(HANG_GUARD_SECONDS)
        finally:
            for consumer in consumers - run.finished:  # a failed run: stop what still runs
                parent.push(stop_session(consumer), "stop", "stop", "parent")
            run.kill_all()
            consumer_thread.join(30)
        log.info(
            "%s\ndelivered in %.1f s, stopped in %.1f s",
            ledger.summary(),
            delivered - started,
            time.monotonic() - delivered,
        )
        ledger.check_pushes()
        ledger.check_deliveries()
        ledger.check_order()
        assert sum(ledger.given_back.values()) >= marked_count(counts)
        for session_id in (*SESSIONS, *map(stop_session, consumers)):
            assert parent.pending_count(session_id) == 0, session_id
        assert parent.sessions() == []
