"""`Batches`: a session's entries as an async channel of drained batches."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, final

import sniffio
import trio

from ._entry import InboxEntry

if TYPE_CHECKING:
    from ._inbox import Inbox


@final
class Batches(trio.abc.ReceiveChannel[list[InboxEntry]]):
    """What `Inbox.batches` returns: each `receive` is one drain of the session.

    A ``trio.abc.ReceiveChannel`` that works under trio and asyncio alike:
    ``async for batch in channel``, ``await channel.receive()``, ``async with
    channel``. Several tasks may receive from one channel; each batch goes to
    one of them.
    """

    # _cleared and _closed are written and read under the inbox's lock.
    __slots__ = ("__weakref__", "_cleared", "_closed", "_inbox", "session_id")

    def __init__(self, inbox: Inbox, session_id: str) -> None:
        self._inbox = inbox
        self.session_id = session_id
        self._cleared = False
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "ended" if self._cleared else "open"
        return f"<harn_inbox batches of session {self.session_id!r}, {state}>"

    async def receive(self) -> list[InboxEntry]:
        """Wait for the session to have entries, drain and return them (never empty).

        Raises:
            trio.EndOfChannel: The session was cleared since this channel was
                made, or the inbox is closed and the session has nothing left.
            trio.ClosedResourceError: This channel was closed with `aclose`.
            trio.Cancelled, asyncio.CancelledError: Cancelled; nothing was taken.
        """
        if self._closed:
            raise trio.ClosedResourceError("this batches channel was closed")
        inbox = self._inbox
        batch = await inbox._logged_wait_async(
            inbox._async_waiter(self.session_id),
            partial(inbox._step_batch, self),
            None,
            "inbox.batch",
        )
        if batch:
            return batch
        if self._closed:
            raise trio.ClosedResourceError("this batches channel was closed")
        raise trio.EndOfChannel

    async def aclose(self) -> None:
        """Close this channel, not the inbox; receives in progress raise ``ClosedResourceError``."""
        inbox = self._inbox
        with inbox._lock:
            self._closed = True
        inbox._forget_stream(self)
        inbox._wake_session(
            self.session_id
        )  # receivers parked on this channel look again and see it closed
        if sniffio.current_async_library() == "trio":
            await trio.lowlevel.checkpoint()
