"""The reference model: `InboxModel`, the contract as plain data.

`check_bounds` checks ``max_pending`` and ``overflow`` for the model and for
`make_conformance_machine` alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, final

import attrs

from .._clock import SystemClock
from .._entry import MAX_SEQUENCE, InboxEntry
from .._errors import InboxClosed, InboxFull

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._clock import Clock

Overflow = Literal["reject", "drop_oldest"]


def check_bounds(max_pending: object, overflow: object) -> None:
    if max_pending is not None and (
        not isinstance(max_pending, int) or isinstance(max_pending, bool) or max_pending < 1
    ):
        raise ValueError(f"max_pending must be an int of at least 1 or None, not {max_pending!r}")
    if overflow not in ("reject", "drop_oldest"):
        raise ValueError(f"overflow must be 'reject' or 'drop_oldest', not {overflow!r}")


@final
@attrs.define(eq=False)
class InboxModel:
    """The inbox contract as plain data: a list per session and a few counters.

    It has `Inbox`'s queue operations with the same arguments, results and
    errors, but no waiting and no locking: one thread, no surprises. It is
    what the conformance machine compares an inbox with, and a readable
    statement of the contract:

    - each session is a FIFO; only sessions with entries pending are listed;
    - a session's sequence starts at 1 and goes up by exactly one per
      accepted push (wrapping from 2**64-1 to 1), across drains, until
      `clear_session` restarts it;
    - ``ts_ms`` is the clock's ``now_ms()`` at the push;
    - with ``max_pending``, a push to a full session either raises `InboxFull`
      and stores nothing (``"reject"``) or discards the session's single
      oldest entry and counts it in `dropped` (``"drop_oldest"``);
      `requeue_front` may go beyond the bound;
    - after `close`, pushes raise `InboxClosed`; everything else still works.

    Args:
        clock: Where ``ts_ms`` comes from (only ``now_ms()`` is used).
        max_pending: The bound per session, or ``None`` for none.
        overflow: ``"reject"`` or ``"drop_oldest"``, as for `Inbox`.

    Raises:
        ValueError: ``max_pending`` is below 1, or ``overflow`` is not one of the two names.
    """

    clock: Clock = attrs.field(factory=SystemClock, kw_only=True)
    max_pending: int | None = attrs.field(default=None, kw_only=True)
    overflow: Overflow = attrs.field(default="reject", kw_only=True)
    _pending: dict[str, list[InboxEntry]] = attrs.field(init=False, factory=dict)
    _sequences: dict[str, int] = attrs.field(init=False, factory=dict)
    _dropped: dict[str, int] = attrs.field(init=False, factory=dict)
    _closed: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        check_bounds(self.max_pending, self.overflow)

    def push(self, session_id: str, kind: str, content: str, source: str) -> InboxEntry:
        """Append an entry stamped with the next sequence and the clock's time; return it."""
        if self._closed:
            raise InboxClosed(f"push to session {session_id!r} after the inbox was closed")
        pending = self._pending.get(session_id, [])
        if self.max_pending is not None and len(pending) >= self.max_pending:
            if self.overflow == "reject":
                raise InboxFull(session_id, len(pending), self.max_pending)
            pending = pending[1:]
            self._dropped[session_id] = self._dropped.get(session_id, 0) + 1
        last = self._sequences.get(session_id, 0)
        sequence = 1 if last == MAX_SEQUENCE else last + 1
        entry = InboxEntry(sequence, session_id, kind, content, source, self.clock.now_ms())
        self._sequences[session_id] = sequence
        self._pending[session_id] = [*pending, entry]
        return entry

    def requeue_front(self, entry: InboxEntry) -> None:
        """Put *entry* first in its session; `ValueError` if an equal entry is already pending."""
        pending = self._pending.get(entry.session_id, [])
        if entry in pending:
            raise ValueError(
                f"entry is already pending: session {entry.session_id!r} "
                f"holds an equal entry, sequence {entry.sequence}"
            )
        self._pending[entry.session_id] = [entry, *pending]

    def drain(self, session_id: str) -> list[InboxEntry]:
        """Take everything pending in *session_id*, oldest first."""
        return self._pending.pop(session_id, [])

    def drain_where(
        self, session_id: str, predicate: Callable[[InboxEntry], object]
    ) -> list[InboxEntry]:
        """Take the entries *predicate* holds true for, in order; keep the rest, in order.

        *predicate* is called once per pending entry, before anything changes,
        so if it raises, the exception propagates and nothing has changed.
        """
        pending = self._pending.get(session_id, [])
        verdicts = [bool(predicate(entry)) for entry in pending]
        taken = [entry for entry, verdict in zip(pending, verdicts, strict=True) if verdict]
        kept = [entry for entry, verdict in zip(pending, verdicts, strict=True) if not verdict]
        self._set_pending(session_id, kept)
        return taken

    def clear_session(self, session_id: str) -> int:
        """Drop *session_id*'s entries, sequence and dropped count; return how many entries."""
        self._sequences.pop(session_id, None)
        self._dropped.pop(session_id, None)
        return len(self._pending.pop(session_id, []))

    def pending_count(self, session_id: str) -> int:
        """How many entries *session_id* has pending."""
        return len(self._pending.get(session_id, []))

    def snapshot(self, session_id: str) -> list[InboxEntry]:
        """A copy of *session_id*'s pending entries, oldest first."""
        return list(self._pending.get(session_id, []))

    def sessions(self) -> list[str]:
        """The sessions with at least one entry pending."""
        return list(self._pending)

    def dropped(self, session_id: str) -> int:
        """How many entries ``"drop_oldest"`` discarded from *session_id* since it was cleared."""
        return self._dropped.get(session_id, 0)

    def close(self) -> None:
        """Refuse pushes from now on."""
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def _set_pending(self, session_id: str, entries: list[InboxEntry]) -> None:
        if entries:
            self._pending[session_id] = entries
        else:
            self._pending.pop(session_id, None)
