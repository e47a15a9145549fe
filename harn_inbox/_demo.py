"""The demo behind ``python -m harn_inbox demo``: a simulated agent runtime around one `Inbox`.

An agent loop (an async task) runs a few turns for one session. Each turn it
drains at turn start, runs a slow compaction (standing for an LLM call),
drains again, and replies. Meanwhile producers push nudges into the session
from elsewhere: tool handlers in worker threads, an MCP progress reporter in
an async task, a repository watcher in a plain thread. In one turn the agent
needs one job's result and takes just that with `Inbox.wait_for`, leaving the
rest queued. The printed timeline ends with a summary that checks every
entry was delivered exactly once.

Theory of operation
-------------------
The timeline is byte-for-byte the same on every run of a seed, on trio and on
asyncio, although the producers are real threads and tasks. Three rules make
it so:

- **Time is virtual.** The inbox runs on a `ManualClock`, and only the
  `_Director` moves it, in steps of `STEP`. Nothing reads the wall clock; the
  real sleep after each step only paces the show (``pace=0`` drops it).
- **Every push happens at a cue.** A producer never decides when to push: it
  blocks (a thread on a ``threading.Event``, a task on a `_Cue`) until its
  release, which the director hands out when the clock passes the time set
  with `_Director.after`. Producers that fall due in the same step are
  released one at a time, in deadline then scheduling order, and the director
  waits for each one's push to land before releasing the next or moving the
  clock on. So sequence numbers, stamps and the order of the printed lines are
  fixed by the seed, never by thread scheduling.
- **Only the loop thread prints.** Producers report their entries to the
  director, which prints them; the agent prints what it drained. All of it
  happens between clock steps, in an order the code above fixes.

Waiting is the one place where two things run at once: while the agent is
parked in ``wait_for``, a second task moves the clock. It stops as soon as the
awaited job's entry has landed (a fact of the director's, not of the waiting
task's progress), so what ``wait_for`` takes and what it leaves are fixed too.

Backends differ only in `_TrioBackend` and `_AsyncioBackend`: how to run,
start tasks, run a function in a worker thread, sleep, and make a `_Cue`.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TextIO, final

import attrs
import trio

from . import Inbox, InboxEntry, ManualClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence

#: The session the agent loop runs.
SESSION = "session-7"
#: Virtual seconds per clock step. Every scheduled time is a multiple of it.
STEP = 0.25
#: Wall seconds per virtual second: a run of about 22 virtual seconds lasts about 3 real ones.
DEFAULT_PACE = 0.12
#: How long (virtual seconds) the agent's wait_for may wait.
SELECT_TIMEOUT = 10.0
#: Real seconds a released producer may take to push before the demo calls it hung.
LANDING_TIMEOUT = 30.0
#: Where the virtual clock starts (2026-01-01 UTC); the timeline prints offsets from it.
START_MS = 1_767_225_600_000

BACKEND_NAMES = ("trio", "asyncio")

_TOOL_RESULTS: dict[str, Callable[[random.Random], str]] = {
    "grep": lambda rng: f"{rng.randint(2, 9)} matches for 'TODO'",
    "run_tests": lambda rng: f"{rng.randint(40, 120)} passed, {rng.randint(0, 2)} failed",
    "lint": lambda rng: f"{rng.randint(0, 7)} warnings",
    "build": lambda rng: f"wheel built ({rng.randint(12, 60)} files)",
    "fetch_docs": lambda rng: f"{rng.randint(3, 12)} pages fetched",
    "benchmark": lambda rng: f"p50 {rng.randint(8, 20)} ms, p99 {rng.randint(30, 90)} ms",
    "deploy_preview": lambda rng: f"preview live at pr-{rng.randint(10, 99)}.example.dev",
}
_EDITED_FILES = ("src/auth.py", "src/api/routes.py", "README.md", "pyproject.toml", "tests/e2e.py")


# -- The scenario: everything the seed decides, drawn up front ------------------------------------


@final
@attrs.frozen
class ToolCall:
    """A tool the agent calls; its handler's job takes *seconds* of virtual time."""

    handle: str
    tool: str
    seconds: float
    result: str


@final
@attrs.frozen
class Turn:
    """One turn of the agent loop, with the durations of its two LLM calls."""

    number: int
    tool_calls: tuple[ToolCall, ...]
    compaction: float
    reply: float
    #: The call whose result the agent waits for with wait_for after compaction, if any.
    awaits: ToolCall | None = None


@final
@attrs.frozen
class Scenario:
    """The turns, and when (virtual seconds from the start) the other producers push what."""

    seed: int
    turns: tuple[Turn, ...]
    progress: tuple[tuple[float, str], ...]
    repo_events: tuple[tuple[float, str, str], ...]


def draw_scenario(seed: int) -> Scenario:
    """The scenario of *seed*: the only place the demo draws random numbers.

    Whatever the seed, entries arrive during every compaction, and while the
    agent waits for the job of turn 3 another entry arrives before that job's.
    """
    rng = random.Random(seed)

    def seconds(low: float, high: float) -> float:
        return rng.randint(round(low / STEP), round(high / STEP)) * STEP

    compactions = [seconds(3.0, 4.5) for _ in range(4)]
    replies = [seconds(0.5, 1.0) for _ in range(4)]
    waited = seconds(1.5, 3.0)  # how long the turn-3 job outlasts that turn's compaction
    starts = [0.0]
    for index in range(3):
        extra = waited if index == 2 else 0.0
        starts.append(starts[-1] + compactions[index] + extra + replies[index])
    end = starts[3] + compactions[3] + replies[3]

    tools = rng.sample(sorted(_TOOL_RESULTS), 4)
    durations = [
        seconds(1.0, compactions[0] - 0.5),  # lands during turn 1's compaction
        starts[1] + seconds(0.5, compactions[1] - 0.5),  # lands during turn 2's compaction
        seconds(0.75, compactions[1] - 0.5),  # called in turn 2, lands during its compaction
        compactions[2] + waited,  # called in turn 3, lands while the agent waits for it
    ]
    calls = [
        ToolCall(f"job-{number}", tool, duration, _TOOL_RESULTS[tool](rng))
        for number, (tool, duration) in enumerate(zip(tools, durations, strict=True), start=1)
    ]
    turns = (
        Turn(1, (calls[0], calls[1]), compactions[0], replies[0]),
        Turn(2, (calls[2],), compactions[1], replies[1]),
        Turn(3, (calls[3],), compactions[2], replies[2], awaits=calls[3]),
        Turn(4, (), compactions[3], replies[3]),
    )

    times = [seconds(0.75, 1.5)]
    while (next_time := times[-1] + seconds(2.25, 3.5)) <= end:
        times.append(next_time)
    progress = tuple(
        (at, f"indexing repository: {round(100 * number / len(times))}%")
        for number, at in enumerate(times, start=1)
    )

    first_file, second_file = rng.sample(_EDITED_FILES, 2)
    wait_starts = starts[2] + compactions[2]
    repo_events = (
        (starts[2] + seconds(0.5, compactions[2] - 0.25), "file_edited", first_file),
        (
            wait_starts + seconds(0.25, waited - 0.25),
            "trigger",
            f"PR #{rng.randint(12, 480)} merged",
        ),
        (starts[3] + seconds(0.25, compactions[3] - 0.25), "file_edited", second_file),
    )
    return Scenario(seed, turns, progress, repo_events)


# -- Backends: the only framework-specific code ---------------------------------------------------


class _Cue(Protocol):
    """A one-shot signal to a task: set from any thread, awaited in the event loop."""

    def set(self) -> None: ...

    async def wait(self, timeout: float | None = None) -> None:
        """Wait until set; raise `TimeoutError` after *timeout* real seconds."""


class _TaskGroup(Protocol):
    def start_soon(self, task: Callable[[], Awaitable[None]]) -> None: ...


class _Backend(Protocol):
    name: str
    to_thread_name: str

    def run(self, main: Callable[[], Coroutine[Any, Any, None]]) -> None: ...

    def cue(self) -> _Cue: ...

    def task_group(self) -> AbstractAsyncContextManager[_TaskGroup]: ...

    async def to_thread(self, function: Callable[[], object]) -> None: ...

    async def sleep(self, seconds: float) -> None: ...

    async def checkpoint(self) -> None: ...


@final
class _TrioCue:
    def __init__(self) -> None:
        self._event = trio.Event()
        self._token = trio.lowlevel.current_trio_token()

    def set(self) -> None:
        self._token.run_sync_soon(self._event.set)  # fine from any thread, this one included

    async def wait(self, timeout: float | None = None) -> None:
        if timeout is None:
            await self._event.wait()
            return
        with trio.move_on_after(timeout):
            await self._event.wait()
            return
        raise TimeoutError


@final
class _TrioTaskGroup:
    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def start_soon(self, task: Callable[[], Awaitable[None]]) -> None:
        self._nursery.start_soon(task)


@final
class _TrioBackend:
    name = "trio"
    to_thread_name = "trio.to_thread.run_sync"

    def run(self, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        trio.run(main)

    def cue(self) -> _Cue:
        return _TrioCue()

    @asynccontextmanager
    async def task_group(self) -> AsyncIterator[_TaskGroup]:
        async with trio.open_nursery() as nursery:
            yield _TrioTaskGroup(nursery)

    async def to_thread(self, function: Callable[[], object]) -> None:
        await trio.to_thread.run_sync(function)

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def checkpoint(self) -> None:
        await trio.lowlevel.checkpoint()


@final
class _AsyncioCue:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def set(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)  # fine from any thread, this one included

    async def wait(self, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            raise TimeoutError from None


@final
class _AsyncioTaskGroup:
    # asyncio.TaskGroup is 3.11+; this is the part of it the demo needs.
    def __init__(self) -> None:
        self.tasks: list[asyncio.Future[None]] = []

    def start_soon(self, task: Callable[[], Awaitable[None]]) -> None:
        self.tasks.append(asyncio.ensure_future(task()))


@final
class _AsyncioBackend:
    name = "asyncio"
    to_thread_name = "asyncio.to_thread"

    def run(self, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        asyncio.run(main())

    def cue(self) -> _Cue:
        return _AsyncioCue()

    @asynccontextmanager
    async def task_group(self) -> AsyncIterator[_TaskGroup]:
        group = _AsyncioTaskGroup()
        try:
            yield group
            # Tasks may start more tasks: wait until none is left running, or one failed.
            while unfinished := [task for task in group.tasks if not task.done()]:
                await asyncio.wait(unfinished, return_when=asyncio.FIRST_EXCEPTION)
                for task in group.tasks:
                    if task.done() and (error := task.exception()) is not None:
                        raise error
        finally:
            for task in group.tasks:
                task.cancel()  # only those still running: on success, none
            await asyncio.gather(*group.tasks, return_exceptions=True)

    async def to_thread(self, function: Callable[[], object]) -> None:
        await asyncio.to_thread(function)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def checkpoint(self) -> None:
        await asyncio.sleep(0)


_BACKENDS: dict[str, Callable[[], _Backend]] = {"trio": _TrioBackend, "asyncio": _AsyncioBackend}


# -- The timeline printer -------------------------------------------------------------------------


@final
class _Timeline:
    """Lines stamped with the virtual time since the start. Called from the loop thread only."""

    _WIDTH = 10  # "t=+23.750s"

    def __init__(self, out: TextIO, clock: ManualClock) -> None:
        self._out = out
        self._clock = clock
        #: The reader went away (``demo | head``): the run goes on silently and at full speed.
        self.broken = False

    def now(self) -> str:
        return _seconds(self._clock.now_ms() - START_MS, sign=True)

    def write(self, text: str = "") -> None:
        if self.broken:
            return
        try:
            print(text, file=self._out, flush=True)
        except BrokenPipeError:
            self.broken = True

    def section(self, title: str) -> None:
        self.write()
        self.write(f"== {title} ".ljust(78, "="))

    def event(self, actor: str, text: str) -> None:
        self.write(f"t={self.now():<{self._WIDTH - 2}}  {actor:<5}  {text}")

    def more(self, text: str) -> None:
        self.write(" " * (self._WIDTH + 9) + text)


def _seconds(milliseconds: int, *, sign: bool = False) -> str:
    whole, fraction = divmod(milliseconds, 1000)
    return f"{'+' if sign else ''}{whole}.{fraction:03d}s"


def _duration(seconds: float) -> str:
    return _seconds(round(seconds * 1000))


def _listing(entries: Sequence[InboxEntry]) -> str:
    return ", ".join(f"#{entry.sequence} {entry.kind}" for entry in entries)


# -- The director: moves the clock and releases producers one at a time ---------------------------


@final
class _Director:
    """Owns virtual time. Producers wait for their cue; the director releases them in order.

    `after` schedules a release on the clock. `pass_time` advances the clock a
    step at a time; after each step it releases every producer now due, one by
    one, and waits until that producer's push has landed (`landed`) before the
    next. Loop thread only, except `landed`, which any producer calls.
    """

    def __init__(
        self, clock: ManualClock, backend: _Backend, timeline: _Timeline, pace: float
    ) -> None:
        self._clock = clock
        self._backend = backend
        self._timeline = timeline
        self._pace = pace
        self._scheduled: dict[int, tuple[str, Callable[[], object]]] = {}
        self._next_key = 0
        self._due: list[int] = []
        self._landing: _Cue | None = None
        self._outcome: InboxEntry | BaseException | None = None
        self.pushed: list[InboxEntry] = []
        self.producers: Counter[str] = Counter()
        #: Set when the run ends early: released producers must then return without pushing.
        self.aborted = False

    @property
    def idle(self) -> bool:
        """Whether no producer is still waiting for its cue."""
        return not self._scheduled

    def after(self, seconds: float, producer: str, release: Callable[[], object]) -> None:
        """Release *producer* by calling *release* once *seconds* of virtual time have passed.

        *producer* says what runs it ("worker thread", "async task", ...), for the timeline.
        """
        key = self._next_key
        self._next_key += 1
        self._scheduled[key] = (producer, release)
        # ManualClock runs due callbacks in deadline order, ties in scheduling order.
        self._clock.call_later(seconds, partial(self._due.append, key))

    async def pass_time(self, seconds: float, until: Callable[[], bool] | None = None) -> None:
        """Move the clock *seconds* forward, a `STEP` at a time, stopping early once *until*()."""
        for _ in range(round(seconds / STEP)):
            if until is not None and until():
                return
            self._clock.advance(STEP)
            while self._due:
                await self._release(self._due.pop(0))
            if self._pace > 0 and not self._timeline.broken:
                await self._backend.sleep(STEP * self._pace)
            else:
                await self._backend.checkpoint()

    def landed(self, outcome: InboxEntry | BaseException) -> None:
        """The producer just released has pushed (or failed to). Any thread."""
        assert self._landing is not None, "a producer pushed without being released"
        self._outcome = outcome
        self._landing.set()

    def abort(self) -> None:
        """Release every producer still waiting, telling it not to push: nothing is left hanging."""
        self.aborted = True
        scheduled, self._scheduled = self._scheduled, {}
        for _, release in scheduled.values():
            release()

    async def _release(self, key: int) -> None:
        producer, release = self._scheduled.pop(key)
        self._landing = landing = self._backend.cue()
        release()
        try:
            await landing.wait(LANDING_TIMEOUT)
        except TimeoutError:
            raise RuntimeError(f"{producer} was released but did not push") from None
        outcome, self._landing, self._outcome = self._outcome, None, None
        if not isinstance(outcome, InboxEntry):
            raise RuntimeError(f"{producer} failed to push") from outcome
        self.pushed.append(outcome)
        self.producers[producer] += 1
        self._timeline.event(
            "push", f"#{outcome.sequence:<3} {outcome.kind:<13} {outcome.content}  ({producer})"
        )


# -- The runtime: the agent loop and its producers ------------------------------------------------


@final
@attrs.frozen
class _Delivery:
    """Entries the agent took, and how ("at turn start", "wait_for", ...)."""

    how: str
    entries: tuple[InboxEntry, ...]


@final
@attrs.define
class _Job:
    """A tool call in flight: its handler runs in a worker thread and pushes its result."""

    call: ToolCall
    finished: threading.Event = attrs.Factory(threading.Event)
    entry: InboxEntry | None = None


@final
class _Runtime:
    def __init__(self, scenario: Scenario, backend: _Backend, out: TextIO, pace: float) -> None:
        self._scenario = scenario
        self._backend = backend
        self._clock = ManualClock(START_MS)
        self._inbox = Inbox(clock=self._clock)
        self._timeline = _Timeline(out, self._clock)
        self._director = _Director(self._clock, backend, self._timeline, pace)
        self._repo_cues = [threading.Event() for _ in scenario.repo_events]
        self._jobs: dict[str, _Job] = {}
        self._group: _TaskGroup | None = None
        self._deliveries: list[_Delivery] = []
        self._left_by_wait_for: tuple[InboxEntry, ...] = ()
        self._left_in_order = True

    def run(self) -> int:
        self._header()
        watcher = threading.Thread(target=self._watch_repository, name="repo-watcher", daemon=True)
        self._backend.run(partial(self._main, watcher))
        watcher.join()
        status = self._summary()
        if self._timeline.broken:
            raise BrokenPipeError("the reader of the timeline went away")
        return status

    async def _main(self, watcher: threading.Thread) -> None:
        # Every cue of the two long-lived producers is on the clock before time moves.
        progress_cues = [self._backend.cue() for _ in self._scenario.progress]
        for cue, (at, _) in zip(progress_cues, self._scenario.progress, strict=True):
            self._director.after(at, "async task", cue.set)
        for event, (at, _, _) in zip(self._repo_cues, self._scenario.repo_events, strict=True):
            self._director.after(at, "plain thread", event.set)
        watcher.start()
        async with self._backend.task_group() as group:
            self._group = group
            group.start_soon(partial(self._report_progress, progress_cues))
            try:
                await self._agent_loop()
            finally:
                # A no-op after a full run, where every cue was given. After an error it
                # frees the threads, which no cancellation can reach, so the run can end.
                self._director.abort()

    # -- The agent ---------------------------------------------------------------------------------

    async def _agent_loop(self) -> None:
        turns = self._scenario.turns
        for turn in turns:
            self._timeline.section(f"turn {turn.number} of {len(turns)}")
            self._drain_at_turn_start()
            for call in turn.tool_calls:
                self._call_tool(call)
            self._timeline.event(
                "agent",
                f"compaction: summarising the context (an LLM call, {_duration(turn.compaction)})",
            )
            await self._director.pass_time(turn.compaction)
            picked = self._take("after compaction", self._inbox.drain(SESSION))
            self._timeline.event("agent", "compaction done; drain() again, in the same turn")
            self._timeline.more(
                f"picked up after compaction: {_listing(picked)}"
                if picked
                else "nothing arrived during compaction"
            )
            if turn.awaits is not None:
                await self._wait_for_result(turn.awaits)
            self._timeline.event("agent", f"replies (an LLM call, {_duration(turn.reply)})")
            await self._director.pass_time(turn.reply)
        self._timeline.section("end of session")
        if not self._director.idle:
            self._timeline.event("agent", "waits for the remaining background work")
            await self._director.pass_time(60.0, until=lambda: self._director.idle)
        self._inbox.close()
        last = self._take("last drain", self._inbox.drain(SESSION))
        self._timeline.event(
            "agent",
            "session over: inbox.close(), then a last drain() -> "
            + (_listing(last) if last else "nothing pending"),
        )

    def _drain_at_turn_start(self) -> None:
        entries = self._take("at turn start", self._inbox.drain(SESSION))
        left = self._left_by_wait_for
        self._left_by_wait_for = ()
        if not entries:
            self._timeline.event("agent", "turn starts: drain() -> nothing pending")
            return
        self._timeline.event("agent", f"turn starts: drain() -> {_listing(entries)}")
        if left:
            self._left_in_order = tuple(entries[: len(left)]) == left
            which = "these are" if len(entries) == len(left) else f"the first {len(left)} are"
            self._timeline.more(
                f"{which} the entries wait_for() left queued, still in order"
                if self._left_in_order
                else "MISMATCH: not the entries wait_for() left queued"
            )

    def _call_tool(self, call: ToolCall) -> None:
        job = _Job(call)
        self._jobs[call.handle] = job
        self._director.after(call.seconds, "worker thread", job.finished.set)
        assert self._group is not None
        self._group.start_soon(partial(self._backend.to_thread, partial(self._run_handler, job)))
        self._timeline.event(
            "agent",
            f"calls {call.tool}: {call.handle} runs in a worker thread ({_duration(call.seconds)})",
        )

    async def _wait_for_result(self, call: ToolCall) -> None:
        handle = call.handle
        job = self._jobs[handle]
        self._timeline.event(
            "agent", f"needs {handle}'s result before replying; the rest can wait:"
        )
        self._timeline.more(f"await inbox.wait_for(session, predicate, timeout={SELECT_TIMEOUT})")
        self._timeline.more(
            f'predicate = lambda e: e.kind == "tool_result" and "{handle}" in e.content'
        )
        started = self._clock.now_ms()
        selected: list[InboxEntry] = []
        finished = False

        async def select() -> None:
            nonlocal finished
            try:
                selected.extend(
                    await self._inbox.wait_for(
                        SESSION,
                        lambda e: e.kind == "tool_result" and handle in e.content,
                        timeout=SELECT_TIMEOUT,
                    )
                )
            finally:
                finished = True

        async def let_time_pass() -> None:
            # Move the clock only once wait_for is parked, so its timeout counts from `started`.
            while not finished and self._inbox.waiter_count(SESSION) == 0:
                await self._backend.checkpoint()
            # Stop as soon as the job's result has landed: from then on time stands still
            # and wait_for takes exactly that entry, whenever its task gets to run.
            await self._director.pass_time(SELECT_TIMEOUT, until=lambda: job.entry is not None)

        async with self._backend.task_group() as group:
            group.start_soon(select)
            group.start_soon(let_time_pass)
        self._take("wait_for", selected)
        waited = _seconds(self._clock.now_ms() - started)
        if selected:
            self._timeline.event("agent", f"wait_for() -> {_listing(selected)} after {waited}")
        else:
            self._timeline.event("agent", f"wait_for() -> nothing within {waited}")
        self._left_by_wait_for = tuple(self._inbox.snapshot(SESSION))
        if self._left_by_wait_for:
            self._timeline.more(
                f"left queued for the next drain, in order: {_listing(self._left_by_wait_for)}"
            )

    def _take(self, how: str, entries: list[InboxEntry]) -> list[InboxEntry]:
        self._deliveries.append(_Delivery(how, tuple(entries)))
        return entries

    # -- The producers -----------------------------------------------------------------------------

    def _run_handler(self, job: _Job) -> None:
        """A tool handler, in a worker thread: its job ends when the virtual clock says so."""
        job.finished.wait()
        if self._director.aborted:
            return
        call = job.call
        self._push(
            "tool_result", f"{call.handle} {call.tool}: {call.result}", f"tool:{call.tool}", job
        )

    async def _report_progress(self, cues: list[_Cue]) -> None:
        """The MCP progress reporter, an async task."""
        for cue, (_, text) in zip(cues, self._scenario.progress, strict=True):
            await cue.wait()
            if self._director.aborted:
                return
            self._push("mcp_progress", text, "mcp:indexer")

    def _watch_repository(self) -> None:
        """The repository watcher, a plain thread: file edits and a merged PR."""
        for event, (_, kind, content) in zip(
            self._repo_cues, self._scenario.repo_events, strict=True
        ):
            event.wait()
            if self._director.aborted:
                return
            self._push(kind, content, "repo-watcher")

    def _push(self, kind: str, content: str, source: str, job: _Job | None = None) -> None:
        """Push from the calling thread or task; report the entry (or the error) to the director."""
        try:
            entry = self._inbox.push(SESSION, kind, content, source)
        except BaseException as error:
            self._director.landed(error)
            raise
        if job is not None:
            job.entry = entry
        self._director.landed(entry)

    # -- Header and summary ------------------------------------------------------------------------

    def _header(self) -> None:
        write = self._timeline.write
        # The only line that names the backend: the rest is the same on both.
        write(
            f"harn_inbox demo -- backend: {self._backend.name}"
            f" (tool handlers via {self._backend.to_thread_name}), seed: {self._scenario.seed}"
        )
        write()
        turns = len(self._scenario.turns)
        write(f"One agent session, {SESSION!r}, and its harn_inbox.Inbox. The agent loop, an")
        write(f"async task, runs {turns} turns: drain() at turn start, a slow compaction (an LLM")
        write("call), drain() again, reply. Meanwhile others push nudges into the inbox from")
        write("their own threads and tasks; each 'push' line is one entry landing, numbered:")
        write("  tool_result            tool handlers, each in a worker thread, as their jobs end")
        write("  mcp_progress           an MCP progress reporter, an async task")
        write("  file_edited, trigger   a repository watcher, a plain threading.Thread")
        write("Time is virtual (a ManualClock): t=+S.SSSs counts seconds from the start, and")
        write("every run of a seed prints this same timeline, however the threads are scheduled.")

    def _summary(self) -> int:
        write = self._timeline.write
        pushed = self._director.pushed
        delivered = [entry for delivery in self._deliveries for entry in delivery.entries]
        total = len(pushed)
        pending = self._inbox.pending_count(SESSION)
        checks = (
            (
                sorted(delivered, key=_by_sequence) == sorted(pushed, key=_by_sequence),
                "every pushed entry delivered exactly once",
            ),
            (
                sorted(entry.sequence for entry in delivered) == list(range(1, total + 1)),
                f"sequences #1..#{total}: no gaps, no duplicates",
            ),
            (
                all(
                    list(delivery.entries) == sorted(delivery.entries, key=_by_sequence)
                    for delivery in self._deliveries
                ),
                "every drain() returned its entries oldest first",
            ),
            (self._left_in_order, "what wait_for() did not take stayed queued, in order"),
            (pending == 0, f"nothing lost: {pending} pending after close"),
        )
        taken = Counter[str]()
        for delivery in self._deliveries:
            taken[delivery.how] += len(delivery.entries)
        kinds = Counter(entry.kind for entry in pushed).most_common()
        producers = self._director.producers

        self._timeline.section("summary")
        write(
            f"pushed      {total} entries: " + ", ".join(f"{count} {kind}" for kind, count in kinds)
        )
        write(
            f"            from {len(self._jobs)} tool handlers in worker threads"
            f" ({producers['worker thread']} entries), an async task"
            f" ({producers['async task']}), a plain thread ({producers['plain thread']})"
        )
        write(
            f"delivered   {len(delivered)} entries: {taken['at turn start']} at turn start,"
            f" {taken['after compaction']} after compaction (same turn),"
        )
        last = taken["last drain"]
        write(f"            {taken['wait_for']} by wait_for(), {last} by the last drain()")
        for number, (passed, claim) in enumerate(checks):
            write(f"{'checks' if number == 0 else '':<12}{'ok  ' if passed else 'FAIL'}  {claim}")
        failed = [claim for passed, claim in checks if not passed]
        write("result      " + ("OK" if not failed else f"FAILED ({len(failed)} checks)"))
        return 1 if failed else 0


def _by_sequence(entry: InboxEntry) -> int:
    return entry.sequence


def run_demo(backend: str, seed: int, out: TextIO, pace: float = DEFAULT_PACE) -> int:
    """Run the demo and print its timeline to *out*; the exit status (0 when every check passed).

    *pace* is wall seconds per virtual second (0: no sleeping at all).

    Raises:
        BrokenPipeError: Writing to *out* failed with it; the run was finished
            silently (and without pacing) first, so no thread is left behind.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, not {backend!r}")
    if pace < 0:
        raise ValueError(f"pace must be a non-negative number of seconds, not {pace!r}")
    runtime = _Runtime(draw_scenario(seed), _BACKENDS[backend](), out, pace)
    return runtime.run()
