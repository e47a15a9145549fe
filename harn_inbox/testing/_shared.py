"""`SharedInboxes`: several inboxes on one shared store, driven by the kit as one inbox."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Sequence

    from .._entry import Delivery, InboxEntry
    from .._protocol import ClaimLike, InboxLike
    from .._statistics import SessionStatistics


@final
class SharedInboxes:
    """Inboxes that share their sessions (one Redis namespace), as one `InboxLike`.

    Each call goes to the next inbox in turn, so a run of the conformance kit
    pushes through one and drains, claims, waits or clears through another:
    the model is shared, and any difference between "this process" and
    "another process" shows up as a broken promise. Counts that each inbox
    keeps for itself (`waiter_count`, the ``waiters`` of `statistics`) are
    summed; `close` closes them all.

    ::

        def make_inboxes():
            clock = ManualClock(start_ms=1_000_000)
            namespace = uuid.uuid4().hex
            inboxes = [Inbox(store=RedisStore(url, namespace=namespace), clock=clock)
                       for _ in range(2)]
            return SharedInboxes(inboxes), clock

        run_conformance(make_inboxes)
    """

    __slots__ = ("_turns", "inboxes")

    def __init__(self, inboxes: Iterable[InboxLike]) -> None:
        self.inboxes = tuple(inboxes)
        if len(self.inboxes) < 2:
            raise ValueError(f"inboxes must hold at least two inboxes, not {len(self.inboxes)}")
        self._turns = itertools.cycle(self.inboxes)

    def __repr__(self) -> str:
        return f"<SharedInboxes of {len(self.inboxes)}: {list(self.inboxes)!r}>"

    def _next(self) -> InboxLike:
        return next(self._turns)

    def push(
        self,
        session_id: str,
        kind: str,
        content: str,
        source: str,
        *,
        payload: object = None,
        delivery: Delivery | str | None = None,
        dedupe_key: str | None = None,
        coalesce_key: str | None = None,
        expires_in: float | None = None,
    ) -> InboxEntry:
        return self._next().push(
            session_id,
            kind,
            content,
            source,
            payload=payload,
            delivery=delivery,
            dedupe_key=dedupe_key,
            coalesce_key=coalesce_key,
            expires_in=expires_in,
        )

    def reserve_sequence(self, session_id: str) -> int:
        return self._next().reserve_sequence(session_id)

    def requeue_front(self, entry: InboxEntry) -> None:
        self._next().requeue_front(entry)

    def drain(self, session_id: str) -> Sequence[InboxEntry]:
        return self._next().drain(session_id)

    def drain_where(
        self, session_id: str, predicate: Callable[[InboxEntry], object]
    ) -> Sequence[InboxEntry]:
        return self._next().drain_where(session_id, predicate)

    def revoke(self, session_id: str, sequence: int) -> InboxEntry | None:
        return self._next().revoke(session_id, sequence)

    def claim(
        self, session_id: str, predicate: Callable[[InboxEntry], object] | None = None
    ) -> ClaimLike:
        return self._next().claim(session_id, predicate)

    def clear_session(self, session_id: str) -> int:
        return self._next().clear_session(session_id)

    def pending_count(self, session_id: str) -> int:
        return self._next().pending_count(session_id)

    def snapshot(self, session_id: str) -> Sequence[InboxEntry]:
        return self._next().snapshot(session_id)

    def sessions(self) -> Collection[str]:
        return self._next().sessions()

    def waiter_count(self, session_id: str) -> int:
        return sum(inbox.waiter_count(session_id) for inbox in self.inboxes)

    def dropped(self, session_id: str) -> int:
        return self._next().dropped(session_id)

    def statistics(self, session_id: str) -> SessionStatistics:
        counts = self._next().statistics(session_id)
        return attrs.evolve(counts, waiters=self.waiter_count(session_id))

    def wait_sync(self, session_id: str, timeout: float | None = None) -> bool:
        return self._next().wait_sync(session_id, timeout)

    async def wait(self, session_id: str, timeout: float | None = None) -> bool:
        return await self._next().wait(session_id, timeout)

    async def wait_for(
        self,
        session_id: str,
        predicate: Callable[[InboxEntry], object],
        timeout: float | None = None,
        *,
        limit: int | None = None,
    ) -> Sequence[InboxEntry]:
        return await self._next().wait_for(session_id, predicate, timeout, limit=limit)

    async def wait_any(
        self, session_ids: Iterable[str], timeout: float | None = None
    ) -> str | None:
        return await self._next().wait_any(session_ids, timeout)

    def wait_any_sync(self, session_ids: Iterable[str], timeout: float | None = None) -> str | None:
        return self._next().wait_any_sync(session_ids, timeout)

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.close()
