"""What every scenario shares: rotating interleaved rounds, quiet collectors, summaries.

Timing on a small, shared machine is noisy, so no scenario trusts one number.
Each repeats its measurement many times, interleaving the candidates it
compares (round 1 runs A, B, C; round 2 runs B, C, A; ...) so that a slow
stretch of the machine hurts all of them alike, and reports the median of the
repeats with their interquartile range as the spread.
"""

from __future__ import annotations

import gc
import statistics
from contextlib import contextmanager
from time import perf_counter_ns
from typing import TYPE_CHECKING, TypeVar

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

T = TypeVar("T")

#: What the scenarios push: one session, and the three strings of a typical tool result.
SESSION = "session-1"
KIND = "tool_result"
CONTENT = "the build finished: 0 errors, 2 warnings"
SOURCE = "tool:build"

#: How far a row meant to be flat (O(1) in the size varied) may rise from its smallest case:
#: room for caches (a dict of 100,000 entries does not fit in them), far below what a scan
#: of the size would cost (hundreds of times, at 10,000 and more).
FLAT = 1.5


@attrs.frozen
class Summary:
    """Median and spread of repeated measurements of one quantity."""

    median: float
    p25: float
    p75: float
    minimum: float
    maximum: float
    count: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("no samples to summarize")
        ordered = sorted(samples)
        return cls(
            median=statistics.median(ordered),
            p25=percentile(ordered, 25),
            p75=percentile(ordered, 75),
            minimum=ordered[0],
            maximum=ordered[-1],
            count=len(ordered),
        )


def percentile(ordered: Sequence[float], pct: float) -> float:
    """The *pct* percentile of already sorted *ordered*, interpolating linearly."""
    if not ordered:
        raise ValueError("percentile of no samples")
    position = (len(ordered) - 1) * pct / 100
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def rotations(names: Sequence[T], rounds: int) -> Iterator[list[T]]:
    """The order of each round: the candidates rotated by one more place each time."""
    for index in range(rounds):
        shift = index % len(names)
        yield [*names[shift:], *names[:shift]]


def interleave(
    candidates: Mapping[str, Callable[[], float]], rounds: int
) -> dict[str, list[float]]:
    """Run each candidate's round *rounds* times, in rotating order; collect what each returns."""
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for order in rotations(list(candidates), rounds):
        for name in order:
            samples[name].append(candidates[name]())
    return samples


@contextmanager
def collector_paused() -> Iterator[None]:
    """Collect garbage now, then keep the cyclic collector out of what follows (as timeit does)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()


def time_pushes(
    push: Callable[[str, str, str, str], object], ops: int, session_id: str = SESSION
) -> float:
    """ns per call of *ops* calls ``push(session_id, KIND, CONTENT, SOURCE)`` in a plain loop."""
    kind, content, source = KIND, CONTENT, SOURCE
    started = perf_counter_ns()
    for _ in range(ops):
        push(session_id, kind, content, source)
    return (perf_counter_ns() - started) / ops
