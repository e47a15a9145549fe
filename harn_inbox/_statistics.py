"""`SessionStatistics`: what `Inbox.statistics` says about one session, as a value."""

from __future__ import annotations

from typing import final

import attrs


@final
@attrs.frozen(kw_only=True)
class SessionStatistics:
    """One session at one instant: a frozen record, like trio's channel statistics.

    Attributes:
        session_id: The session described.
        pending: Entries pending (what `Inbox.pending_count` says).
        waiters: Wait calls in progress on it (what `Inbox.waiter_count` says).
        last_sequence: The last sequence number issued since the session
            began or was last cleared; 0 if none.
        dropped: Entries that ``overflow="drop_oldest"`` discarded since then
            (what `Inbox.dropped` says).
        duplicates: Pushes that stored nothing because their ``dedupe_key``
            was pushed within the dedupe window.
        coalesced: Pending entries that a push with the same
            ``coalesce_key`` replaced.
        expired: Entries that expired before anyone took them.
        revoked: Entries that `Inbox.revoke` removed.
        reserved: Sequence numbers that `Inbox.reserve_sequence` issued.
        durable: Whether the session's state survives the process (the
            inbox's store keeps it in a file or a server, not in memory).

    Every count is since the session began or was last cleared.
    """

    session_id: str
    pending: int
    waiters: int
    last_sequence: int
    dropped: int
    duplicates: int = 0
    coalesced: int = 0
    expired: int = 0
    revoked: int = 0
    reserved: int = 0
    durable: bool = False
