"""Scenario 11: the durable store, `SqliteStore`, against raw sqlite3 and the durable queues.

**Throughput.** Eight threads, released at once by a barrier, each push
*count* entries into a session of their own of
``Inbox(store=SqliteStore(path, sync="normal"))``; the rate is all entries
over the time from the barrier's release to the last push returning (a push
returns once its entry is committed). Against, from the same eight threads,
the same work: raw ``sqlite3`` committing each entry on its own, on one
connection set as the store sets its own (exclusive locking mode, WAL,
``synchronous=NORMAL``) and shared behind a lock, each ``INSERT`` of a
session, a sequence, the three strings and a time run in autocommit, SQLite's
cheapest committed insert; persist-queue's ``SQLiteQueue``
(``multithreading=True``, ``auto_commit=True``: it commits each put) and
litequeue's ``LiteQueue`` (which commits each put), one queue per session,
each in a file of its own, at ``synchronous=NORMAL`` too (litequeue sets it;
persist-queue's connections are given it, since it leaves SQLite's ``FULL``,
an fsync per commit that the store at ``"normal"`` does not pay). Each is the
candidate's fastest shape (see the benchmarks' README). Every run starts from
new files in a new directory; runs rotate across the candidates.

**Push latency.** One thread: the store's ``push`` against raw ``sqlite3``'s
autocommitted ``INSERT`` of the same row, on a connection set as above. A
block times *ops* calls, each on its own; the block's p50 is one repeat;
blocks rotate between the two, and each block's entries are drained (deleted)
untimed afterwards.

**Wake-up.** Scenario 3's hand-off (a producer thread pushes once the task
waiting on the session counts in ``waiter_count``; the latency runs from the
reading before the push to the task's first line after its wait returns),
with the inbox on ``SqliteStore(path, sync="normal")``, so the push commits
before it wakes the task; beside scenario 3's bare primitives
(``TrioToken.run_sync_soon`` of a ``trio.Event``, ``call_soon_threadsafe``
of an asyncio future), as the floor the raw autocommitted ``INSERT`` above
followed by that bare wake, and for reference the same inbox wake-up on the
in-memory store, all measured in the same rotation. One store
and inbox serve every block (the raw table is never emptied).

**Restart.** One thread builds a file of *entries* pending entries over
*sessions* sessions (round-robin) with the store itself, and the time it took
is reported. Each repeat copies that file (untimed) and times
``SqliteStore(path)``, then a new ``Inbox`` on it, until its first ``drain``
(of one session) returns. One more open, under tracemalloc, reads the peak of
Python's memory during ``SqliteStore(path)`` and what the restored store holds
once it has returned, per entry, both above the footprint before it (SQLite's
own page cache is not Python's memory, so not counted).

Every file is in one new directory of the system's temporary directory
(``TMPDIR``), so every candidate writes to the same filesystem. The cyclic
collector is paused during every timed stretch.
"""

from __future__ import annotations

import functools
import gc
import importlib.metadata
import itertools
import json
import shutil
import sqlite3
import tempfile
import threading
import tracemalloc
from contextlib import ExitStack
from pathlib import Path
from time import perf_counter_ns, time_ns
from typing import TYPE_CHECKING, cast

import litequeue  # type: ignore[import-untyped]
import persistqueue

from harn_inbox import Inbox
from harn_inbox.stores import SqliteStore

from .measure import CONTENT, KIND, SESSION, SOURCE, collector_paused, percentile, rotations
from .report import HARN, ScenarioResult, Verdict, method_of, ratio_verdict
from .throughput import PRODUCERS, _Clock, _start_producers
from .wakeup_latency import BARE, Candidate, FutureRig, InboxRig, TrioEventRig, measure_blocks

if TYPE_CHECKING:
    from collections.abc import Callable

    #: One thread's way to store one entry each, and what the candidate needs closed afterwards.
    Producers = tuple[list[Callable[[], object]], ExitStack]

METHOD = method_of(__doc__)

RAW = "sqlite3, a commit per insert"
PERSIST_QUEUE = "persist-queue"
LITEQUEUE = "litequeue"

#: Issue #15's targets: the store's entries/s over raw sqlite3's (at least), and its
#: push p50 over raw sqlite3's insert and commit (at most).
RAW_THROUGHPUT_FACTOR = 5.0
LATENCY_LIMIT = 2.0
#: The most Python's memory may peak at while restoring, over what the restored store holds.
RESTORE_PEAK_LIMIT = 1.5

#: The raw baseline's table: the columns an entry needs, and the store's index on them.
RAW_SCHEMA = (
    (
        "CREATE TABLE entries (position INTEGER PRIMARY KEY, session_id TEXT NOT NULL, "
        "sequence INTEGER NOT NULL, kind TEXT NOT NULL, content TEXT NOT NULL, "
        "source TEXT NOT NULL, ts_ms INTEGER NOT NULL)"
    ),
    "CREATE INDEX entries_by_session ON entries (session_id, position)",
)
RAW_INSERT = (
    "INSERT INTO entries (session_id, sequence, kind, content, source, ts_ms) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)

#: What the peers carry: the three strings (litequeue takes a str, so its JSON, made once).
ITEM = (KIND, CONTENT, SOURCE)
ITEM_JSON = json.dumps(ITEM)


# -- The candidates ------------------------------------------------------------------------------


def _session_ids(count: int) -> list[str]:
    return [f"session-{index:05d}" for index in range(count)]


def _inbox_producers(directory: Path) -> Producers:
    cleanup = ExitStack()
    store = cleanup.enter_context(SqliteStore(directory / "inbox.db", sync="normal"))
    inbox = Inbox(store=store)
    cleanup.callback(inbox.close)

    def pusher(session_id: str) -> Callable[[], object]:
        push = inbox.push
        return lambda: push(session_id, KIND, CONTENT, SOURCE)

    return [pusher(session_id) for session_id in _session_ids(PRODUCERS)], cleanup


def _raw_connection(path: Path) -> sqlite3.Connection:
    """A new file with the raw baseline's table, on a connection set as the store sets its own.

    Exclusive locking mode, WAL, ``synchronous=NORMAL``; autocommitting, so
    each ``INSERT`` is a transaction of its own.
    """
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA locking_mode = EXCLUSIVE")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    for statement in RAW_SCHEMA:
        connection.execute(statement)
    return connection


def _raw_inserter(connection: sqlite3.Connection, session_id: str) -> Callable[[], object]:
    """Insert the session's next entry in a transaction of its own (autocommit)."""
    sequences = itertools.count(1)
    execute = connection.execute
    return lambda: execute(
        RAW_INSERT, (session_id, next(sequences), KIND, CONTENT, SOURCE, time_ns() // 1_000_000)
    )


def _raw_producers(directory: Path) -> Producers:
    cleanup = ExitStack()
    connection = _raw_connection(directory / "raw.db")
    cleanup.callback(connection.close)
    lock = threading.Lock()

    def locked(insert: Callable[[], object]) -> Callable[[], object]:
        def insert_alone() -> None:
            with lock:
                insert()

        return insert_alone

    return [
        locked(_raw_inserter(connection, session_id)) for session_id in _session_ids(PRODUCERS)
    ], cleanup


def _persist_queue(directory: Path) -> persistqueue.SQLiteQueue:
    queue = persistqueue.SQLiteQueue(str(directory), multithreading=True, auto_commit=True)
    # It leaves SQLite's synchronous=FULL (an fsync per commit): give its two connections
    # (one puts, one gets) the store's setting.
    for connection in (queue._putter, queue._getter):
        cast("sqlite3.Connection", connection).execute("PRAGMA synchronous = NORMAL")
    return queue


def _persist_queue_producers(directory: Path) -> Producers:
    cleanup = ExitStack()
    puts: list[Callable[[], object]] = []
    for session_id in _session_ids(PRODUCERS):
        queue = _persist_queue(directory / f"persist-queue-{session_id}")
        cleanup.callback(queue.close)
        puts.append(functools.partial(queue.put, ITEM))
    return puts, cleanup


def _litequeue_producers(directory: Path) -> Producers:
    cleanup = ExitStack()
    puts: list[Callable[[], object]] = []
    for session_id in _session_ids(PRODUCERS):
        queue = litequeue.LiteQueue(directory / f"litequeue-{session_id}.db")
        cleanup.callback(queue.close)
        puts.append(functools.partial(queue.put, ITEM_JSON))
    return puts, cleanup


THROUGHPUT_CANDIDATES: dict[str, Callable[[Path], Producers]] = {
    HARN: _inbox_producers,
    RAW: _raw_producers,
    PERSIST_QUEUE: _persist_queue_producers,
    LITEQUEUE: _litequeue_producers,
}


# -- Throughput ----------------------------------------------------------------------------------


def _throughput_run(make: Callable[[Path], Producers], directory: Path, count: int) -> float:
    """One run on new files: entries per second, from the barrier to the last store returning."""
    with tempfile.TemporaryDirectory(dir=directory) as name:
        puts, cleanup = make(Path(name))
        with cleanup, collector_paused():
            clock = _Clock()
            threads = _start_producers(puts, count, clock)
            for thread in threads:
                thread.join()
            finished = perf_counter_ns()
    return len(puts) * count / ((finished - clock.started) / 1e9)


def _measure_throughput(result: ScenarioResult, directory: Path, runs: int, count: int) -> None:
    rates: dict[str, list[float]] = {name: [] for name in THROUGHPUT_CANDIDATES}
    for order in rotations(list(THROUGHPUT_CANDIDATES), runs):
        for name in order:
            rates[name].append(_throughput_run(THROUGHPUT_CANDIDATES[name], directory, count))
    case = f"{PRODUCERS} threads, {PRODUCERS} sessions"
    for name, values in rates.items():
        result.add(case, name, "entries/s", values)
    ours = result.find(case, HARN)
    result.verdicts.append(
        ratio_verdict(
            11,
            f"8 producers: ≥ {RAW_THROUGHPUT_FACTOR:g}x the entries/s of raw sqlite3 "
            "committing each insert",
            ours,
            result.find(case, RAW),
            ">=",
            RAW_THROUGHPUT_FACTOR,
            headline=True,
        )
    )
    for peer in (PERSIST_QUEUE, LITEQUEUE):
        result.verdicts.append(
            ratio_verdict(
                11,
                f"8 producers: ahead of {peer}'s entries/s",
                ours,
                result.find(case, peer),
                ">=",
                1.0,
                headline=True,
            )
        )


# -- Push latency --------------------------------------------------------------------------------


def _p50_of_block(call: Callable[[], object], ops: int) -> float:
    """The median of *ops* calls, each timed on its own, in µs."""
    times: list[float] = []
    for _ in range(ops):
        started = perf_counter_ns()
        call()
        times.append(perf_counter_ns() - started)
    times.sort()
    return percentile(times, 50) / 1e3


def _measure_latency(result: ScenarioResult, directory: Path, blocks: int, ops: int) -> None:
    with ExitStack() as cleanup:
        store = cleanup.enter_context(SqliteStore(directory / "latency.db", sync="normal"))
        inbox = Inbox(store=store)
        cleanup.callback(inbox.close)
        connection = _raw_connection(directory / "latency-raw.db")
        cleanup.callback(connection.close)
        push = inbox.push
        candidates: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
            HARN: (
                lambda: push(SESSION, KIND, CONTENT, SOURCE),
                lambda: inbox.drain(SESSION),
            ),
            RAW: (
                _raw_inserter(connection, SESSION),
                lambda: connection.execute("DELETE FROM entries"),
            ),
        }
        samples: dict[str, list[float]] = {name: [] for name in candidates}
        for order in rotations(list(candidates), blocks):
            for name in order:
                call, empty = candidates[name]
                with collector_paused():
                    samples[name].append(_p50_of_block(call, ops))
                empty()
    case = "one thread, one session: p50"
    ours = result.add(case, HARN, "µs", samples[HARN])
    raw = result.add(case, RAW, "µs", samples[RAW])
    result.verdicts.append(
        ratio_verdict(
            11,
            f"push p50 ≤ {LATENCY_LIMIT:g}x a raw sqlite3 insert and commit",
            ours,
            raw,
            "<=",
            LATENCY_LIMIT,
            headline=True,
        )
    )


#: The floor of the wake-up: the raw insert and commit, then the bare primitive's wake.
COMMIT_THEN_WAKE = f"{RAW}, then the {BARE}"
#: For reference: the same wake-up with the inbox on the in-memory store (scenario 3's).
IN_MEMORY = f"{HARN}: on the in-memory store"


def _measure_wake(result: ScenarioResult, directory: Path, blocks: int, rounds: int) -> None:
    with ExitStack() as cleanup:
        store = cleanup.enter_context(SqliteStore(directory / "wake.db", sync="normal"))
        inbox = cleanup.enter_context(Inbox(store=store))
        connection = _raw_connection(directory / "wake-raw.db")
        cleanup.callback(connection.close)
        insert = _raw_inserter(connection, SESSION)

        def on_sqlite() -> InboxRig:
            return InboxRig(inbox)

        class TrioCommitRig(TrioEventRig):
            def fire(self) -> None:
                insert()
                super().fire()

        class FutureCommitRig(FutureRig):
            def fire(self) -> None:
                insert()
                super().fire()

        candidates: list[Candidate] = [
            ("trio", HARN, on_sqlite, 0),
            ("trio", IN_MEMORY, InboxRig, 0),
            ("trio", COMMIT_THEN_WAKE, TrioCommitRig, 0),
            ("trio", BARE, TrioEventRig, 0),
            ("asyncio", HARN, on_sqlite, 0),
            ("asyncio", IN_MEMORY, InboxRig, 0),
            ("asyncio", COMMIT_THEN_WAKE, FutureCommitRig, 0),
            ("asyncio", BARE, FutureRig, 0),
        ]
        measure_blocks(result, candidates, blocks, rounds)


# -- Restart -------------------------------------------------------------------------------------


def _build(path: Path, entries: int, sessions: int) -> float:
    """Push *entries* entries round-robin over *sessions* sessions, one thread; seconds taken."""
    session_ids = _session_ids(sessions)
    with SqliteStore(path, sync="normal") as store, Inbox(store=store) as inbox:
        push = inbox.push
        started = perf_counter_ns()
        for _ in range(entries // sessions):
            for session_id in session_ids:
                push(session_id, KIND, CONTENT, SOURCE)
        return (perf_counter_ns() - started) / 1e9


def _copy_store(source: Path, target: Path) -> None:
    """A closed store's file (and its write-ahead log, if one was left) copied to *target*."""
    for suffix in ("", "-wal"):
        origin = source.with_name(source.name + suffix)
        copy = target.with_name(target.name + suffix)
        copy.unlink(missing_ok=True)
        if origin.exists():
            shutil.copyfile(origin, copy)


def _time_to_first_drain(path: Path, session_id: str, entries: int, sessions: int) -> float:
    """Milliseconds from ``SqliteStore(path)`` to the first drain of *session_id* returning.

    Raises:
        RuntimeError: The store did not restore every entry of the file.
    """
    with collector_paused():
        started = perf_counter_ns()
        store = SqliteStore(path)
        inbox = Inbox(store=store)
        drained = inbox.drain(session_id)
        milliseconds = (perf_counter_ns() - started) / 1e6
    restored = len(drained) + sum(map(inbox.pending_count, inbox.sessions()))
    if len(drained) != entries // sessions or restored != entries:
        raise RuntimeError(f"restored {restored:,} entries ({len(drained)} in {session_id!r})")
    inbox.close()
    store.close()
    return milliseconds


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def _restore_memory(path: Path) -> tuple[int, int]:
    """Python's peak memory while ``SqliteStore(path)`` runs, and what the store holds after.

    Both above the footprint before it, in bytes.
    """
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        before = _traced()
        tracemalloc.reset_peak()
        store = SqliteStore(path)
        peak = tracemalloc.get_traced_memory()[1]
        held = _traced()
        store.close()
        del store
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return peak - before, held - before


def _measure_restart(
    result: ScenarioResult, directory: Path, entries: int, sessions: int, repeats: int
) -> None:
    built, working = directory / "restart.db", directory / "restart-copy.db"
    build_seconds = _build(built, entries, sessions)
    result.details["restart_file"] = {
        "entries": entries,
        "sessions": sessions,
        "bytes": built.stat().st_size,
        "build_seconds": round(build_seconds, 2),
        "build_entries_per_second": round(entries / build_seconds),
    }
    first_session = _session_ids(1)[0]
    opening: list[float] = []
    for _ in range(repeats):
        _copy_store(built, working)
        opening.append(_time_to_first_drain(working, first_session, entries, sessions))
    _copy_store(built, working)
    peak, held = _restore_memory(working)

    case = f"{entries:,} entries over {sessions:,} sessions"
    result.add(f"{case}: building it (one thread)", HARN, "ms", [build_seconds * 1e3])
    result.add(f"{case}: SqliteStore(path) to the first drain", HARN, "ms", opening)
    result.add(
        f"{case}: Python's memory at its peak while opening", HARN, "B/entry", [peak / entries]
    )
    result.add(f"{case}: Python's memory the opened store holds", HARN, "B/entry", [held / entries])
    result.verdicts.append(
        Verdict(
            11,
            f"restoring: memory peaks at ≤ {RESTORE_PEAK_LIMIT:g}x what the restored entries hold",
            peak / held,
            "<=",
            RESTORE_PEAK_LIMIT,
            f"{peak / held:.2f}x ({peak / entries:,.0f} vs {held / entries:,.0f} B/entry)",
        )
    )


# -- The scenario --------------------------------------------------------------------------------


def _versions() -> str:
    """The peers' versions and SQLite's, for the method text under the table."""
    peers = [
        f"{name} {importlib.metadata.version(name)}" for name in ("persist-queue", "litequeue")
    ]
    return ", ".join([*peers, f"SQLite {sqlite3.sqlite_version}"])


def run(quick: bool) -> ScenarioResult:
    runs, count = (2, 300) if quick else (7, 2_500)
    blocks, ops = (20, 100) if quick else (200, 200)
    wake_blocks, wake_rounds = (3, 150) if quick else (20, 300)
    entries, sessions, repeats = (20_000, 200, 2) if quick else (1_000_000, 10_000, 3)
    result = ScenarioResult(
        "durable",
        11,
        'The durable store (SqliteStore, sync="normal")',
        f"{METHOD} Throughput: {runs} runs of {PRODUCERS} x {count:,} entries per candidate. "
        f"Latency: {blocks} blocks of {ops} pushes per candidate. "
        f"Wake-up: {wake_blocks} blocks of {wake_rounds} wake-ups per candidate. "
        f"Restart: {entries:,} entries over {sessions:,} sessions, {repeats} timed opens. "
        f"{_versions()}.",
    )
    with tempfile.TemporaryDirectory(prefix="harn-durable-") as name:
        directory = Path(name)
        result.details["temporary_directory"] = str(directory.parent)
        _measure_throughput(result, directory, runs, count)
        _measure_latency(result, directory, blocks, ops)
        _measure_wake(result, directory, wake_blocks, wake_rounds)
        _measure_restart(result, directory, entries, sessions, repeats)
    return result
