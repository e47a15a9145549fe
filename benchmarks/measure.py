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
from typing import TYPE_CHECKING, TypeVar

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

T = TypeVar("T")


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
