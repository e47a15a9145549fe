"""The idioms the suite repeats, one helper each: a nudge, threads, waiting by condition.

Every helper decides by a condition, never by how much time passed: a clock
only bounds how long a broken inbox (a lost wake-up, a deadlock) can hang the
suite before the test fails saying so. The async idioms (start a waiter, see
it park, push, see it return) are methods of ``conftest.Backend``, which runs
one test body on trio and on asyncio.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping

    from conftest import Backend

    from harn_inbox import Batches, Inbox, InboxEntry
    from harn_inbox.stores import RedisStore

#: How long a test may wait for something that should happen at once, before it fails.
HANG_GUARD_SECONDS = 60.0

#: Between two looks of `spin_until`: leaves the GIL and the CPU to the thread awaited.
_PACE_SECONDS = 1e-4


# -- Entries ---------------------------------------------------------------------------------------


def nudge(inbox: Inbox, session_id: str, content: str = "c", source: str = "test") -> InboxEntry:
    """Push a ``tool_result`` nudge: the entry most tests need."""
    return inbox.push(session_id, "tool_result", content, source)


def push_many(inbox: Inbox, session_id: str, count: int, kind: str = "k") -> list[InboxEntry]:
    """Push *count* entries with contents ``#0``, ``#1``, ... to *session_id*."""
    return [inbox.push(session_id, kind, f"#{n}", "test") for n in range(count)]


def contents(entries: Iterable[InboxEntry]) -> list[str]:
    return [entry.content for entry in entries]


def wanted(entry: InboxEntry) -> bool:
    """The suite's selective predicate: entries whose content starts with ``want``."""
    return entry.content.startswith("want")


def everything(entry: InboxEntry) -> bool:
    return True


def raising_after(count: int, error: type[BaseException]) -> Callable[[InboxEntry], bool]:
    """A predicate that accepts the first *count* entries it is asked about, then raises *error*."""
    calls = 0

    def predicate(entry: InboxEntry) -> bool:
        nonlocal calls
        calls += 1
        if calls > count:
            raise error(entry.content)
        return True

    return predicate


# -- Waiting in the test's own thread --------------------------------------------------------------


def events(logs: Iterable[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    """The events called *name* among *logs* (from the ``logs`` fixture), in order."""
    return [event for event in logs if event["event"] == name]


def spin_until(
    condition: Callable[[], bool], what: str, guard_seconds: float = HANG_GUARD_SECONDS
) -> None:
    """Return once *condition* holds; fail naming *what* if it never does."""
    give_up = time.monotonic() + guard_seconds
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"never happened: {what}")
        time.sleep(_PACE_SECONDS)


# -- Threads ---------------------------------------------------------------------------------------


class ThreadCall(threading.Thread):
    """``fn(*args)`` in a daemon thread of its own, started at once; its result or its error."""

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self._call = (fn, args)
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        fn, args = self._call
        try:
            self.result = fn(*args)
        except BaseException as error:  # handed to whoever asks for the outcome
            self.error = error

    def outcome(self) -> Any:
        """What the call returned, once it has (or raise what it raised); fail if it hangs."""
        self.join(HANG_GUARD_SECONDS)
        assert not self.is_alive(), f"{self._call[0]!r} never returned (a deadlock?)"
        if self.error is not None:
            raise self.error
        return self.result


def run_bounded(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, run so that a deadlock fails the test instead of hanging the suite."""
    return ThreadCall(fn, *args).outcome()


def join_all(
    threads: Iterable[threading.Thread],
    inbox: Inbox | None = None,
    guard_seconds: float = HANG_GUARD_SECONDS,
) -> None:
    """Join *threads*; then raise the first error of those that are `ThreadCall`.

    If any hangs, *inbox* (if given) is closed first, so that the threads
    waiting on it end, and the test fails naming the hung ones.
    """
    threads = list(threads)
    for thread in threads:
        thread.join(guard_seconds)
    hung = [thread.name for thread in threads if thread.is_alive()]
    if hung and inbox is not None:
        inbox.close()
    assert not hung, f"hung: {hung}"
    for thread in threads:
        if isinstance(thread, ThreadCall) and thread.error is not None:
            raise thread.error


def parked_wait_sync(inbox: Inbox, session_id: str, timeout: float | None = None) -> ThreadCall:
    """``inbox.wait_sync(session_id, timeout)`` in a thread, returned once it has parked.

    Fails if the wait returned instead of parking, or never parked.
    """
    before = inbox.waiter_count(session_id)
    wait = ThreadCall(inbox.wait_sync, session_id, timeout)
    spin_until(
        lambda: inbox.waiter_count(session_id) > before or not wait.is_alive(),
        f"wait_sync parked on {session_id!r}",
    )
    assert wait.is_alive(), f"wait_sync returned {wait.outcome()!r} instead of parking"
    return wait


# -- Async calls -----------------------------------------------------------------------------------


async def catching(
    error: type[BaseException] | tuple[type[BaseException], ...],
    fn: Callable[..., Awaitable[Any]],
    *args: Any,
) -> BaseException | None:
    """``await fn(*args)``, returning what it raised of *error* (so no task group fails)."""
    try:
        await fn(*args)
    except error as raised:
        return raised
    return None


async def collect(
    channel: Batches, into: list[list[InboxEntry]] | None = None
) -> list[list[InboxEntry]]:
    """``async for`` over *channel*, appending each batch to *into* as soon as it comes."""
    batches = [] if into is None else into
    async for batch in channel:
        batches.append(batch)  # each batch must show as soon as it comes
    return batches


#: The ways a task waits on a session: `wait` (a bool), `wait_for` and a `batches` step (entries).
WAYS_TO_WAIT = ("wait", "wait_for", "batches")


def waiting(
    inbox: Inbox,
    way: str,
    session_id: str = "s",
    timeout: float | None = None,
    predicate: Callable[[InboxEntry], object] = wanted,
) -> Callable[[], Awaitable[Any]]:
    """A call that waits on *session_id* in one of `WAYS_TO_WAIT`; call it again to wait again.

    ``"wait"`` returns True or False; ``"wait_for"`` takes what *predicate*
    accepts (default: `wanted`); ``"batches"`` receives a batch from one
    channel of the session (the same channel each call), and returns ``[]``
    once the channel has ended (`trio.EndOfChannel`), as ``async for`` stops.
    So a wait that ended with nothing returns a falsy value, whichever way.
    """
    if way == "wait":
        return lambda: inbox.wait(session_id, timeout)
    if way == "wait_for":
        return lambda: inbox.wait_for(session_id, predicate, timeout)
    assert way == "batches", way
    assert timeout is None, "a batches step has no timeout"
    channel = inbox.batches(session_id)

    async def step() -> list[InboxEntry]:
        try:
            return await channel.receive()
        except trio.EndOfChannel:
            return []

    return step


def store_of(inbox: Inbox) -> RedisStore:
    """The `RedisStore` under *inbox* (the Redis tests reach into it)."""
    from harn_inbox.stores import RedisStore

    store = inbox._store
    assert isinstance(store, RedisStore)
    return store


# -- Sessions of two lives ------------------------------------------------------------------------


def requeued_beside_a_twin(
    inbox: Inbox, session_id: str, old_content: str = "x", new_content: str = "x"
) -> tuple[InboxEntry, InboxEntry]:
    """An entry of an earlier life put back at the head, and one pushed since: both with
    sequence 1 (and, with the same contents on a `ManualClock`, equal)."""
    inbox.push(session_id, "k", old_content, "src")
    (old,) = inbox.drain(session_id)
    inbox.clear_session(session_id)
    inbox.requeue_front(old)
    new = inbox.push(session_id, "k", new_content, "src")
    assert new.sequence == old.sequence
    return old, new


class LookCounter:
    """Counts one store's finished looks: at the server (``_catch_up``) or at its replica.

    A wait looks once before it parks and once more once armed: after two
    finished looks and ``waiter_count`` showing it, its armed look has found
    nothing, and only a wake can make it look again. `of` counts one
    session's, where other waits look too.
    """

    def __init__(self, store: RedisStore) -> None:
        self.count = 0
        self._sessions: collections.Counter[str] = collections.Counter()
        catch_up, pending_here, read_here = store._catch_up, store.has_pending_here, store.read_here

        def counted_catch_up(*session_ids: str) -> None:
            catch_up(*session_ids)
            self._counted(session_ids)

        def counted_pending_here(session_id: str) -> bool | None:
            found = pending_here(session_id)
            if found is not None:
                self._counted((session_id,))
            return found

        def counted_read_here(session_id: str, cursor: Any) -> Any:
            found = read_here(session_id, cursor)
            if found is not None:
                self._counted((session_id,))
            return found

        store._catch_up = counted_catch_up  # type: ignore[method-assign]
        store.has_pending_here = counted_pending_here  # type: ignore[method-assign]
        store.read_here = counted_read_here  # type: ignore[method-assign]

    def of(self, session_id: str) -> int:
        return self._sessions[session_id]

    def _counted(self, session_ids: tuple[str, ...]) -> None:
        self.count += 1
        self._sessions.update(session_ids)


def asleep_on_a_fresh_copy(store: RedisStore, session_id: str) -> Callable[[], bool]:
    """A condition: a wait on *session_id* has parked for good on *store*'s fresh copy.

    Once the copy is heard and settled (``_Track.marks`` made good by a look at
    the server), it notifies the session: the wait wakes and looks at the copy
    (no round trip). Once a look begun after that notify has found nothing,
    the marks unchanged, every wake the wait was owed is spent and it is about
    to sleep (at most one more look at the copy, once armed: ``wait_steps``);
    only a message or a new notify wakes it then. Call it until it says so.
    """
    notified: list[int] = []  # the marks at each notify
    empty: list[tuple[int, int]] = []  # (notifies made, marks) as an empty look began
    pending_here = store.has_pending_here

    def recorded(looked: str) -> bool | None:
        track = store._tracks.get(looked)
        began = (len(notified), track.marks if track is not None else -1)
        found = pending_here(looked)
        if looked == session_id and found is False:
            empty.append(began)
        return found

    store.has_pending_here = recorded  # type: ignore[method-assign]

    def asleep() -> bool:
        track = store._tracks.get(session_id)
        settings = store._settings
        if track is None or settings is None or not settings.waiter_count(session_id):
            return False
        if not (track.listening and track.settled == track.marks):
            return False
        if not notified or notified[-1] != track.marks:
            notified.append(track.marks)
            store._notify(session_id)
            return False
        return (len(notified), track.marks) in empty

    return asleep


def turns_of_housekeeping(store: RedisStore) -> Callable[[int], None]:
    """A function that waits until *store*'s housekeeping has made *n* more whole turns."""
    tend_leases = store._tend_leases
    turns = threading.Semaphore(0)

    def counted() -> None:
        tend_leases()
        turns.release()

    store._tend_leases = counted  # type: ignore[method-assign]

    def wait(n: int) -> None:
        while turns.acquire(blocking=False):  # (only turns from now on count)
            pass
        for _ in range(n + 1):  # (+1: a turn under way began before)
            assert turns.acquire(timeout=HANG_GUARD_SECONDS), "housekeeping stopped"

    return wait


@contextmanager
def spy_on_thread_safe_entry(backend: Backend) -> Iterator[list[tuple[threading.Thread, Any]]]:
    """Record (calling thread, callback) for each call of the running loop's thread-safe entry.

    trio: ``TrioToken.run_sync_soon``. asyncio: ``loop.call_soon_threadsafe``, with
    the loop in debug mode, which raises if anything touches it from a foreign
    thread in a way that is not thread-safe.
    """
    calls: list[tuple[threading.Thread, Any]] = []
    if backend.name == "trio":
        original = trio.lowlevel.TrioToken.run_sync_soon

        def run_sync_soon(self: trio.lowlevel.TrioToken, fn: Any, *args: Any, **kw: Any) -> None:
            calls.append((threading.current_thread(), fn))
            original(self, fn, *args, **kw)

        trio.lowlevel.TrioToken.run_sync_soon = run_sync_soon  # type: ignore[method-assign]
        try:
            yield calls
        finally:
            trio.lowlevel.TrioToken.run_sync_soon = original  # type: ignore[method-assign]
    else:
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        call_soon_threadsafe = loop.call_soon_threadsafe

        def spy(fn: Any, *args: Any, **kw: Any) -> asyncio.Handle:
            calls.append((threading.current_thread(), fn))
            return call_soon_threadsafe(fn, *args, **kw)

        loop.call_soon_threadsafe = spy  # type: ignore[method-assign]
        try:
            yield calls
        finally:
            del loop.call_soon_threadsafe  # type: ignore[method-assign]
            loop.set_debug(False)
