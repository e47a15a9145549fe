"""A session's whole state as JSON-ready data: what a compacted Redis log keeps of its past.

Every replica of a session computes the same `SessionState` from its log, down
to which pending entries sit in ``front`` and which in ``back``, and which
keys of ``front`` are strays. `dump_session` writes all of that down and
`load_session` makes it again, so a replica that loads a snapshot goes on as
one that replayed the operations before it (entries of one expiry and one
sequence, across a clear, may expire in another order: only the order of
their report differs). Claims are written as their entries and what each
carried (`dump_claim`, `load_claim`).

An entry is ``[entry.to_dict(), coalesce_key, expires_at_ms]``, with a fourth
item, 1, for a stray key of ``front``.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from .._entry import InboxEntry
from .._session import _NO_META, SessionState, _stray_keys
from ._protocol import ClaimRecord

if TYPE_CHECKING:
    from .._session import Meta


def dump_session(session: SessionState) -> dict[str, Any]:
    """*session*'s state: counters, controls and every pending entry where it sits."""
    extras = session.extras
    meta = {} if extras is None else extras.meta
    front = session.front or {}
    pending = [*front.values(), *(session.back or {}).values()]
    state: dict[str, Any] = {
        "version": session.version,
        "last_sequence": session.last_sequence,
        "dropped": session.dropped,
        # (``front`` in its own order, newest last: the head is its last entry.)
        "front": [
            _dump(entry, meta.get(id(entry), _NO_META), stray=type(key) is tuple)
            for key, entry in front.items()
        ],
        "back": [_dump(entry, meta.get(id(entry), _NO_META)) for entry in pending[len(front) :]],
    }
    if extras is not None:
        state["counters"] = list(extras.totals())
        state["dedupe"] = [[end, key, entry.to_dict()] for end, key, entry in extras.dedupe_order]
    return state


def load_session(state: dict[str, Any], session: SessionState) -> None:
    """Make *session* what `dump_session` wrote; entries equal to ones it held are kept as
    they are (the same objects: what a reader was given still names them)."""
    held: dict[InboxEntry, deque[InboxEntry]] = {}
    for entry in [*(session.front or {}).values(), *(session.back or {}).values()]:
        held.setdefault(entry, deque()).append(entry)  # (in the order they are loaded)

    def entry_of(data: dict[str, Any]) -> InboxEntry:
        entry = InboxEntry.from_dict(data)
        same = held.get(entry)
        return same.popleft() if same else entry

    session.back = session.front = session.extras = None
    session.strays = 0
    session.version = state["version"]
    session.last_sequence = state["last_sequence"]
    session.dropped = state["dropped"]
    pending: list[tuple[InboxEntry, Meta]] = []
    if state.get("front"):
        front: dict[object, InboxEntry] = {}
        for data, coalesce_key, expires_at, *stray in state["front"]:
            entry = entry_of(data)
            key: object = entry.sequence
            if stray:
                key = (entry.sequence, next(_stray_keys))
                session.strays += 1
            front[key] = entry
            pending.append((entry, (coalesce_key, expires_at)))
        session.front = front
    if state.get("back"):
        back: dict[int, InboxEntry] = {}
        for data, coalesce_key, expires_at in state["back"]:
            entry = entry_of(data)
            back[entry.sequence] = entry
            pending.append((entry, (coalesce_key, expires_at)))
        session.back = back
        session.head = next(iter(back))  # (the keys of `back` go up in its order)
    if "counters" not in state:
        return
    extras = session._extras()
    extras.set_totals(state["counters"])
    for end, dedupe_key, data in state["dedupe"]:
        entry = InboxEntry.from_dict(data)
        extras.dedupe_order.append((end, dedupe_key, entry))
        extras.dedupe[dedupe_key] = entry
    # What pending entries carry. (Entries of one expiry expire in the order of
    # their sequences, whatever the order they are carried in: see `purge`.)
    for entry, meta in pending:
        if meta != _NO_META:
            session._carry(entry, meta)


def dump_claim(record: ClaimRecord, session: SessionState | None) -> list[Any]:
    """A claim's (or a take's) record: whether it was taken in *session*'s life, and its entries."""
    return [
        record.life is session and session is not None,
        [_dump(entry, meta) for entry, meta in zip(record.entries, record.metas, strict=True)],
    ]


def load_claim(session_id: str, data: list[Any], session: SessionState | None) -> ClaimRecord:
    """The record `dump_claim` wrote, of a life that is *session*'s if it said so."""
    same_life, items = data
    record = ClaimRecord(
        session_id,
        [InboxEntry.from_dict(item[0]) for item in items],
        [(item[1], item[2]) for item in items],
        None,
    )
    record.life = session if same_life else _ENDED
    return record


def _dump(entry: InboxEntry, meta: Meta, *, stray: bool = False) -> list[Any]:
    item = [entry.to_dict(), *meta]
    if stray:
        item.append(1)
    return item


#: The life of a record taken before the session was last cleared: no session is it.
_ENDED = object()
