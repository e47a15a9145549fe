"""`Session`: one session's state inside an `Inbox`, guarded by the inbox's lock."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from ._entry import InboxEntry
    from ._waiters import Waiter


@final
class Session:
    """What an inbox keeps for one session: plain data, read and written under its lock.

    A session's record exists while it holds anything (pending entries, a
    sequence counter, waits in progress, a drop count) and is dropped as soon
    as it holds nothing (`is_empty`), so sessions nobody uses cost nothing.
    """

    __slots__ = ("dropped", "last_sequence", "pending", "waiters")

    def __init__(self) -> None:
        #: Pending entries, oldest first; ``None`` rather than an empty list.
        #: Changed in place only by appending and (counted in `dropped`) by
        #: deleting the head; any other change replaces it.
        self.pending: list[InboxEntry] | None = None
        #: The last sequence issued since the session began or was cleared; 0 if none.
        self.last_sequence = 0
        #: The wait calls in progress on the session (a dict as an ordered set).
        self.waiters: dict[Waiter, None] | None = None
        #: Entries that ``overflow="drop_oldest"`` discarded since it began or was cleared.
        self.dropped = 0

    def is_empty(self) -> bool:
        return (
            self.pending is None
            and self.last_sequence == 0
            and self.waiters is None
            and self.dropped == 0
        )
