"""The public API as users call it, checked by ``mypy --strict`` (never run by pytest).

A signature change that would break these calls fails the typecheck session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from harn_inbox import (
    Batches,
    Clock,
    Inbox,
    InboxClosed,
    InboxEntry,
    InboxError,
    InboxFull,
    ManualClock,
    SystemClock,
)

if TYPE_CHECKING:
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


async def async_use(inbox: Inbox) -> None:
    ready: bool = await inbox.wait("s", timeout=1)
    taken: list[InboxEntry] = await inbox.wait_for("s", lambda e: "h1" in e.content, timeout=None)
    channel: Batches = inbox.batches("s")
    receive_channel: trio.abc.ReceiveChannel[list[InboxEntry]] = channel
    async with receive_channel:
        async for batch in receive_channel:
            first: InboxEntry = batch[0]
            del first
    async with Inbox() as scoped:
        scoped.close()
    del ready, taken


def errors() -> tuple[type[InboxError], ...]:
    return (InboxClosed, InboxFull)
