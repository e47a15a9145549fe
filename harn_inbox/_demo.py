"""The demo behind ``python -m harn_inbox demo``: a simulated agent runtime around one `Inbox`.

An agent loop (an async task) runs three Harn-style turns of one session while producers
in threads and tasks push into it; a summary checks that no entry was lost or delivered
twice. Each seed's timeline is the same on every run, on trio and on asyncio:

1. Time is virtual: a `ManualClock` that only `_Demo._pass_time` moves.
2. Every push happens on cue: the loop cues the scenario's pushes one at a time as they
   fall due, and waits for each producer's report, through a second `Inbox` (the stage,
   which waits alike in threads, trio and asyncio). Only the loop prints.
3. While the agent is parked in ``wait_for``, a second task moves the clock, and stops
   once the awaited result has landed: what ``wait_for`` takes is fixed.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

import trio

from . import Delivery, Inbox, InboxEntry, ManualClock

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    Main = Callable[[], Coroutine[Any, Any, None]]

SESSION = "session-7"
STEP = 0.25  # virtual seconds per clock step; every time in the scenario is a multiple of it
DEFAULT_PACE = 0.16  # wall seconds per virtual second: a run (about 16 virtual seconds) takes 3 s
REPORTER, WATCHER = "MCP reporter task", "watcher thread"
_TOOLS = {"grep": "{} matches for 'TODO'", "run_tests": "{} passed, 1 failed",
          "build": "wheel built ({} files)", "fetch_docs": "{} pages fetched"}  # fmt: skip
_INTRO = """
One agent session and its harn_inbox.Inbox, on virtual time. At turn start and after compaction
the agent loop (an async task) drains feedback: all but tool results (each waits for its wait_for)
and after_next_tool_call entries (each waits for a tool dispatch). Producers push from their own
threads and tasks: tool handlers in worker threads (with dedupe_key=handle), an MCP progress
reporter task (with a coalesce_key: latest wins) and a repository watcher thread."""


def is_feedback(entry: InboxEntry) -> bool:
    # Not tool results: a later wait_for may wait for one. Nor what waits for a tool dispatch.
    return entry.kind != "tool_result" and entry.delivery is not Delivery.AFTER_NEXT_TOOL_CALL


def is_result_of(handle: str) -> Callable[[InboxEntry], bool]:
    """The tool result with *handle* in its payload: a field, never a substring of the text."""
    return lambda e: (
        e.kind == "tool_result" and isinstance(e.payload, Mapping) and e.payload["handle"] == handle
    )


class _Backend(NamedTuple):  # all the demo needs of an async framework
    run: Callable[[Main], None]
    together: Callable[[Main, Main], Coroutine[Any, Any, None]]  # until both end (or one raises)
    sleep: Callable[[float], Awaitable[None]]


async def _trio_together(first: Main, second: Main) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        nursery.start_soon(second)


async def _asyncio_together(first: Main, second: Main) -> None:
    await asyncio.gather(first(), second())


BACKENDS = {
    "trio": _Backend(trio.run, _trio_together, trio.sleep),
    "asyncio": _Backend(lambda main: asyncio.run(main()), _asyncio_together, asyncio.sleep),
}


class _Push(NamedTuple):  # one push of the scenario: when (virtual seconds), who and what
    at: float
    producer: str
    kind: str
    content: str
    source: str
    options: Mapping[str, Any]  # push()'s keyword arguments


class _Demo:
    def __init__(self, backend: str, seed: int, out: TextIO, pace: float) -> None:
        self.backend, self.out, self.pace, self.broken = BACKENDS[backend], out, pace, False
        self.clock = ManualClock()
        self.inbox = Inbox(clock=self.clock)
        self.stage = Inbox()  # cues to the producers, and their reports back
        self.workers = ThreadPoolExecutor(thread_name_prefix="tool-handler")
        self.reports: list[InboxEntry | Exception] = []
        self.stored: dict[int, InboxEntry] = {}  # by sequence
        self.taken: list[list[InboxEntry]] = []
        self._write(f"harn_inbox demo -- backend: {backend}, seed: {seed}\n{_INTRO}")
        self._draw(random.Random(seed))

    def _draw(self, rng: random.Random) -> None:
        """The seed's scenario: its turns, and every push in the order they fall due."""

        def seconds(low: float, high: float) -> float:
            return rng.randint(round(low / STEP), round(high / STEP)) * STEP

        compaction, reply = [seconds(3, 4.5) for _ in "123"], [seconds(0.5, 1) for _ in "123"]
        waited = seconds(1.5, 3)  # how long turn 2 waits for job-2 after its compaction
        turn_2 = compaction[0] + reply[0]
        job_2 = turn_2 + compaction[1] + waited
        end = job_2 + reply[1] + compaction[2] + reply[2]
        # A turn: the tools it calls, its compaction, the results it then waits for, its reply.
        self.turns = ((("job-1", "job-2"), compaction[0], ("job-1",), reply[0]),
                      (("job-3",), compaction[1], ("job-2", "job-3"), reply[1]),
                      ((), compaction[2], (), reply[2]))  # fmt: skip
        self.tools = dict(zip(("job-1", "job-2", "job-3"), rng.sample([*_TOOLS], 3), strict=True))
        progress = [0.5 + 1.5 * n + seconds(0, 0.5) for n in range(round(end // 1.5))]
        edited = rng.choice(("src/auth.py", "src/api/routes.py", "README.md", "tests/e2e.py"))
        first_edit = seconds(0.5, 1.5)
        pushes = [
            *(_Push(at, REPORTER, "mcp_progress", f"indexing: {100 * n // len(progress)}%",
                    "mcp:indexer", {"coalesce_key": "indexing"})
              for n, at in enumerate(progress, start=1)),
            _Push(first_edit, WATCHER, "file_edited", f"{edited} edited", "repo-watcher", {}),
            _Push(first_edit + seconds(0.5, 1.25), WATCHER, "reminder",
                  f"{edited} changed since last read", "repo-watcher",
                  {"delivery": Delivery.AFTER_NEXT_TOOL_CALL}),
            _Push(turn_2 + compaction[1] + seconds(0.25, waited - 0.25), WATCHER, "trigger",
                  f"PR #{rng.randint(12, 480)} merged", "repo-watcher", {}),
        ]  # fmt: skip
        for handle, *times in (
            ("job-1", seconds(1, compaction[0] - 0.5)),  # lands during turn 1's compaction
            ("job-2", job_2, job_2 + seconds(0.25, 0.5)),  # ends turn 2's wait; no ack: a retry
            ("job-3", turn_2 + compaction[1] + seconds(0.25, waited - 0.25)),  # during that wait
        ):
            tool, producer = self.tools[handle], f"{handle} handler, worker thread"
            content = f"{tool}: {_TOOLS[tool].format(rng.randint(2, 60))}"
            options = {"payload": {"handle": handle}, "dedupe_key": handle}
            pushes += [_Push(at, producer, "tool_result", content, tool, options) for at in times]
        self.pushes = tuple(sorted(pushes, key=lambda push: push.at))  # ties keep list order
        self.due = list(self.pushes)  # those not cued yet

    def _write(self, text: str) -> None:
        if not self.broken:
            try:
                print(text, file=self.out, flush=True)
            except BrokenPipeError:  # the reader went away: finish the run silently, unpaced
                self.broken = True

    def _event(self, actor: str, text: str) -> None:
        self._write(f"{f't=+{self.clock.now_ms() / 1000:.3f}s':<11} {actor:<6} {text}")

    def _take(self, text: str, entries: list[InboxEntry]) -> None:
        """Say what the agent took, and what it left queued."""
        self.taken.append(entries)
        listed = ", ".join(f"#{entry.sequence} {entry.kind}" for entry in entries)
        self._event("agent", f"{text} -> {listed or 'nothing'}")
        if pending := self.inbox.snapshot(SESSION):
            self._more("still queued: " + ", ".join(f"#{e.sequence} {e.kind}" for e in pending))

    def _more(self, text: str) -> None:
        self._write(f"{'':<18} {text}")

    async def _pass_time(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        """Move the clock *seconds* on, a `STEP` at a time, cueing the pushes due at each."""
        for _ in range(round(seconds / STEP)):
            if until():
                return
            self.clock.advance(STEP)
            while self.due and self.due[0].at * 1000 <= self.clock.now_ms():
                await self._cue(self.due.pop(0))
            await self.backend.sleep(0 if self.broken else STEP * self.pace)

    async def _cue(self, push: _Push) -> None:  # and wait for its producer's report
        coalesced = self.inbox.statistics(SESSION).coalesced
        self.stage.push(push.producer, "cue", "", "demo")
        if not await self.stage.wait("landed", timeout=30.0):  # real seconds
            raise RuntimeError(f"{push.producer} was cued but did not report")
        self.stage.drain("landed")
        if isinstance(entry := self.reports.pop(), Exception):
            raise RuntimeError(f"{push.producer} failed to push") from entry
        note = "" if entry.delivery is None else f"; delivery={entry.delivery.value}"
        if self.inbox.statistics(SESSION).coalesced > coalesced:  # the pending one of its kind
            note += f"; replaces #{max(s for s, e in self.stored.items() if e.kind == entry.kind)}"
        retry = entry.sequence in self.stored  # its dedupe_key was pushed before
        self.stored[entry.sequence] = entry
        text = f"#{entry.sequence:<3} {entry.kind:<13} {entry.content}  ({push.producer}{note})"
        self._event("retry" if retry else "push", text)
        if retry:
            self._more("same dedupe_key: push() returned the first entry and stored nothing")

    async def _agent(self) -> None:
        """The agent loop, an async task."""
        for number, (calls, compaction, awaits, reply) in enumerate(self.turns, start=1):
            self._write(f"\n{f'== turn {number} of {len(self.turns)} ':=<78}")
            feedback = self.inbox.drain_where(SESSION, is_feedback)
            self._take("turn starts: drain_where(feedback)", feedback)
            for handle in calls:
                self.workers.submit(self._produce, f"{handle} handler, worker thread")
                self._event("agent", f"calls {self.tools[handle]} ({handle}) in a worker thread")
                injected = self.inbox.drain_where(
                    SESSION, lambda e: e.delivery is Delivery.AFTER_NEXT_TOOL_CALL
                )
                self._take("tool dispatched: drain_where(after next tool call)", injected)
            self._event("agent", f"compaction: an LLM call summarises the context, {compaction}s")
            await self._pass_time(compaction)
            feedback = self.inbox.drain_where(SESSION, is_feedback)
            self._take("compaction done: drain_where(feedback) again", feedback)
            for handle in awaits:
                await self._wait_for_result(handle)
            self._event("agent", f"replies: an LLM call, {reply}s")
            await self._pass_time(reply)
        self._write(f"\n{'== end of session ':=<78}")
        self.inbox.close()
        self._take("session over: inbox.close(), then a last drain()", self.inbox.drain(SESSION))

    async def _wait_for_result(self, handle: str) -> None:
        self._event("agent", f"needs {handle}'s result: wait_for(session, predicate, limit=1)")
        self._more(f'predicate: e.kind == "tool_result" and e.payload["handle"] == "{handle}"')
        started, taken, landed = self.clock.now_ms(), list[InboxEntry](), is_result_of(handle)

        async def select() -> None:
            taken.extend(await self.inbox.wait_for(SESSION, landed, timeout=10.0, limit=1))

        async def let_time_pass() -> None:
            # Move the clock once wait_for has parked, so its timeout counts from `started`.
            while not taken and self.inbox.waiter_count(SESSION) == 0:
                await self.backend.sleep(0)
            await self._pass_time(10.0, until=lambda: any(map(landed, self.stored.values())))

        await self.backend.together(select, let_time_pass)
        self._take(f"wait_for() returned after {(self.clock.now_ms() - started) / 1000}s", taken)

    def _produce(self, producer: str) -> None:
        """A tool handler or the watcher, in its own thread: its pushes, each on cue."""
        for push in [push for push in self.pushes if push.producer == producer]:
            if not (self.stage.wait_sync(producer) and self.stage.drain(producer)):
                return  # the stage closed: the run ended early
            self._push(push)

    async def _report_progress(self) -> None:
        """The MCP progress reporter, an async task: its pushes, each on cue."""
        for push in [push for push in self.pushes if push.producer == REPORTER]:
            if not (await self.stage.wait(REPORTER) and self.stage.drain(REPORTER)):
                return
            self._push(push)

    def _push(self, push: _Push) -> None:
        """Push from the calling thread or task, then report the entry on the stage."""
        try:
            entry = self.inbox.push(SESSION, push.kind, push.content, push.source, **push.options)
        except Exception as error:  # reported too: the loop raises it
            self.reports.append(error)
        else:
            self.reports.append(entry)
        self.stage.push("landed", "landed", "", push.source)

    def run(self) -> int:
        """Run; raise `BrokenPipeError` at the end if *out* did (the rest ran silently, unpaced)."""
        watcher = threading.Thread(target=self._produce, args=(WATCHER,))
        watcher.start()
        try:
            self.backend.run(lambda: self.backend.together(self._agent, self._report_progress))
        finally:
            self.stage.close()  # after an error: frees the producers still waiting for a cue
            self.workers.shutdown()
            watcher.join()
        status = self._summary()
        if self.broken:
            raise BrokenPipeError("the reader of the timeline went away")
        return status

    def _summary(self) -> int:
        statistics = self.inbox.statistics(SESSION)
        delivered = sorted(entry.sequence for entries in self.taken for entry in entries)
        stored, last = sorted(self.stored), statistics.last_sequence
        replaced = sorted(set(stored) - set(delivered))
        checks = {
            "every entry stored was delivered once, or replaced while pending (coalesce_key)":
                sorted(delivered + replaced) == stored and len(replaced) == statistics.coalesced,
            f"sequences #1..#{last}: no gaps, no duplicates": stored == [*range(1, last + 1)],
            "the retried push stored nothing": statistics.duplicates == 1,
            "nothing lost: every push cued, 0 pending after close":
                not self.due and statistics.pending == 0,
        }  # fmt: skip
        self._write(f"\n{'== summary ':=<78}")
        self._write(f"{last} entries stored, {len(delivered)} delivered, {len(replaced)} replaced")
        for claim, passed in checks.items():
            self._write(f"{'ok' if passed else 'FAIL':<6} {claim}")
        failed = sum(not passed for passed in checks.values())
        self._write(f"result {f'FAILED ({failed} checks)' if failed else 'OK'}")
        return 1 if failed else 0


def run_demo(backend: str, seed: int, out: TextIO, pace: float = DEFAULT_PACE) -> int:
    """Print the timeline to *out*: 0 if every check passed, else 1 (see `_Demo.run`)."""
    return _Demo(backend, seed, out, pace).run()
