"""Scenario 6: many producers, one consumer loop: entries per second delivered.

Eight threads each push *count* entries into a session of their own, all
released at once by a barrier; one event loop runs a consumer task per session
that waits and drains until it has all of its session's entries. The rate is
all entries over the time from the barrier's release to the last consumer
having everything. The same shape for the peers: eight queues, eight threads
calling ``sync_q.put``, a task per queue doing ``await async_q.get()`` and
then ``get_nowait`` until empty. Runs rotate across the candidates.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from time import perf_counter_ns
from typing import Any, Literal

import culsans
import janus
import trio
import trio.testing

from harn_inbox import Inbox

from .measure import CONTENT, KIND, SOURCE, collector_paused, rotations
from .report import HARN, ScenarioResult, method_of, ratio_verdict

Framework = Literal["trio", "asyncio"]

PRODUCERS = 8
ITEM = (KIND, CONTENT, SOURCE)

METHOD = method_of(__doc__)

#: A consumer for one producer's stream: receives *count* entries, then returns.
Consumer = Callable[[int], Coroutine[Any, Any, None]]


class _Clock:
    """When the barrier let the producers go."""

    started = 0

    def stamp(self) -> None:
        self.started = perf_counter_ns()


def _start_producers(
    put: list[Callable[[], Any]], count: int, clock: _Clock
) -> list[threading.Thread]:
    barrier = threading.Barrier(len(put), action=clock.stamp)

    def produce(put_one: Callable[[], Any]) -> None:
        barrier.wait()
        for _ in range(count):
            put_one()

    threads = [
        threading.Thread(target=produce, args=(put_one,), name=f"bench-producer-{i}", daemon=True)
        for i, put_one in enumerate(put)
    ]
    for thread in threads:
        thread.start()
    return threads


def inbox_shape() -> tuple[list[Callable[[], Any]], list[Consumer]]:
    inbox = Inbox()
    sessions = [f"session-{index}" for index in range(PRODUCERS)]

    def pusher(session_id: str) -> Callable[[], Any]:
        push = inbox.push
        return lambda: push(session_id, KIND, CONTENT, SOURCE)

    def consumer(session_id: str) -> Consumer:
        async def consume(count: int) -> None:
            received = 0
            while received < count:
                await inbox.wait(session_id)
                received += len(inbox.drain(session_id))

        return consume

    return [pusher(s) for s in sessions], [consumer(s) for s in sessions]


def _queue_shape(
    make_queue: Callable[[], Any], empty: type[Exception]
) -> tuple[list[Callable[[], Any]], list[Consumer]]:
    """The same shape on janus or culsans (culsans keeps janus' API): one queue per producer."""
    queues = [make_queue() for _ in range(PRODUCERS)]

    def pusher(queue: Any) -> Callable[[], Any]:
        put = queue.sync_q.put
        return lambda: put(ITEM)

    def consumer(queue: Any) -> Consumer:
        async def consume(count: int) -> None:
            get, get_nowait = queue.async_q.get, queue.async_q.get_nowait
            received = 0
            while received < count:
                await get()
                received += 1
                try:
                    while True:
                        get_nowait()
                        received += 1
                except empty:
                    pass

        return consume

    return [pusher(q) for q in queues], [consumer(q) for q in queues]


def _culsans_shape() -> tuple[list[Callable[[], Any]], list[Consumer]]:
    return _queue_shape(culsans.Queue, culsans.AsyncQueueEmpty)


def _janus_shape() -> tuple[list[Callable[[], Any]], list[Consumer]]:
    return _queue_shape(janus.Queue, janus.AsyncQueueEmpty)


Shape = Callable[[], tuple[list[Callable[[], Any]], list[Consumer]]]


async def _trio_run(shape: Shape, count: int) -> float:
    pushers, consumers = shape()
    clock = _Clock()
    async with trio.open_nursery() as nursery:
        for consume in consumers:
            nursery.start_soon(consume, count)
        await trio.testing.wait_all_tasks_blocked()
        threads = _start_producers(pushers, count, clock)
    finished = perf_counter_ns()
    for thread in threads:
        thread.join()
    return PRODUCERS * count / ((finished - clock.started) / 1e9)


async def _asyncio_run(shape: Shape, count: int) -> float:
    pushers, consumers = shape()
    clock = _Clock()
    tasks = [asyncio.create_task(consume(count)) for consume in consumers]
    await asyncio.sleep(0)
    threads = _start_producers(pushers, count, clock)
    await asyncio.gather(*tasks)
    finished = perf_counter_ns()
    for thread in threads:
        thread.join()
    return PRODUCERS * count / ((finished - clock.started) / 1e9)


def run_once(framework: Framework, shape: Shape, count: int) -> float:
    """One run: entries per second delivered."""
    if framework == "trio":
        return trio.run(_trio_run, shape, count)
    return asyncio.run(_asyncio_run(shape, count))


def run(quick: bool) -> ScenarioResult:
    runs, count = (2, 2_000) if quick else (7, 20_000)
    result = ScenarioResult(
        "throughput",
        6,
        "Many-producer throughput: 8 threads, 8 sessions, one consumer loop",
        f"{METHOD} {runs} runs of {PRODUCERS} x {count:,} entries per candidate.",
    )
    candidates: list[tuple[Framework, str, Shape]] = [
        ("trio", HARN, inbox_shape),
        ("trio", "culsans", _culsans_shape),
        ("asyncio", HARN, inbox_shape),
        ("asyncio", "culsans", _culsans_shape),
        ("asyncio", "janus", _janus_shape),
    ]
    rates: dict[tuple[Framework, str], list[float]] = {(f, n): [] for f, n, _ in candidates}
    with collector_paused():
        for order in rotations(candidates, runs):
            for framework, name, shape in order:
                rates[framework, name].append(run_once(framework, shape, count))
    for (framework, name), values in rates.items():
        result.add(framework, name, "entries/s", values)
    for framework in ("trio", "asyncio"):
        result.verdicts.append(
            ratio_verdict(
                6,
                f"{framework}: at least culsans' entries/s (same shape)",
                result.find(framework, HARN),
                result.find(framework, "culsans"),
                ">=",
                1.0,
                headline=True,
            )
        )
    return result
