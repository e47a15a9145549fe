"""Scenario 1: what one ``push`` costs, one thread, one session.

Against the push a user would write on a thread-safe queue to get what
``Inbox.push`` returns, a stamped entry (a six-field object with a sequence
from one ``itertools.count`` and a wall-clock read, then ``put``), and against
harn_inbox itself at two earlier commits, extracted from git and imported side
by side: before the redesign (issue #13) and before the entries' payload and
the producer controls (issue #14). For reference only: a floor of the same
parts (a lock, a dict lookup, the six-field object, a clock read, a deque
append) behind the same four-``str`` call, and each queue's bare ``put`` of
one prebuilt item. Every round times *ops* calls in a plain loop, then drains
what they stored (untimed), so no list grows without bound; rounds rotate
across the candidates.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import deque
from time import perf_counter_ns, time_ns
from typing import TYPE_CHECKING

import culsans
import janus

import harn_inbox

from . import revisions
from .measure import CONTENT, KIND, SESSION, SOURCE, collector_paused, interleave, time_pushes
from .report import HARN, ScenarioResult, method_of, ratio_verdict
from .tricks import push_round

if TYPE_CHECKING:
    from collections.abc import Callable

METHOD = method_of(__doc__)

#: harn_inbox at earlier commits: the candidate's name, the revision, the most push may cost more.
EARLIER = (
    ("before the redesign", revisions.BEFORE_REDESIGN, 1.10),
    ("before #14", revisions.BEFORE_CONTROLS, 1.05),
)


class FloorEntry:
    """The entry of the floor: a plain slotted object of six fields."""

    __slots__ = ("content", "kind", "sequence", "session_id", "source", "ts_ms")

    sequence: int
    session_id: str
    kind: str
    content: str
    source: str
    ts_ms: int


class FloorInbox:
    """The least a push must do: a lock, a dict lookup, a six-field object, a clock, an append."""

    __slots__ = ("_lock", "_queues")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[FloorEntry]] = {SESSION: deque()}

    def push(self, session_id: str, kind: str, content: str, source: str) -> FloorEntry:
        # acquire() + try/finally, as Inbox.push takes its lock: on 3.12 it is
        # cheaper than `with`, and the floor must not be slower than it needs be.
        lock = self._lock
        lock.acquire()
        try:
            entries = self._queues[session_id]
            entry = FloorEntry()
            entry.sequence = len(entries) + 1
            entry.session_id = session_id
            entry.kind = kind
            entry.content = content
            entry.source = source
            entry.ts_ms = time_ns() // 1_000_000
            entries.append(entry)
        finally:
            lock.release()
        return entry

    def drain(self) -> None:
        self._queues[SESSION].clear()


def empty_call(session_id: str, kind: str, content: str, source: str) -> None:
    """The call shape alone: what the loop and the call cost before any work."""


def stamped(put: Callable[[object], object]) -> Callable[[str, str, str, str], object]:
    """The push a user writes on a plain queue: build and stamp the entry, then put it."""
    sequences = itertools.count(1)

    def push(session_id: str, kind: str, content: str, source: str) -> FloorEntry:
        entry = FloorEntry()
        entry.sequence = next(sequences)
        entry.session_id = session_id
        entry.kind = kind
        entry.content = content
        entry.source = source
        entry.ts_ms = time_ns() // 1_000_000
        put(entry)
        return entry

    return push


def _time_puts(put: Callable[[object], object], ops: int) -> float:
    item = (SESSION, KIND, CONTENT, SOURCE)
    started = perf_counter_ns()
    for _ in range(ops):
        put(item)
    return (perf_counter_ns() - started) / ops


def earlier_name(description: str, revision: str) -> str:
    return f"{HARN} {description} (git {revision})"


def run(quick: bool) -> ScenarioResult:
    rounds, ops = (60, 500) if quick else (600, 1_000)
    result = ScenarioResult(
        "push",
        1,
        "Push cost, one thread, one session",
        f"{METHOD} {rounds} rounds of {ops:,} calls per candidate; ns per call.",
    )
    inbox = harn_inbox.Inbox()
    floor = FloorInbox()
    stdlib_queue: queue.Queue[object] = queue.Queue()
    janus_queue: janus.Queue[object] = janus.Queue()
    culsans_queue: culsans.Queue[object] = culsans.Queue()
    janus_put = janus_queue.sync_q.put
    culsans_put = culsans_queue.sync_q.put  # sync_q makes a new proxy at each access

    def round_of(time_it: Callable[[], float], drain: Callable[[], object]) -> Callable[[], float]:
        def one_round() -> float:
            per_call = time_it()
            drain()
            return per_call

        return one_round

    candidates = {
        "empty call, same shape": round_of(lambda: time_pushes(empty_call, ops), lambda: None),
        "floor": round_of(lambda: time_pushes(floor.push, ops), floor.drain),
        HARN: round_of(lambda: time_pushes(inbox.push, ops), lambda: inbox.drain(SESSION)),
        "queue.Queue.put": round_of(
            lambda: _time_puts(stdlib_queue.put, ops), stdlib_queue.queue.clear
        ),
        "janus sync_q.put": round_of(lambda: _time_puts(janus_put, ops), janus_queue._queue.clear),
        "culsans sync_q.put": round_of(lambda: _time_puts(culsans_put, ops), culsans_queue.clear),
        "queue.Queue, stamped entry": round_of(
            lambda: time_pushes(stamped(stdlib_queue.put), ops), stdlib_queue.queue.clear
        ),
        "janus, stamped entry": round_of(
            lambda: time_pushes(stamped(janus_put), ops), janus_queue._queue.clear
        ),
        "culsans, stamped entry": round_of(
            lambda: time_pushes(stamped(culsans_put), ops), culsans_queue.clear
        ),
    }
    unavailable: dict[str, str] = {}
    for description, revision, _ in EARLIER:
        try:
            earlier = revisions.package(revision).module()
        except (revisions.RevisionUnavailable, ImportError) as error:
            unavailable[revision] = str(error)
            continue
        candidates[earlier_name(description, revision)] = push_round(earlier, None, ops)
    with collector_paused():
        samples = interleave(candidates, rounds)
    case = "push / put"
    for name, values in samples.items():
        result.add(case, name, "ns", values)
    ours = result.find(case, HARN)
    result.verdicts += [
        ratio_verdict(
            1,
            f"push cheaper than a stamped push on {peer}",
            ours,
            result.find(case, f"{peer}, stamped entry"),
            "<",
            1.0,
            headline=True,
        )
        for peer in ("janus", "culsans")
    ]
    for description, revision, limit in EARLIER:
        if revision in unavailable:
            continue
        result.verdicts.append(
            ratio_verdict(
                1,
                f"push ≤ {limit:.2f}x the push {description} (git {revision})",
                ours,
                result.find(case, earlier_name(description, revision)),
                "<=",
                limit,
            )
        )
    if unavailable:
        result.details["earlier_revisions_unavailable"] = unavailable
    return result
