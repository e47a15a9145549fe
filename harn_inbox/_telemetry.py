"""`Telemetry`: the one event per operation an inbox with a structlog logger emits.

Telemetry comes after the fact (an entry accepted, entries taken): a logger
that raises must not turn that into an error and lose them, so every call is
guarded and its failure goes to the standard ``logging`` logger ``harn_inbox``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

from ._lot import fallback_logger
from ._session import PushNote

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from ._entry import InboxEntry
    from ._lot import Interrupt


@final
class Telemetry:
    """A logger, and what the inbox tells it."""

    __slots__ = ("_logger",)

    def __init__(self, logger: FilteringBoundLogger) -> None:
        self._logger = logger

    def emit(self, level: str, event: str, **fields: Any) -> None:
        try:
            getattr(self._logger, level)(event, **fields)
        except Exception:
            fallback_logger.exception("harn_inbox: logging %s failed", event)

    def emit_fields(self, level: str, event: str, fields: dict[str, object]) -> None:
        """`emit` with the fields as a dict (for a store's own events)."""
        self.emit(level, event, **fields)

    def pushed(
        self, session_id: str, kind: str, source: str, pushed: InboxEntry | PushNote
    ) -> None:
        """One ``inbox.push`` event: debug, or a warning for a drop; its outcome if not plain."""
        fields: dict[str, object] = {"session_id": session_id, "kind": kind, "source": source}
        if type(pushed) is not PushNote:
            self.emit("debug", "inbox.push", **fields, sequence=pushed.sequence)
            return
        fields["sequence"] = pushed.entry.sequence
        level = "debug"
        if pushed.duplicate:
            fields["outcome"] = "duplicate"
            fields["duplicates_total"] = pushed.total
        if pushed.coalesced is not None:
            fields["outcome"] = "coalesced"
            fields["coalesced_sequence"] = pushed.coalesced.sequence
            fields["coalesced_total"] = pushed.total
        if pushed.dropped is not None:
            level = "warning"
            fields["outcome"] = "dropped_oldest"
            fields["dropped_sequence"] = pushed.dropped.sequence
            fields["dropped_total"] = pushed.dropped_total
        self.emit(level, "inbox.push", **fields)

    def waited(
        self,
        event: str,
        session_ids: tuple[str, ...],
        result: object,
        interrupted: Interrupt | None,
        closed: bool,
        waited_ms: int,
        timeout: float | None,
    ) -> None:
        if result:
            outcome = "pending"
        elif interrupted is not None:
            outcome = interrupted.value
        elif closed:
            outcome = "closed"
        else:
            outcome = "empty"
        fields: dict[str, Any] = {
            "outcome": outcome,
            "timeout": timeout,
            "waited_ms": waited_ms,
        }
        if len(session_ids) == 1:
            fields["session_id"] = session_ids[0]
        else:  # wait_any: the sessions waited on, and the one found
            fields["session_ids"] = list(session_ids)
            fields["session_id"] = result
        if isinstance(result, list):
            fields["taken"] = len(result)
        self.emit("debug", event, **fields)
