"""Scenario 8: what a push pays for the waits on its session, and ``requeue_front`` at scale.

**Parked selective waits.** 1, 100 or 10,000 trio tasks parked in
``wait_for`` with a predicate that matches nothing, on the session pushed to,
in a trio run in a thread of its own; the main thread times one ``push``
(which must wake them all: one thread-safe call for the run, and each wait
marked woken), then waits untimed until every task has judged the new entry
and parked again (``trio.testing.wait_all_tasks_blocked``). The three sizes
rotate. **Judged entries.** One ``wait_for`` parked on a session with 1, 100
or 10,000 entries pending, all judged (one more after each push): a task of
the same trio run times a push and the wait's look that follows, until it is
parked again. **Woken, not yet run.** 10,000 trio tasks parked in ``wait`` on
one session; a push wakes them, and before they run (the pushing task does
not yield) *ops* pushes into that session are timed, and *ops* into a session
nobody waits on, in alternating order; then both are drained and the tasks
park again.
**requeue_front** of an entry into a session holding 100 or 100,000 entries,
one call timed at a time, the entry revoked (untimed) before the next.
"""

from __future__ import annotations

import threading
from time import perf_counter_ns

import trio
import trio.testing

from harn_inbox import Inbox, InboxEntry

from .measure import CONTENT, FLAT, KIND, SESSION, SOURCE, collector_paused, rotations, time_pushes
from .report import HARN, ScenarioResult, Verdict, method_of, ratio_verdict

METHOD = method_of(__doc__)

WAITS = (1, 100, 10_000)
JUDGED = (1, 100, 10_000)
CROWD = 10_000
QUIET = "nobody waits here"
CROWDED_CASE = f"push into a session with {CROWD:,} woken, not yet run waiters"
QUIET_CANDIDATE = "the same push into a session nobody waits on"
REQUEUE_PENDING = (100, 100_000)
REQUEUE_LIMIT_US = 50.0


def never(entry: InboxEntry) -> bool:
    """A selective wait's predicate that matches nothing."""
    return False


class ParkedWaits:
    """A trio run in a thread of its own, with *count* tasks parked in ``wait_for`` on SESSION."""

    def __init__(self, count: int) -> None:
        self.inbox = Inbox()
        self._count = count
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=self._run, name=f"bench-{count}-waits", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError("the trio run of the parked waits failed") from self._error
        if self.inbox.waiter_count(SESSION) != count:
            raise RuntimeError(f"{self.inbox.waiter_count(SESSION)} waits parked, not {count}")

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as error:
            self._error = error
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            for _ in range(self._count):
                nursery.start_soon(self.inbox.wait_for, SESSION, never)
            await trio.testing.wait_all_tasks_blocked()
            self._ready.set()
            await trio.sleep_forever()

    def settle(self) -> None:
        """Return once every wait has looked at what was pushed and parked again."""
        trio.from_thread.run(trio.testing.wait_all_tasks_blocked, trio_token=self._token)

    def close(self) -> None:
        assert self._scope is not None
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join()


def _waking(count: int) -> str:
    return f"push waking the parked selective waits: {count:,}"


def _judged(count: int) -> str:
    return f"push and the look of a parked selective wait that judged: {count:,}"


def _parked_waits(result: ScenarioResult, repeats: int) -> None:
    hosts = {count: ParkedWaits(count) for count in WAITS}
    samples: dict[int, list[float]] = {count: [] for count in WAITS}
    try:
        for order in rotations(list(WAITS), repeats):
            for count in order:
                host = hosts[count]
                host.settle()
                started = perf_counter_ns()
                host.inbox.push(SESSION, KIND, CONTENT, SOURCE)
                samples[count].append(perf_counter_ns() - started)
    finally:
        for host in hosts.values():
            host.close()
    for count, values in samples.items():
        result.add(_waking(count), HARN, "ns", values)


async def _judged_entries(result: ScenarioResult, repeats: int) -> None:
    inboxes = {count: Inbox() for count in JUDGED}
    samples: dict[int, list[float]] = {count: [] for count in JUDGED}
    async with trio.open_nursery() as nursery:
        for count, inbox in inboxes.items():
            for _ in range(count):
                inbox.push(SESSION, KIND, CONTENT, SOURCE)
            nursery.start_soon(inbox.wait_for, SESSION, never)
        await trio.testing.wait_all_tasks_blocked()
        for order in rotations(list(JUDGED), repeats):
            for count in order:
                started = perf_counter_ns()
                inboxes[count].push(SESSION, KIND, CONTENT, SOURCE)
                await trio.testing.wait_all_tasks_blocked()
                samples[count].append(perf_counter_ns() - started)
        nursery.cancel_scope.cancel()
    for count, values in samples.items():
        result.add(_judged(count), HARN, "ns", values)


async def _woken_not_run(result: ScenarioResult, rounds: int, ops: int) -> None:
    inbox = Inbox()
    crowded, quiet = "crowded", QUIET
    push = inbox.push
    samples: dict[str, list[float]] = {crowded: [], quiet: []}
    async with trio.open_nursery() as nursery:
        for _ in range(CROWD):
            nursery.start_soon(inbox.wait, crowded)
        await trio.testing.wait_all_tasks_blocked()
        if inbox.waiter_count(crowded) != CROWD:
            raise RuntimeError(f"{inbox.waiter_count(crowded)} waits parked, not {CROWD}")
        for order in rotations([crowded, quiet], rounds):
            push(crowded, KIND, CONTENT, SOURCE)  # wakes them all; they run at our next await
            for session_id in order:
                samples[session_id].append(time_pushes(push, ops, session_id))
            inbox.drain(crowded)
            inbox.drain(quiet)
            await trio.testing.wait_all_tasks_blocked()  # they look, find nothing, park again
        nursery.cancel_scope.cancel()
    result.add(CROWDED_CASE, HARN, "ns", samples[crowded])
    result.add(CROWDED_CASE, QUIET_CANDIDATE, "ns", samples[quiet])


def _requeue_front(result: ScenarioResult, repeats: int) -> None:
    for pending in REQUEUE_PENDING:
        inbox = Inbox()
        inbox.push(SESSION, KIND, CONTENT, SOURCE)
        [entry] = inbox.drain(SESSION)
        for _ in range(pending):
            inbox.push(SESSION, KIND, CONTENT, SOURCE)
        requeue_front, revoke = inbox.requeue_front, inbox.revoke
        samples = []
        for _ in range(repeats):
            started = perf_counter_ns()
            requeue_front(entry)
            samples.append((perf_counter_ns() - started) / 1_000)
            if revoke(SESSION, entry.sequence) is not entry:
                raise RuntimeError("the requeued entry was not where requeue_front put it")
        result.add(f"requeue_front, {pending:,} pending", HARN, "µs", samples)


#: Sessions drained and never cleared, beside the ten with entries pending.
DRAINED = 100_000
SESSIONS_CASE = "sessions(), 10 with entries pending"
BESIDE_DRAINED = f"beside {DRAINED:,} drained"
BESIDE_NONE = "beside none"


def _sessions(result: ScenarioResult, repeats: int) -> None:
    # sessions() must cost what the sessions with entries number, not every session seen.
    for label, drained in ((BESIDE_NONE, 0), (BESIDE_DRAINED, DRAINED)):
        inbox = Inbox()
        for index in range(drained):
            inbox.push(f"drained-{index}", KIND, CONTENT, SOURCE)
            inbox.drain(f"drained-{index}")
        for index in range(10):
            inbox.push(f"pending-{index}", KIND, CONTENT, SOURCE)
        samples = []
        for _ in range(repeats):
            started = perf_counter_ns()
            inbox.sessions()
            samples.append(perf_counter_ns() - started)
        result.add(SESSIONS_CASE, HARN if drained else label, "ns", samples)


def run(quick: bool) -> ScenarioResult:
    wait_repeats, judged_repeats = (3, 20) if quick else (20, 200)
    rounds, ops = (3, 500) if quick else (20, 1_000)
    requeues = 200 if quick else 2_000
    result = ScenarioResult(
        "scale",
        8,
        "What a push pays for the waits on its session; requeue_front and sessions() at scale",
        f"{METHOD} {wait_repeats} pushes per size of parked waits, {judged_repeats} per count "
        f"of judged entries, {rounds} rounds of {ops:,} pushes beside woken waiters, "
        f"{requeues:,} requeues per size, {requeues:,} calls of sessions() per size.",
    )
    with collector_paused():
        _parked_waits(result, wait_repeats)
        trio.run(_judged_entries, result, judged_repeats)
        trio.run(_woken_not_run, result, rounds, ops)
        _requeue_front(result, requeues)
        _sessions(result, requeues)

    per_wait = {
        count: result.find(_waking(count), HARN).summary.median / count for count in WAITS[1:]
    }
    growth = per_wait[10_000] / per_wait[100]
    result.verdicts.append(
        Verdict(
            8,
            f"a push pays O(1) per parked selective wait: ns per wait at 10,000 ≤ {FLAT}x at 100",
            growth,
            "<=",
            FLAT,
            f"{growth:.3f}x ({per_wait[10_000]:,.0f} vs {per_wait[100]:,.0f} ns per wait)",
        )
    )

    result.verdicts.append(
        ratio_verdict(
            8,
            f"a parked selective wait rescans nothing: 10,000 judged ≤ {FLAT}x 1 judged",
            result.find(_judged(10_000), HARN),
            result.find(_judged(1), HARN),
            "<=",
            FLAT,
        )
    )
    result.verdicts.append(
        ratio_verdict(
            8,
            f"a push skips woken waiters: beside {CROWD:,} ≤ {FLAT}x beside none",
            result.find(CROWDED_CASE, HARN),
            result.find(CROWDED_CASE, QUIET_CANDIDATE),
            "<=",
            FLAT,
        )
    )
    result.verdicts.append(
        ratio_verdict(
            8,
            f"sessions() visits only sessions with entries: beside {DRAINED:,} drained "
            f"≤ {FLAT}x beside none",
            result.find(SESSIONS_CASE, HARN),
            result.find(SESSIONS_CASE, BESIDE_NONE),
            "<=",
            FLAT,
        )
    )
    requeue = result.find(f"requeue_front, {REQUEUE_PENDING[-1]:,} pending", HARN).summary.median
    result.verdicts.append(
        Verdict(
            8,
            f"requeue_front at 100,000 pending < {REQUEUE_LIMIT_US:.0f} µs",
            requeue / REQUEUE_LIMIT_US,
            "<",
            1.0,
            f"{requeue:,.1f} µs",
        )
    )
    return result
