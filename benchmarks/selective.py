"""Scenario 7: ``drain_where`` and ``wait_for`` under a steady producer.

A session holds 20 entries, the last of them the one asked for, and the
predicate costs about a millisecond (it sleeps, releasing the GIL, as one that
parses or looks something up would). Each call is timed from its start to its
return, once with a producer thread that pushes an entry the predicate
refuses every 0.5 ms, from before the call until after it returns, and once
without: ``drain_where`` from the main thread, ``wait_for`` in a trio run and
in an asyncio run (timed inside the run). Every repeat starts from a fresh
inbox; the repeats rotate across the candidates. The producer gives up after
ten seconds, so a call that chases it (the defect of issue #13: it returned
only once the producer stopped) still ends, and shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from time import perf_counter_ns
from typing import TYPE_CHECKING

import trio

from harn_inbox import Inbox, InboxEntry

from .measure import KIND, SESSION, SOURCE, collector_paused, interleave
from .report import HARN, ScenarioResult, method_of, ratio_verdict

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

METHOD = method_of(__doc__)

PENDING = 20
PREDICATE_SECONDS = 0.001
PRODUCER_PERIOD = 0.0005
PRODUCER_GIVES_UP_AFTER = 10.0
#: What the call asks for: the one entry with this content.
HANDLE = "call-7: the build finished"

STEADY = f"{HARN}, steady producer"


def wanted(entry: InboxEntry) -> bool:
    """The predicate: about a millisecond of work that releases the GIL, then the test."""
    time.sleep(PREDICATE_SECONDS)
    return entry.content == HANDLE


class SteadyProducer:
    """A thread pushing an entry nobody asks for every `PRODUCER_PERIOD`, while in ``with``."""

    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-steady", daemon=True)

    def __enter__(self) -> None:
        self._thread.start()
        self._started.wait()  # the call starts with the producer already going

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        push = self._inbox.push
        gives_up = time.monotonic() + PRODUCER_GIVES_UP_AFTER
        while not self._stop.is_set() and time.monotonic() < gives_up:
            push(SESSION, "mcp_progress", "step done", SOURCE)
            self._started.set()
            time.sleep(PRODUCER_PERIOD)
        self._started.set()


def _filled() -> Inbox:
    inbox = Inbox()
    for _ in range(PENDING - 1):
        inbox.push(SESSION, "mcp_progress", "step done", SOURCE)
    inbox.push(SESSION, KIND, HANDLE, SOURCE)
    return inbox


def _taken_one(taken: list[InboxEntry]) -> None:
    if [entry.content for entry in taken] != [HANDLE]:
        raise RuntimeError(f"the call took {len(taken)} entries, not the one asked for")


def _drain_where(inbox: Inbox) -> float:
    started = perf_counter_ns()
    taken = inbox.drain_where(SESSION, wanted)
    elapsed = perf_counter_ns() - started
    _taken_one(taken)
    return elapsed / 1e6


async def _wait_for(inbox: Inbox) -> float:
    started = perf_counter_ns()
    taken = await inbox.wait_for(SESSION, wanted)
    elapsed = perf_counter_ns() - started
    _taken_one(taken)
    return elapsed / 1e6


def _wait_for_trio(inbox: Inbox) -> float:
    return trio.run(_wait_for, inbox)


def _wait_for_asyncio(inbox: Inbox) -> float:
    return asyncio.run(_wait_for(inbox))


CALLS: dict[str, Callable[[Inbox], float]] = {
    "drain_where": _drain_where,
    "wait_for, trio": _wait_for_trio,
    "wait_for, asyncio": _wait_for_asyncio,
}


def _repeat(call: Callable[[Inbox], float], steady: bool) -> Callable[[], float]:
    def one_repeat() -> float:
        inbox = _filled()
        with SteadyProducer(inbox) if steady else contextlib.nullcontext():
            return call(inbox)

    return one_repeat


def run(quick: bool) -> ScenarioResult:
    repeats = 3 if quick else 20
    result = ScenarioResult(
        "selective",
        7,
        "drain_where and wait_for under a steady producer",
        f"{METHOD} {repeats} repeats per candidate; ms from the call to its return.",
    )
    with collector_paused():
        samples = interleave(
            {
                f"{way}|{name}": _repeat(call, name == STEADY)
                for way, call in CALLS.items()
                for name in (HARN, STEADY)
            },
            repeats,
        )
    for key, values in samples.items():
        way, name = key.split("|")
        result.add(way, name, "ms", values)
    result.verdicts += [
        ratio_verdict(
            7,
            f"{way} under a steady producer ≤ 2x without one",
            result.find(way, STEADY),
            result.find(way, HARN),
            "<=",
            2.0,
        )
        for way in CALLS
    ]
    return result
