"""`InboxEntry`: one stamped nudge, and its JSON shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, final

import attrs

from ._arguments import check_int, check_text, type_error

#: Sequences are the Harn runtime's u64: they run 1 .. 2**64-1, then wrap to 1.
MAX_SEQUENCE = 2**64 - 1


# Converters: a subclass of str or int becomes a plain copy (see
# _arguments.check_text), so an entry never holds an object whose own __eq__
# or __hash__ would run when the inbox compares it under its lock. Anything
# else passes through unchanged, for the validators to refuse by name. (Typed
# as what they accept from a type-checked caller, so that mypy still checks
# the arguments of InboxEntry(...).)
def _plain_text(value: str) -> str:
    return str.__str__(value) if isinstance(value, str) else value


def _plain_int(value: int) -> int:
    return int.__int__(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _text(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    check_text(attribute.name, value)


def _sequence(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if not 1 <= check_int("sequence", value) <= MAX_SEQUENCE:
        raise ValueError(f"sequence must be between 1 and 2**64-1, not {value!r}")


def _timestamp(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if check_int("ts_ms", value) < 0:
        raise ValueError(f"ts_ms must be a non-negative number of milliseconds, not {value!r}")


#: The entry's fields, in order.
_FIELD_NAMES = ("sequence", "session_id", "kind", "content", "source", "ts_ms")


class _EntrySlots:
    """The memory layout of an entry: `InboxEntry`'s fields are these slots.

    `InboxEntry` adds no slots to these (attrs reuses slots a base class
    already has), which is what lets `stamp` build one fast.
    """

    __slots__ = _FIELD_NAMES


@final
@attrs.frozen(weakref_slot=False)
class InboxEntry(_EntrySlots):
    """One nudge as the inbox stamped it. Immutable and hashable.

    Args:
        sequence: Position in its session, 1 for the first push, then up by
            exactly one per push for the life of the session (2**64-1 wraps to 1).
        session_id: The session whose inbox holds it.
        kind: What sort of nudge it is (``"tool_result"``, ``"mcp_progress"``, ...).
        content: The payload, as text.
        source: Who pushed it.
        ts_ms: Milliseconds since the epoch on the inbox's clock at the push.

    A field given as a subclass of ``str`` or ``int`` is stored as a plain
    ``str`` or ``int`` with the same value.

    Raises:
        TypeError: A field has the wrong type (``bool`` is not an ``int`` here).
        ValueError: ``sequence`` is outside 1 .. 2**64-1, or ``ts_ms`` is negative.
    """

    sequence: int = attrs.field(converter=_plain_int, validator=_sequence)
    session_id: str = attrs.field(converter=_plain_text, validator=_text)
    kind: str = attrs.field(converter=_plain_text, validator=_text)
    content: str = attrs.field(converter=_plain_text, validator=_text)
    source: str = attrs.field(converter=_plain_text, validator=_text)
    ts_ms: int = attrs.field(converter=_plain_int, validator=_timestamp)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the Harn runtime: exactly the six fields, in order."""
        return {
            "sequence": self.sequence,
            "session_id": self.session_id,
            "kind": self.kind,
            "content": self.content,
            "source": self.source,
            "ts_ms": self.ts_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InboxEntry:
        """Rebuild an entry from `to_dict`'s shape (a parsed JSON object, say).

        Raises:
            TypeError: *data* is not a mapping.
            ValueError: A key is missing or unknown, or a value has the wrong type
                or is out of range.
        """
        if not isinstance(data, Mapping):
            type_error("data", "a mapping", data)
        missing = [name for name in _FIELD_NAMES if name not in data]
        unknown = [key for key in data if key not in _FIELD_NAMES]
        if missing or unknown:
            raise ValueError(
                f"data must have exactly the keys {list(_FIELD_NAMES)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {unknown}" if unknown else "")
            )
        try:
            return cls(**data)
        except TypeError as error:
            raise ValueError(str(error)) from error


def has_plain_fields(entry: InboxEntry) -> bool:
    """Whether *entry* holds only plain ``int`` and ``str`` values.

    Always, unless its converters were bypassed (unpickling sets the fields
    directly) or attrs' validators were off when it was built.
    """
    texts = (entry.session_id, entry.kind, entry.content, entry.source)
    return type(entry.sequence) is int is type(entry.ts_ms) and all(type(t) is str for t in texts)


def stamp(
    sequence: int, session_id: str, kind: str, content: str, source: str, ts_ms: int
) -> InboxEntry:
    """A new entry from fields the caller has already checked: push's way to build one.

    attrs' frozen ``__init__`` sets each field through ``object.__setattr__``
    and runs the converters and validators again; that cost more than the
    rest of a push. Instead fill an `_EntrySlots` by plain slot stores and
    re-type it: CPython allows ``__class__`` assignment between classes of
    one layout, and because `_EntrySlots` is `InboxEntry`'s own base it finds
    the layouts equal at a glance. (What it buys: ``benchmarks/README.md``.)
    """
    entry: Any = _EntrySlots()
    entry.sequence = sequence
    entry.session_id = session_id
    entry.kind = kind
    entry.content = content
    entry.source = source
    entry.ts_ms = ts_ms
    entry.__class__ = InboxEntry
    return entry  # type: ignore[no-any-return]


# What stamp relies on: InboxEntry's fields are _EntrySlots' slots and it adds
# none (it has no __weakref__ slot for this reason). An attrs that stopped
# reusing a base's slots would break the re-typing; say so at import, not at a push.
if InboxEntry.__slots__ or tuple(field.name for field in attrs.fields(InboxEntry)) != _FIELD_NAMES:
    raise ImportError("InboxEntry must keep exactly the slots of _entry._EntrySlots")
