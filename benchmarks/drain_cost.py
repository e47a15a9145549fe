"""Scenario 2: what taking entries costs, by how many are pending.

``drain`` of a session holding 1, 100 and 10,000 entries, against the floor of
the same parts (a lock and a ``dict.pop``) and against emptying a thread-safe
queue the only way it can be, one ``get_nowait`` at a time. Then
``drain_where`` against a plain list-comprehension partition with the same
predicate, which takes half the entries: the partition asks the predicate once
per entry, as ``drain_where`` does, and needs no lock. Every round fills its
sessions (untimed), times the taking, and keeps what was taken alive until the
clock has stopped, so no candidate is charged for freeing entries.
"""

from __future__ import annotations

import queue
import threading
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Protocol

import culsans
import janus

from harn_inbox import Inbox, InboxEntry

from .measure import CONTENT, KIND, SOURCE, collector_paused, interleave
from .report import HARN, ScenarioResult, Verdict, method_of, ratio_verdict

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

KIND_TAKEN = KIND
KIND_KEPT = "mcp_progress"

METHOD = method_of(__doc__)


def wanted(entry: InboxEntry) -> bool:
    """The predicate of both sides of the drain_where comparison."""
    return entry.kind == KIND_TAKEN


def partition(
    entries: list[InboxEntry], predicate: Callable[[InboxEntry], object]
) -> tuple[list[InboxEntry], list[InboxEntry]]:
    """The plain partition: one predicate call per entry, two comprehensions."""
    verdicts = [predicate(entry) for entry in entries]
    taken = [entry for entry, verdict in zip(entries, verdicts, strict=True) if verdict]
    kept = [entry for entry, verdict in zip(entries, verdicts, strict=True) if not verdict]
    return taken, kept


class _SyncQueue(Protocol):
    def put_nowait(self, item: Any, /) -> None: ...
    def get_nowait(self) -> Any: ...


class FloorDrain:
    """The least a drain must do: take the session's list out of a dict under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, list[object]] = {}

    def fill(self, sessions: list[str], count: int) -> None:
        item = (KIND_TAKEN, CONTENT, SOURCE)
        for session_id in sessions:
            self._pending[session_id] = [item] * count

    def drain(self, session_id: str) -> list[object]:
        with self._lock:
            return self._pending.pop(session_id, None) or []


def _sessions(count: int) -> list[str]:
    return [f"session-{index}" for index in range(count)]


def _inbox_drain_round(inbox: Inbox, sessions: list[str], count: int) -> Callable[[], float]:
    def one_round() -> float:
        for session_id in sessions:
            for _ in range(count):
                inbox.push(session_id, KIND_TAKEN, CONTENT, SOURCE)
        drain = inbox.drain
        started = perf_counter_ns()
        kept = [drain(session_id) for session_id in sessions]
        elapsed = perf_counter_ns() - started
        assert sum(map(len, kept)) == count * len(sessions)
        return elapsed / len(sessions)

    return one_round


def _floor_drain_round(floor: FloorDrain, sessions: list[str], count: int) -> Callable[[], float]:
    def one_round() -> float:
        floor.fill(sessions, count)
        drain = floor.drain
        started = perf_counter_ns()
        kept = [drain(session_id) for session_id in sessions]
        elapsed = perf_counter_ns() - started
        assert sum(map(len, kept)) == count * len(sessions)
        return elapsed / len(sessions)

    return one_round


def _queue_drain_round(
    queues: Sequence[_SyncQueue], count: int, empty: type[Exception]
) -> Callable[[], float]:
    item = (KIND_TAKEN, CONTENT, SOURCE)

    def one_round() -> float:
        for sync_queue in queues:
            for _ in range(count):
                sync_queue.put_nowait(item)
        kept: list[list[object]] = []
        started = perf_counter_ns()
        for sync_queue in queues:
            get = sync_queue.get_nowait
            taken: list[object] = []
            try:
                while True:
                    taken.append(get())
            except empty:
                pass
            kept.append(taken)
        elapsed = perf_counter_ns() - started
        assert sum(map(len, kept)) == count * len(queues)
        return elapsed / len(queues)

    return one_round


def _drain_where_round(inbox: Inbox, sessions: list[str], count: int) -> Callable[[], float]:
    def one_round() -> float:
        for session_id in sessions:
            for index in range(count):
                inbox.push(session_id, KIND_KEPT if index % 2 else KIND_TAKEN, CONTENT, SOURCE)
        drain_where = inbox.drain_where
        started = perf_counter_ns()
        kept = [drain_where(session_id, wanted) for session_id in sessions]
        elapsed = perf_counter_ns() - started
        assert sum(map(len, kept)) == (count + 1) // 2 * len(sessions)
        for session_id in sessions:
            inbox.drain(session_id)
        return elapsed / len(sessions)

    return one_round


def _partition_round(batches: list[list[InboxEntry]]) -> Callable[[], float]:
    def one_round() -> float:
        started = perf_counter_ns()
        kept = [partition(entries, wanted) for entries in batches]
        elapsed = perf_counter_ns() - started
        assert len(kept) == len(batches)
        return elapsed / len(batches)

    return one_round


def _sample_entries(count: int) -> list[InboxEntry]:
    """*count* real entries, half of each kind, as ``drain_where`` will see them."""
    source = Inbox()
    for index in range(count):
        source.push("sample", KIND_KEPT if index % 2 else KIND_TAKEN, CONTENT, SOURCE)
    return source.drain("sample")


def run(quick: bool) -> ScenarioResult:
    rounds, where_rounds = (12, 10) if quick else (120, 80)
    result = ScenarioResult(
        "drain",
        2,
        "Drain cost by pending entries; drain_where against a plain partition",
        f"{METHOD} {rounds} rounds per candidate for drain, {where_rounds} for drain_where; "
        "ns per call (a round drains 1,000 sessions of 1 entry, 10 of 100, 1 of 10,000).",
    )
    with collector_paused():
        for count in (1, 100, 10_000):
            sessions = _sessions(max(1, 1_000 // count))
            queues: list[_SyncQueue] = [queue.Queue() for _ in sessions]
            janus_queues = [janus.Queue[object]().sync_q for _ in sessions]
            culsans_queues = [culsans.Queue[object]().sync_q for _ in sessions]
            samples = interleave(
                {
                    HARN: _inbox_drain_round(Inbox(), sessions, count),
                    "floor (lock + dict.pop)": _floor_drain_round(FloorDrain(), sessions, count),
                    "queue.Queue get_nowait loop": _queue_drain_round(queues, count, queue.Empty),
                    "janus get_nowait loop": _queue_drain_round(
                        janus_queues, count, janus.SyncQueueEmpty
                    ),
                    "culsans get_nowait loop": _queue_drain_round(
                        culsans_queues, count, culsans.SyncQueueEmpty
                    ),
                },
                rounds,
            )
            for name, values in samples.items():
                result.add(f"drain, {count:,} pending", name, "ns", values)
        for count in (100, 10_000):
            sessions = _sessions(max(1, 1_000 // count))
            batches = [_sample_entries(count) for _ in sessions]
            samples = interleave(
                {
                    HARN: _drain_where_round(Inbox(), sessions, count),
                    "list-comprehension partition": _partition_round(batches),
                },
                where_rounds,
            )
            for name, values in samples.items():
                result.add(f"drain_where, {count:,} pending", name, "ns", values)

    per_entry = {
        count: result.find(f"drain, {count:,} pending", HARN).summary.median / count
        for count in (100, 10_000)
    }
    growth = per_entry[10_000] / per_entry[100]
    result.verdicts.append(
        Verdict(
            2,
            "drain at most linear: ns/entry at 10,000 ≤ 1.25x ns/entry at 100",
            growth,
            "<=",
            1.25,
            f"{growth:.3f}x ({per_entry[10_000]:,.2f} vs {per_entry[100]:,.2f} ns/entry)",
        )
    )
    result.verdicts.append(
        ratio_verdict(
            2,
            "drain_where on 10,000 ≤ 2x the plain partition",
            result.find("drain_where, 10,000 pending", HARN),
            result.find("drain_where, 10,000 pending", "list-comprehension partition"),
            "<=",
            2.0,
        )
    )
    return result
