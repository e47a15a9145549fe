"""`Batches`: a session's entries as an async channel of drained batches; `BatchesRegistry`."""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, final

import sniffio
import trio

from ._entry import InboxEntry

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


@final
class Batches(trio.abc.ReceiveChannel[list[InboxEntry]]):
    """What `Inbox.batches` returns: each `receive` is one drain of the session.

    A ``trio.abc.ReceiveChannel`` that works under trio and asyncio alike:
    ``async for batch in channel``, ``await channel.receive()``, ``async with
    channel``. Several tasks may receive from one channel; each batch goes to
    one of them.
    """

    __slots__ = ("__weakref__", "_aclose", "_receive", "cleared", "closed", "session_id")

    def __init__(
        self,
        session_id: str,
        receive: Callable[[Batches], Awaitable[list[InboxEntry]]],
        aclose: Callable[[Batches], None],
    ) -> None:
        self.session_id = session_id
        self._receive = receive
        self._aclose = aclose
        #: Set when the session is cleared: the channel has ended.
        self.cleared = False
        #: Set by `aclose`.
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "ended" if self.cleared else "open"
        return f"<harn_inbox batches of session {self.session_id!r}, {state}>"

    async def receive(self) -> list[InboxEntry]:
        """Wait for the session to have entries, drain and return them (never empty).

        Raises:
            trio.EndOfChannel: The session was cleared since this channel was
                made, or the inbox is closed and the session has nothing left.
            trio.ClosedResourceError: This channel was closed with `aclose`.
            trio.Cancelled, asyncio.CancelledError: Cancelled; nothing was taken.
        """
        if self.closed:
            raise trio.ClosedResourceError("this batches channel was closed")
        batch = await self._receive(self)
        if batch:
            return batch
        if self.closed:
            raise trio.ClosedResourceError("this batches channel was closed")
        raise trio.EndOfChannel

    async def aclose(self) -> None:
        """Close this channel, not the inbox; receives in progress raise ``ClosedResourceError``."""
        self._aclose(self)
        if sniffio.current_async_library() == "trio":
            await trio.lowlevel.checkpoint()


@final
class BatchesRegistry:
    """The live channels of each session, so that clearing a session ends them.

    Held weakly: a channel dropped without `Batches.aclose` goes away by
    itself, and empty sets left behind are swept, amortized O(1) per new one.
    """

    __slots__ = ("_lock", "_streams", "_sweep_at")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, weakref.WeakSet[Batches]] = {}
        self._sweep_at = 64

    def add(self, stream: Batches) -> None:
        with self._lock:
            streams = self._streams.get(stream.session_id)
            if streams is None:
                if len(self._streams) >= self._sweep_at:
                    self._streams = {sid: live for sid, live in self._streams.items() if live}
                    self._sweep_at = max(64, 2 * len(self._streams))
                streams = self._streams[stream.session_id] = weakref.WeakSet()
            streams.add(stream)

    def discard(self, stream: Batches) -> None:
        with self._lock:
            streams = self._streams.get(stream.session_id)
            if streams is not None:
                streams.discard(stream)
                if not streams:
                    del self._streams[stream.session_id]

    def end_session(self, session_id: str) -> None:
        """Mark every channel of *session_id* ended (before its waiters are told)."""
        with self._lock:
            for stream in self._streams.pop(session_id, ()):
                stream.cleared = True

    def __len__(self) -> int:
        with self._lock:
            return len(self._streams)
