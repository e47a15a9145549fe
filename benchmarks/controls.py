"""Scenario 9: the producer controls of issue #14, by pending count and over time.

**Keyed pushes.** A push with a ``dedupe_key`` and a push with a
``coalesce_key`` into a session holding 100 or 100,000 entries: rounds of
*ops* pushes, rotating across the four candidates. The dedupe keys are new
each round; the round's entries are revoked afterwards (untimed), and the
inbox's ``ManualClock`` moves past the one-second window, so the next round's
pushes forget the last round's keys as they go, as a steady producer's would.
The coalesce keys name pending entries, so each push replaces one and the
count stays put. **Memory of dedupe keys.** *pushes* pushes, each with a new
``dedupe_key``, the ``ManualClock`` one millisecond further each time (a
window of *window* seconds holds *window* x 1,000 keys), a drain after every
1,000; tracemalloc reads the memory the inbox holds above its start after
each tenth of the pushes, the collector run first.
"""

from __future__ import annotations

import gc
import tracemalloc
from time import perf_counter_ns
from typing import TYPE_CHECKING, Literal

from harn_inbox import Inbox, ManualClock

from .measure import CONTENT, FLAT, KIND, SESSION, SOURCE, collector_paused, interleave
from .report import HARN, ScenarioResult, Verdict, method_of, ratio_verdict

if TYPE_CHECKING:
    from collections.abc import Callable

METHOD = method_of(__doc__)

Control = Literal["dedupe_key", "coalesce_key"]
CONTROLS: tuple[Control, ...] = ("dedupe_key", "coalesce_key")
PENDING = (100, 100_000)
#: How far the memory of dedupe keys may rise from the first reading to the last.
MEMORY_FLAT = 1.10
#: Milliseconds the ManualClock starts at (any positive time).
EPOCH_MS = 1_700_000_000_000


def _time_dedupe(push: Callable[..., object], keys: list[str]) -> float:
    session_id, kind, content, source = SESSION, KIND, CONTENT, SOURCE
    started = perf_counter_ns()
    for key in keys:
        push(session_id, kind, content, source, dedupe_key=key)
    return (perf_counter_ns() - started) / len(keys)


def _time_coalesce(push: Callable[..., object], keys: list[str]) -> float:
    session_id, kind, content, source = SESSION, KIND, CONTENT, SOURCE
    started = perf_counter_ns()
    for key in keys:
        push(session_id, kind, content, source, coalesce_key=key)
    return (perf_counter_ns() - started) / len(keys)


def _dedupe_round(pending: int, ops: int) -> Callable[[], float]:
    clock = ManualClock(start_ms=EPOCH_MS)
    inbox = Inbox(clock=clock, dedupe_window=1)
    for _ in range(pending):
        inbox.push(SESSION, KIND, CONTENT, SOURCE)
    rounds = 0

    def one_round() -> float:
        nonlocal rounds
        rounds += 1
        keys = [f"dedupe-{rounds}-{index}" for index in range(ops)]
        last = inbox.statistics(SESSION).last_sequence
        per_call = _time_dedupe(inbox.push, keys)
        for sequence in range(last + 1, last + ops + 1):
            inbox.revoke(SESSION, sequence)
        clock.advance(2)
        return per_call

    return one_round


def _coalesce_round(pending: int, ops: int) -> Callable[[], float]:
    inbox = Inbox()
    for index in range(pending):
        inbox.push(SESSION, KIND, CONTENT, SOURCE, coalesce_key=f"coalesce-{index}")
    offset = 0

    def one_round() -> float:
        nonlocal offset
        keys = [f"coalesce-{(offset + index) % pending}" for index in range(ops)]
        offset += ops
        return _time_coalesce(inbox.push, keys)

    return one_round


ROUNDS: dict[Control, Callable[[int, int], Callable[[], float]]] = {
    "dedupe_key": _dedupe_round,
    "coalesce_key": _coalesce_round,
}


def _case(control: Control, pending: int) -> str:
    return f"push with a {control}, {pending:,} pending"


def _dedupe_memory(pushes: int, window: int) -> list[tuple[int, int]]:
    """(pushes so far, bytes above the start) after each tenth of *pushes* keyed pushes."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        clock = ManualClock(start_ms=EPOCH_MS)
        inbox = Inbox(clock=clock, dedupe_window=window)
        push, drain = inbox.push, inbox.drain
        gc.collect()
        start = tracemalloc.get_traced_memory()[0]
        readings = []
        every = pushes // 10
        for index in range(1, pushes + 1):
            clock.set(EPOCH_MS + index)
            push(SESSION, KIND, CONTENT, SOURCE, dedupe_key=f"dedupe-{index}")
            if index % 1_000 == 0:
                drain(SESSION)
            if index % every == 0:
                gc.collect()
                readings.append((index, tracemalloc.get_traced_memory()[0] - start))
        del inbox
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return readings


def run(quick: bool) -> ScenarioResult:
    rounds, ops = (10, 500) if quick else (100, 1_000)
    pushes, window = (100_000, 2) if quick else (1_000_000, 10)
    result = ScenarioResult(
        "controls",
        9,
        "Producer controls: keyed pushes by pending count; memory of dedupe keys",
        f"{METHOD} Keyed pushes: {rounds} rounds of {ops:,} per candidate, ns per push. "
        f"Memory: {pushes:,} keyed pushes, a window of {window} s.",
    )
    with collector_paused():
        samples = interleave(
            {
                _case(control, pending): ROUNDS[control](pending, ops)
                for control in CONTROLS
                for pending in PENDING
            },
            rounds,
        )
    for case, values in samples.items():
        result.add(case, HARN, "ns", values)
    result.verdicts += [
        ratio_verdict(
            9,
            f"a push with a {control} is O(1): at 100,000 pending ≤ {FLAT}x at 100",
            result.find(_case(control, PENDING[-1]), HARN),
            result.find(_case(control, PENDING[0]), HARN),
            "<=",
            FLAT,
        )
        for control in CONTROLS
    ]

    readings = _dedupe_memory(pushes, window)
    result.details["dedupe_memory_bytes"] = dict(readings)
    (first_count, first), (last_count, last) = readings[0], readings[-1]
    for count, held in (readings[0], readings[-1]):
        result.add(f"memory held after {count:,} keyed pushes", HARN, "B", [held])
    growth = last / first
    result.verdicts.append(
        Verdict(
            9,
            f"memory of dedupe keys flat: after {last_count:,} pushes "
            f"≤ {MEMORY_FLAT}x after {first_count:,}",
            growth,
            "<=",
            MEMORY_FLAT,
            f"{growth:.3f}x ({last:,} vs {first:,} B)",
        )
    )
    return result
