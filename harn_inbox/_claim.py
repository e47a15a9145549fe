"""`Claim`: entries taken for a block, given back if the block fails (at-least-once hand-off)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, final

import sniffio
import trio

from ._offloop import off_loop

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from ._entry import InboxEntry
    from .stores._protocol import ClaimRecord


@final
class Claim:
    """What `Inbox.claim` returns: ``with`` (or ``async with``) it to hold entries for a block.

    Entering takes the session's pending entries (all, or those the predicate
    accepts, as `Inbox.drain_where` does) and gives the block a list of them.
    If the block raises (cancellation included), they go back to the head of
    the session in their order, with everything they carried (coalesce key,
    expiry), and the session's waiters wake. If it ends normally, they are
    gone. Each claim is entered once.
    """

    __slots__ = ("_network", "_record", "_release", "_settle", "_take", "session_id")

    def __init__(
        self,
        session_id: str,
        take: Callable[[], ClaimRecord],
        settle: Callable[[ClaimRecord], None],
        release: Callable[[ClaimRecord], None],
        *,
        network: bool = False,
    ) -> None:
        self.session_id = session_id
        #: The store goes over the network: ``async with`` runs its calls off the loop.
        self._network = network
        self._take = take
        self._settle = settle
        self._release = release
        self._record: ClaimRecord | None = None

    def __repr__(self) -> str:
        if self._record is None:
            return f"<harn_inbox claim on session {self.session_id!r}, not entered>"
        return f"<harn_inbox claim of {len(self._record)} entries of session {self.session_id!r}>"

    def __enter__(self) -> list[InboxEntry]:
        if self._record is not None:
            raise RuntimeError("a claim is entered once; call inbox.claim(...) again")
        self._record = record = self._take()
        return list(record.entries)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        record = self._record
        assert record is not None, "exited without entering"
        if exc_type is None:
            self._settle(record)
        else:
            self._release(record)

    async def __aenter__(self) -> list[InboxEntry]:
        """As ``__enter__``; a cancellation leaves nothing taken.

        Under trio it comes before anything is taken, or never; with a network
        store the claim runs off the loop, and what it took goes back if the
        caller was cancelled meanwhile.
        """
        if self._network:
            _, entries = await off_loop(self.__enter__, self._give_back)
            assert entries is not None
            return entries
        trio_run = sniffio.current_async_library() == "trio"
        if trio_run:
            await trio.lowlevel.checkpoint_if_cancelled()
        entries = self.__enter__()
        if trio_run:
            # trio's rule, every async call is a checkpoint: one that cannot
            # raise Cancelled, since the entries are taken.
            await trio.lowlevel.cancel_shielded_checkpoint()
        return entries

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._network:
            await off_loop(partial(self.__exit__, exc_type, exc, tb))
            return
        # Settled or released before anything that could be cancelled.
        self.__exit__(exc_type, exc, tb)
        if sniffio.current_async_library() == "trio":
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _give_back(self, entries: object) -> None:
        # An ``async with`` cancelled while its claim ran off the loop (a network
        # store): the block never ran.
        record = self._record
        if record is not None:
            self._release(record)
