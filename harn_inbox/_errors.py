"""The exceptions harn_inbox raises besides TypeError and ValueError."""

from __future__ import annotations

from typing import final


class InboxError(Exception):
    """Base class of the errors that only harn_inbox raises.

    Bad arguments are not among them: those raise the built-in `TypeError`
    (wrong type) or `ValueError` (right type, wrong value), naming the argument.
    """


@final
class InboxClosed(InboxError):
    """A push reached an inbox after `Inbox.close`.

    Nothing was stored. What was queued before the close can still be drained.
    """


@final
class InboxFull(InboxError):
    """A push reached a full session of an inbox built with ``overflow="reject"``.

    Nothing was stored. `session_id`, `pending` and `max_pending` say which
    session, how full it was, and the limit.
    """

    def __init__(self, session_id: str, pending: int, max_pending: int) -> None:
        super().__init__(
            f"session {session_id!r} has {pending} pending entries (max_pending={max_pending})"
        )
        self.session_id = session_id
        self.pending = pending
        self.max_pending = max_pending

    def __reduce__(self) -> tuple[type[InboxFull], tuple[str, int, int]]:
        # Rebuild from the three fields, not from the message (pickle, copy).
        return (InboxFull, (self.session_id, self.pending, self.max_pending))


@final
class StoreError(InboxError):
    """The inbox's store cannot do what was asked: its file or server failed or refused.

    The message names the store (a file's path, a server's address) and why.
    The operation that raised changed nothing: what was accepted before it is
    still there, and what it tried to store is not.
    """
