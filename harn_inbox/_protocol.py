"""`InboxLike`: the inbox interface, as a `typing.Protocol` that wrappers type-check against."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from ._entry import InboxEntry


class InboxLike(Protocol):
    """The methods of `Inbox` that the conformance kit (``harn_inbox.testing``) drives.

    `Inbox` satisfies it; so does a wrapper of your own (one that adds
    metrics, say) or another implementation, which can then be annotated
    with it and checked by the kit. Results typed as sequences may be any
    sequence.
    """

    def push(self, session_id: str, kind: str, content: str, source: str) -> InboxEntry: ...

    def requeue_front(self, entry: InboxEntry) -> None: ...

    def drain(self, session_id: str) -> Sequence[InboxEntry]: ...

    def drain_where(
        self, session_id: str, predicate: Callable[[InboxEntry], object]
    ) -> Sequence[InboxEntry]: ...

    def clear_session(self, session_id: str) -> int: ...

    def pending_count(self, session_id: str) -> int: ...

    def snapshot(self, session_id: str) -> Sequence[InboxEntry]: ...

    def sessions(self) -> Collection[str]: ...

    def waiter_count(self, session_id: str) -> int: ...

    def dropped(self, session_id: str) -> int: ...

    def wait_sync(self, session_id: str, timeout: float | None = None) -> bool: ...

    async def wait(self, session_id: str, timeout: float | None = None) -> bool: ...

    async def wait_for(
        self,
        session_id: str,
        predicate: Callable[[InboxEntry], object],
        timeout: float | None = None,
    ) -> Sequence[InboxEntry]: ...

    def close(self) -> None: ...
