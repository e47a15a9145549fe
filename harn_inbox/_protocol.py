"""`InboxLike`: the inbox interface, as a `typing.Protocol` that wrappers type-check against."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Sequence
    from types import TracebackType

    from ._entry import Delivery, InboxEntry
    from ._statistics import SessionStatistics


class ClaimLike(Protocol):
    """What `InboxLike.claim` returns: a context manager, sync and async, over the entries taken.

    Entering takes the entries and gives them to the block; leaving with an
    exception gives them back, leaving normally lets them go. It never
    swallows the block's exception.
    """

    def __enter__(self) -> Sequence[InboxEntry]: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def __aenter__(self) -> Sequence[InboxEntry]: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class InboxLike(Protocol):
    """The methods of `Inbox` that the conformance kit (``harn_inbox.testing``) drives.

    `Inbox` satisfies it; so does a wrapper of your own (one that adds
    metrics, say) or another implementation, which can then be annotated
    with it and checked by the kit. Results typed as sequences may be any
    sequence; parameters keep `Inbox`'s names, since callers pass some by
    keyword.
    """

    # -- Producing

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
    ) -> InboxEntry: ...

    def reserve_sequence(self, session_id: str) -> int: ...

    def requeue_front(self, entry: InboxEntry) -> None: ...

    # -- Consuming

    def drain(self, session_id: str) -> Sequence[InboxEntry]: ...

    def drain_where(
        self, session_id: str, predicate: Callable[[InboxEntry], object]
    ) -> Sequence[InboxEntry]: ...

    def revoke(self, session_id: str, sequence: int) -> InboxEntry | None: ...

    def claim(
        self, session_id: str, predicate: Callable[[InboxEntry], object] | None = None
    ) -> ClaimLike: ...

    def clear_session(self, session_id: str) -> int: ...

    # -- Looking

    def pending_count(self, session_id: str) -> int: ...

    def snapshot(self, session_id: str) -> Sequence[InboxEntry]: ...

    def sessions(self) -> Collection[str]: ...

    def waiter_count(self, session_id: str) -> int: ...

    def dropped(self, session_id: str) -> int: ...

    def statistics(self, session_id: str) -> SessionStatistics: ...

    # -- Waiting

    def wait_sync(self, session_id: str, timeout: float | None = None) -> bool: ...

    async def wait(self, session_id: str, timeout: float | None = None) -> bool: ...

    async def wait_for(
        self,
        session_id: str,
        predicate: Callable[[InboxEntry], object],
        timeout: float | None = None,
        *,
        limit: int | None = None,
    ) -> Sequence[InboxEntry]: ...

    async def wait_any(
        self, session_ids: Iterable[str], timeout: float | None = None
    ) -> str | None: ...

    def wait_any_sync(
        self, session_ids: Iterable[str], timeout: float | None = None
    ) -> str | None: ...

    # -- Shutting down

    def close(self) -> None: ...
