"""The public API as users call it, checked by ``mypy --strict`` (never run by pytest).

A signature change that would break these calls fails the typecheck session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from harn_inbox import (
    Batches,
    Clock,
    Delivery,
    Inbox,
    InboxClosed,
    InboxEntry,
    InboxError,
    InboxFull,
    InboxLike,
    ManualClock,
    SessionStatistics,
    SystemClock,
)
from harn_inbox.stores import MemoryStore, RedisStore
from harn_inbox.testing import SharedInboxes

if TYPE_CHECKING:
    from collections.abc import Sequence

    import trio


class RecordingClock:
    """A user-written clock: satisfies the Clock protocol structurally."""

    def __init__(self) -> None:
        self.readings: list[int] = []
        self._inner = SystemClock()

    def now_ms(self) -> int:
        reading = self._inner.now_ms()
        self.readings.append(reading)
        return reading

    def call_later(self, seconds: float, callback: object) -> None:
        return None


def sync_use() -> None:
    clock: Clock = ManualClock(start_ms=0)
    logger = structlog.get_logger()
    inbox = Inbox(clock=clock, logger=logger, max_pending=100, overflow="drop_oldest")
    entry: InboxEntry = inbox.push("s", "tool_result", "done", "worker")
    seq: int = entry.sequence
    assert seq >= 1
    entries: list[InboxEntry] = inbox.drain("s")
    mine: list[InboxEntry] = inbox.drain_where("s", lambda e: e.kind == "tool_result")
    inbox.requeue_front(entry)
    count: int = inbox.pending_count("s") + inbox.waiter_count("s") + inbox.dropped("s")
    names: list[str] = inbox.sessions()
    copy: list[InboxEntry] = inbox.snapshot("s")
    dropped: int = inbox.clear_session("s")
    woke: bool = inbox.wait_sync("s", timeout=0.5) or inbox.wait_sync("s", None)
    rebuilt = InboxEntry.from_dict(entry.to_dict())
    assert rebuilt == entry
    with Inbox(clock=RecordingClock()) as other:
        other.push("", "k", "c", "s")
    del entries, mine, count, names, copy, dropped, woke


def stores_and_statistics() -> None:
    inbox = Inbox(store=MemoryStore(), clock=ManualClock(), dedupe_window=60)
    inbox.push("s", "k", "c", "src")
    stats: SessionStatistics = inbox.statistics("s")
    counts: tuple[int, ...] = (
        stats.pending,
        stats.waiters,
        stats.last_sequence,
        stats.dropped,
        stats.duplicates,
        stats.coalesced,
        stats.expired,
        stats.revoked,
        stats.reserved,
    )
    session: str = stats.session_id
    del counts, session


def producer_controls(inbox: Inbox) -> None:
    result = inbox.push(
        "s",
        "tool_result",
        "done",
        "worker",
        payload={"handle": "h1", "lines": [1, 2.5, None, True], "meta": {"ok": False}},
        delivery=Delivery.IMMEDIATE,
        dedupe_key="call-17",
        expires_in=30,
    )
    payload: object = result.payload
    delivery: Delivery | None = result.delivery
    progress = inbox.push(
        "s", "progress", "50%", "mcp", coalesce_key="progress", delivery="turn_boundary"
    )
    reserved: int = inbox.reserve_sequence("s")
    revoked: InboxEntry | None = inbox.revoke("s", progress.sequence)
    del payload, delivery, reserved, revoked


def claims(inbox: Inbox) -> None:
    with inbox.claim("s") as entries:
        everything: list[InboxEntry] = entries
    with inbox.claim("s", lambda e: e.kind == "tool_result") as results:
        first: InboxEntry | None = results[0] if results else None
    del everything, first


async def async_use(inbox: Inbox) -> None:
    ready: bool = await inbox.wait("s", timeout=1)
    taken: list[InboxEntry] = await inbox.wait_for("s", lambda e: "h1" in e.content, timeout=None)
    [result] = await inbox.wait_for("s", lambda e: e.payload == {"handle": "h2"}, limit=1)
    some: list[InboxEntry] = await inbox.wait_for("s", lambda e: True, 5, limit=3)
    ready_session: str | None = await inbox.wait_any(["a", "b"], timeout=2)
    from_a_thread: str | None = inbox.wait_any_sync(("a", "b"))
    async with inbox.claim("s") as claimed:
        held: list[InboxEntry] = claimed
    channel: Batches = inbox.batches("s")
    receive_channel: trio.abc.ReceiveChannel[list[InboxEntry]] = channel
    async with receive_channel:
        async for batch in receive_channel:
            first: InboxEntry = batch[0]
            del first
    async with Inbox() as scoped:
        scoped.close()
    del ready, taken, result, some, ready_session, from_a_thread, held


async def through_the_protocol(inbox: InboxLike) -> int:
    """A user's code written against the interface, not the class: any `InboxLike` will do."""
    entry = inbox.push("s", "k", "c", "src", payload=[1, "two"], delivery="immediate")
    inbox.requeue_front(inbox.drain("s")[0])
    chosen: Sequence[InboxEntry] = inbox.drain_where("s", lambda e: e.sequence == entry.sequence)
    with inbox.claim("s") as claimed:
        assert len(claimed) >= 0
    async with inbox.claim("s", lambda e: True) as held:
        assert len(held) >= 0
    await inbox.wait_for("s", lambda e: True, limit=1)
    found: str | None = await inbox.wait_any(["s"], 0)
    stats: SessionStatistics = inbox.statistics("s")
    del chosen, found
    return stats.pending + inbox.reserve_sequence("s")


def an_inbox_is_inbox_like() -> InboxLike:
    return Inbox()


def errors() -> tuple[type[InboxError], ...]:
    return (InboxClosed, InboxFull)


async def shared_by_processes(url: str) -> list[InboxEntry]:
    """A Redis store, and the awaitable forms a task calls on it."""
    store: RedisStore = RedisStore(url, namespace="agents", claim_lease=30.0, retries=2)
    inbox = Inbox(store=store)
    entry: InboxEntry = await inbox.apush("s", "k", "c", "src", payload={"n": 1}, dedupe_key="d")
    await inbox.arequeue_front(entry)
    sequence: int = await inbox.areserve_sequence("s")
    revoked: InboxEntry | None = await inbox.arevoke("s", sequence)
    count: int = await inbox.apending_count("s") + await inbox.aclear_session("t")
    sessions: list[str] = await inbox.asessions()
    stats: SessionStatistics = await inbox.astatistics("s")
    copy: list[InboxEntry] = await inbox.asnapshot("s")
    taken: list[InboxEntry] = await inbox.adrain_where("s", lambda e: e.kind == "k")
    taken += await inbox.adrain("s")
    del revoked, count, sessions, stats, copy
    store.close()
    return taken


def two_inboxes_as_one(first: Inbox, second: Inbox) -> InboxLike:
    return SharedInboxes([first, second])
