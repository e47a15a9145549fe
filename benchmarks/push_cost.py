"""Scenario 1: what one ``push`` costs, one thread, one session.

Against a floor built from the same parts and against the thread-safe queues
a user might have reached for instead. The floor and push have the same call
shape, a method taking the same four ``str`` arguments. Each queue is measured
twice: its bare ``put`` of one prebuilt item (shown for reference), and the
push a user would write on top of it to get what ``Inbox.push`` returns, a
stamped entry (the floor's six-field object with a sequence from one
``itertools.count`` and a wall-clock read, then ``put``); the targets compare
like with like, push against push. Every round
times *ops* calls in a plain loop, then drains what they stored (untimed), so
no list grows without bound; rounds rotate across the candidates.
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

from harn_inbox import Inbox

from .measure import collector_paused, interleave
from .report import HARN, ScenarioResult, method_of, ratio_verdict

if TYPE_CHECKING:
    from collections.abc import Callable

SESSION = "session-1"
KIND = "tool_result"
CONTENT = "the build finished: 0 errors, 2 warnings"
SOURCE = "tool:build"

METHOD = method_of(__doc__)


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


def _time_pushes(push: Callable[[str, str, str, str], object], ops: int) -> float:
    session_id, kind, content, source = SESSION, KIND, CONTENT, SOURCE
    started = perf_counter_ns()
    for _ in range(ops):
        push(session_id, kind, content, source)
    return (perf_counter_ns() - started) / ops


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


def run(quick: bool) -> ScenarioResult:
    rounds, ops = (60, 500) if quick else (600, 1_000)
    result = ScenarioResult(
        "push",
        1,
        "Push cost, one thread, one session",
        f"{METHOD} {rounds} rounds of {ops:,} calls per candidate; ns per call.",
    )
    inbox = Inbox()
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
        "empty call, same shape": round_of(lambda: _time_pushes(empty_call, ops), lambda: None),
        "floor": round_of(lambda: _time_pushes(floor.push, ops), floor.drain),
        HARN: round_of(lambda: _time_pushes(inbox.push, ops), lambda: inbox.drain(SESSION)),
        "queue.Queue.put": round_of(
            lambda: _time_puts(stdlib_queue.put, ops), stdlib_queue.queue.clear
        ),
        "janus sync_q.put": round_of(lambda: _time_puts(janus_put, ops), janus_queue._queue.clear),
        "culsans sync_q.put": round_of(lambda: _time_puts(culsans_put, ops), culsans_queue.clear),
        "queue.Queue, stamped entry": round_of(
            lambda: _time_pushes(stamped(stdlib_queue.put), ops), stdlib_queue.queue.clear
        ),
        "janus, stamped entry": round_of(
            lambda: _time_pushes(stamped(janus_put), ops), janus_queue._queue.clear
        ),
        "culsans, stamped entry": round_of(
            lambda: _time_pushes(stamped(culsans_put), ops), culsans_queue.clear
        ),
    }
    with collector_paused():
        samples = interleave(candidates, rounds)
    case = "push / put"
    for name, values in samples.items():
        result.add(case, name, "ns", values)
    ours = result.find(case, HARN)
    result.verdicts += [
        ratio_verdict(1, "push ≤ 1.5x the floor", ours, result.find(case, "floor"), "<=", 1.5),
        ratio_verdict(
            1,
            "push cheaper than a stamped push on janus",
            ours,
            result.find(case, "janus, stamped entry"),
            "<",
            1.0,
        ),
        ratio_verdict(
            1,
            "push cheaper than a stamped push on culsans",
            ours,
            result.find(case, "culsans, stamped entry"),
            "<",
            1.0,
        ),
    ]
    return result
