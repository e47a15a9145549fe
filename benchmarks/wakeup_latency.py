"""Scenarios 3 and 4: how long a push from a thread takes to resume a parked waiter.

A producer thread and a consumer task hand a token back and forth. Each round
the consumer releases a thread lock and parks (``await inbox.wait(...)``, or
the candidate's own way to wait); the producer takes the lock, sleeps in short
steps until the candidate's own records show the consumer parked (for the
inbox, its public ``waiter_count``; for culsans, ``getting``; ...), reads
``perf_counter_ns`` and pushes.
The latency runs from that reading to the consumer's first line after its
wait returns; the push (or put, or ``run_sync_soon``) is inside it. A block is
one fresh trio or asyncio run of *rounds* rounds; blocks rotate across the
candidates, and each reports its own p50 and p99. The table gives the median
of those per-block percentiles, with their interquartile range as the spread.
The cyclic collector is paused during blocks.

The bare primitives are the floor: ``TrioToken.run_sync_soon(event.set)`` for
a ``trio.Event``, ``loop.call_soon_threadsafe(future.set_result, None)`` for
an asyncio future. Scenario 4 measures the same with 10,000 idle waiters
parked on other sessions (other events, other futures), side by side with
none.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any, Literal, Protocol

import culsans
import janus
import trio
import trio.testing

from harn_inbox import Inbox

from .measure import CONTENT, KIND, SESSION, SOURCE, collector_paused, percentile, rotations
from .report import HARN, ScenarioResult, method_of, ratio_verdict

Framework = Literal["trio", "asyncio"]

#: The most harn_inbox's p50 may be, as a multiple of the bare primitive's (issue #13).
LIMITS: dict[Framework, float] = {"trio": 1.3, "asyncio": 1.35}
#: What the queues carry: the same three strings, one item.
ITEM = (KIND, CONTENT, SOURCE)

#: How long the producer sleeps between two looks at whether the consumer has parked. It always
#: sleeps once before the first look, so the consumer is asleep in its loop, not just registered.
POLL_SECONDS = 20e-6

BARE = "bare primitive"
IDLE_SUFFIX = ", 10,000 idle"

METHOD = method_of(__doc__)


class Rig(Protocol):
    """One candidate's way to park a task and to wake it from a thread."""

    async def setup(self) -> None:
        """Inside the run, before the first round."""

    async def wait(self) -> None:
        """Park until woken (the consumer task)."""

    def reset(self) -> None:
        """After a wake, before the next round (the consumer task)."""

    def parked(self) -> bool:
        """Whether the consumer is parked (the producer thread)."""

    def fire(self) -> None:
        """Wake the consumer (the producer thread): the measured call."""

    async def idle(self, index: int) -> None:
        """Park forever as one of the idle waiters of scenario 4."""


class InboxRig:
    """harn_inbox: ``await inbox.wait(session)``, woken by ``push``; trio and asyncio alike."""

    def __init__(self, inbox: Inbox | None = None) -> None:
        #: A new in-memory inbox, or one given (scenario 11's, on a `SqliteStore`).
        self.inbox = Inbox() if inbox is None else inbox
        # Bound once, as the queues' put is below.
        self.push = self.inbox.push

    async def setup(self) -> None:
        pass

    async def wait(self) -> None:
        await self.inbox.wait(SESSION)

    def reset(self) -> None:
        self.inbox.drain(SESSION)

    def parked(self) -> bool:
        # The public count: a wait counts from its first park until it returns. It
        # takes the parking lot's lock for a moment, which the consumer takes only
        # as it parks and leaves: the producer looks after its first sleep, by
        # when the consumer is asleep (the queues' looks take no lock at all).
        return self.inbox.waiter_count(SESSION) > 0

    def fire(self) -> None:
        # As a user writes it: four arguments, not a tuple unpacked (which
        # costs a cold producer about 1.5 us that the queues' put(ITEM) doesn't pay).
        self.push(SESSION, KIND, CONTENT, SOURCE)

    async def idle(self, index: int) -> None:
        await self.inbox.wait(f"idle-{index}")


class TrioEventRig:
    """The bare trio primitive: ``trio.Event``, set through ``TrioToken.run_sync_soon``."""

    async def setup(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.event = trio.Event()

    async def wait(self) -> None:
        await self.event.wait()

    def reset(self) -> None:
        self.event = trio.Event()

    def parked(self) -> bool:
        return self.event.statistics().tasks_waiting > 0

    def fire(self) -> None:
        self.token.run_sync_soon(self.event.set)

    async def idle(self, index: int) -> None:
        await trio.Event().wait()


class FutureRig:
    """The bare asyncio primitive: a future, resolved through ``call_soon_threadsafe``."""

    async def setup(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()

    async def wait(self) -> None:
        await self.future

    def reset(self) -> None:
        self.future = self.loop.create_future()

    def parked(self) -> bool:
        # A task awaiting a future has added its wake-up callback to it.
        return bool(self.future._callbacks)

    def fire(self) -> None:
        self.loop.call_soon_threadsafe(self.future.set_result, None)

    async def idle(self, index: int) -> None:
        await self.loop.create_future()


class CulsansRig:
    """culsans: ``await queue.async_q.get()``, woken by ``queue.sync_q.put``; trio and asyncio."""

    async def setup(self) -> None:
        self.queue: culsans.Queue[object] = culsans.Queue()
        self.get = self.queue.async_q.get
        self.put = self.queue.sync_q.put

    async def wait(self) -> None:
        await self.get()

    def reset(self) -> None:
        pass

    def parked(self) -> bool:
        return self.queue.getting > 0

    def fire(self) -> None:
        self.put(ITEM)

    async def idle(self, index: int) -> None:
        await culsans.Queue[object]().async_q.get()


class JanusRig:
    """janus (asyncio only): ``await queue.async_q.get()``, woken by ``queue.sync_q.put``."""

    async def setup(self) -> None:
        self.queue: janus.Queue[object] = janus.Queue()
        self.get = self.queue.async_q.get
        self.put = self.queue.sync_q.put

    async def wait(self) -> None:
        await self.get()

    def reset(self) -> None:
        pass

    def parked(self) -> bool:
        return self.queue._async_not_empty_waiting > 0

    def fire(self) -> None:
        self.put(ITEM)

    async def idle(self, index: int) -> None:
        await janus.Queue[object]().async_q.get()


class _Handoff:
    """What the consumer and the producer share: the turn, the stamp, a failure."""

    def __init__(self) -> None:
        self.turn = threading.Lock()
        self.turn.acquire()
        self.fired_at = 0
        self.error: BaseException | None = None


def _produce(rig: Rig, rounds: int, handoff: _Handoff) -> None:
    try:
        for _ in range(rounds):
            handoff.turn.acquire()
            time.sleep(POLL_SECONDS)
            while not rig.parked():
                time.sleep(POLL_SECONDS)
            handoff.fired_at = perf_counter_ns()
            rig.fire()
    except BaseException as error:
        handoff.error = error
        rig.fire()  # don't leave the consumer parked forever
        raise


async def _consume(rig: Rig, rounds: int) -> list[int]:
    handoff = _Handoff()
    producer = threading.Thread(
        target=_produce, args=(rig, rounds, handoff), name="bench-producer", daemon=True
    )
    producer.start()
    latencies: list[int] = []
    for _ in range(rounds):
        handoff.turn.release()
        await rig.wait()
        latencies.append(perf_counter_ns() - handoff.fired_at)
        if handoff.error is not None:
            raise RuntimeError("the producer thread failed") from handoff.error
        rig.reset()
    producer.join()
    return latencies


def _check_idle(rig: Rig, idle: int) -> None:
    if isinstance(rig, InboxRig):
        parked = sum(rig.inbox.waiter_count(f"idle-{index}") for index in range(idle))
        if parked != idle:
            raise RuntimeError(f"{parked} idle waiters parked, not {idle}")


async def _trio_block(rig: Rig, rounds: int, idle: int) -> list[int]:
    await rig.setup()
    async with trio.open_nursery() as nursery:
        for index in range(idle):
            nursery.start_soon(rig.idle, index)
        await trio.testing.wait_all_tasks_blocked()
        _check_idle(rig, idle)
        latencies = await _consume(rig, rounds)
        nursery.cancel_scope.cancel()
    return latencies


async def _asyncio_block(rig: Rig, rounds: int, idle: int) -> list[int]:
    await rig.setup()
    idlers = [asyncio.create_task(rig.idle(index)) for index in range(idle)]
    for _ in range(3):
        await asyncio.sleep(0)  # every idler runs up to its park
    _check_idle(rig, idle)
    try:
        return await _consume(rig, rounds)
    finally:
        for task in idlers:
            task.cancel()
        await asyncio.gather(*idlers, return_exceptions=True)


def run_block(framework: Framework, rig: Rig, rounds: int, idle: int = 0) -> list[int]:
    """One fresh run of *framework* with *rounds* wake-ups; their latencies in ns."""
    if framework == "trio":
        return trio.run(_trio_block, rig, rounds, idle)
    return asyncio.run(_asyncio_block(rig, rounds, idle))


Candidate = tuple[Framework, str, Callable[[], Rig], int]


def measure_blocks(
    result: ScenarioResult, candidates: list[Candidate], blocks: int, rounds: int
) -> dict[tuple[Framework, str], dict[str, list[float]]]:
    """Run *blocks* blocks of each candidate, rotated; add cases ``"<framework>, p50"`` and p99."""
    per_block: dict[tuple[Framework, str], dict[str, list[float]]] = {
        (framework, name): {"p50": [], "p99": [], "all": []} for framework, name, _, _ in candidates
    }
    with collector_paused():
        for order in rotations(candidates, blocks):
            for framework, name, make_rig, idle in order:
                latencies = sorted(
                    ns / 1_000 for ns in run_block(framework, make_rig(), rounds, idle)
                )
                stats = per_block[framework, name]
                stats["p50"].append(percentile(latencies, 50))
                stats["p99"].append(percentile(latencies, 99))
                stats["all"] += latencies
    pooled: dict[str, dict[str, Any]] = {}
    for (framework, name), stats in per_block.items():
        for statistic in ("p50", "p99"):
            result.add(f"{framework}, {statistic}", name, "µs", stats[statistic])
        everything = sorted(stats["all"])
        pooled[f"{framework}, {name}"] = {
            "samples": len(everything),
            **{f"p{pct:g}": round(percentile(everything, pct), 2) for pct in (50, 90, 99, 99.9)},
            "max": round(everything[-1], 2),
        }
    result.details["pooled_latency_us"] = pooled
    return per_block


def run_latency(quick: bool) -> ScenarioResult:
    blocks, rounds = (3, 150) if quick else (30, 300)
    result = ScenarioResult(
        "wakeup",
        3,
        "Wake-up latency, producer thread to parked waiter",
        f"{METHOD} {blocks} blocks of {rounds} wake-ups per candidate.",
    )
    candidates: list[Candidate] = [
        ("trio", BARE, TrioEventRig, 0),
        ("trio", HARN, InboxRig, 0),
        ("trio", "culsans", CulsansRig, 0),
        ("asyncio", BARE, FutureRig, 0),
        ("asyncio", HARN, InboxRig, 0),
        ("asyncio", "janus", JanusRig, 0),
        ("asyncio", "culsans", CulsansRig, 0),
    ]
    measure_blocks(result, candidates, blocks, rounds)
    peers_of: tuple[tuple[Framework, tuple[str, ...]], ...] = (
        ("trio", ("culsans",)),
        ("asyncio", ("janus", "culsans")),
    )
    for framework, peers in peers_of:
        case = f"{framework}, p50"
        ours = result.find(case, HARN)
        result.verdicts.append(
            ratio_verdict(
                3,
                f"{framework} p50 ≤ {LIMITS[framework]}x the bare primitive",
                ours,
                result.find(case, BARE),
                "<=",
                LIMITS[framework],
                headline=True,
            )
        )
        result.verdicts += [
            ratio_verdict(
                3,
                f"{framework} p50 lower than {peer}",
                ours,
                result.find(case, peer),
                "<",
                1.0,
                headline=True,
            )
            for peer in peers
        ]
    return result


def run_fan_out(quick: bool) -> ScenarioResult:
    blocks, rounds = (2, 150) if quick else (16, 300)
    idle = 10_000
    result = ScenarioResult(
        "fanout",
        4,
        "Fan-out: wake-up latency with 10,000 idle waiters on other sessions",
        f"As scenario 3, with and without {idle:,} idle waiters parked on other sessions "
        f"(for the bare primitives: on other events or futures) in the same run; {blocks} "
        f"blocks of {rounds} wake-ups per candidate.",
    )
    candidates: list[Candidate] = []
    floors: tuple[tuple[Framework, Callable[[], Rig]], ...] = (
        ("trio", TrioEventRig),
        ("asyncio", FutureRig),
    )
    for framework, bare in floors:
        candidates += [
            (framework, HARN, InboxRig, 0),
            (framework, HARN + IDLE_SUFFIX, InboxRig, idle),
            (framework, BARE, bare, 0),
            (framework, BARE + IDLE_SUFFIX, bare, idle),
        ]
    measure_blocks(result, candidates, blocks, rounds)
    for framework in ("trio", "asyncio"):
        case = f"{framework}, p50"
        result.verdicts.append(
            ratio_verdict(
                4,
                f"{framework} p50 with 10,000 idle ≤ 1.2x with none",
                result.find(case, HARN + IDLE_SUFFIX),
                result.find(case, HARN),
                "<=",
                1.2,
            )
        )
    return result
