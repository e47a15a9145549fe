"""`InboxEntry`: one stamped nudge, and its JSON shape; `Delivery`, when it is meant to be seen."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, final

import attrs

from ._arguments import check_int, check_text, type_error
from ._json import JsonValue, freeze, is_frozen, thaw

#: Sequences are the Harn runtime's u64: they run 1 .. 2**64-1, then wrap to 1.
MAX_SEQUENCE = 2**64 - 1


@final
class Delivery(enum.Enum):
    """When the agent loop is meant to see an entry (Harn's delivery classes).

    The inbox keeps it and hands it back; the loop decides what it means,
    typically draining with ``drain_where`` at the named point of a turn.
    """

    #: At the next turn boundary: the usual drain at turn start.
    TURN_BOUNDARY = "turn_boundary"
    #: As soon as possible: injected into the turn in progress.
    IMMEDIATE = "immediate"
    #: Right after the next tool call is dispatched.
    AFTER_NEXT_TOOL_CALL = "after_next_tool_call"


def check_delivery(value: object, name: str = "delivery") -> Delivery | None:
    """*value* as a `Delivery` (or None): a member, or one of the three names as a ``str``."""
    if value is None or type(value) is Delivery:
        return value
    if isinstance(value, str):
        try:
            return Delivery(str.__str__(value))
        except ValueError:
            names = ", ".join(repr(member.value) for member in Delivery)
            raise ValueError(
                f"{name} must be a Delivery or one of {names}, not {value!r}"
            ) from None
    return type_error(name, "a Delivery or None", value)


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


def _frozen_payload(value: object) -> JsonValue:
    return freeze(value, "payload")


def _delivery(value: Delivery | str | None) -> Delivery | None:
    return check_delivery(value)


def _text(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    check_text(attribute.name, value)


def _sequence(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if not 1 <= check_int("sequence", value) <= MAX_SEQUENCE:
        raise ValueError(f"sequence must be between 1 and 2**64-1, not {value!r}")


def _timestamp(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if check_int("ts_ms", value) < 0:
        raise ValueError(f"ts_ms must be a non-negative number of milliseconds, not {value!r}")


#: The entry's fields, in order; the first six are the older shape.
_FIELD_NAMES = (
    "sequence",
    "session_id",
    "kind",
    "content",
    "source",
    "ts_ms",
    "payload",
    "delivery",
)
_OLD_FIELD_NAMES = _FIELD_NAMES[:6]


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
            exactly one per push (or reserved number) for the life of the
            session (2**64-1 wraps to 1).
        session_id: The session whose inbox holds it.
        kind: What sort of nudge it is (``"tool_result"``, ``"mcp_progress"``, ...).
        content: The text of the nudge.
        source: Who pushed it.
        ts_ms: Milliseconds since the epoch on the inbox's clock at the push.
        payload: Structured data: a JSON value (``dict``, ``list``, ``str``,
            ``int``, ``float``, ``bool`` or ``None``, nested), kept read-only:
            objects as `JsonObject`, arrays as `JsonArray`, which compare equal
            to the ``dict`` and ``list`` they came from. ``None`` by default.
        delivery: When the loop is meant to see it (a `Delivery`, or its name);
            ``None`` by default.

    A field given as a subclass of ``str`` or ``int`` is stored as a plain
    ``str`` or ``int`` with the same value.

    Raises:
        TypeError: A field has the wrong type (``bool`` is not an ``int`` here),
            or *payload* is not JSON (the message names the path to the part
            that is not, e.g. ``payload['a'][2]``).
        ValueError: ``sequence`` is outside 1 .. 2**64-1, ``ts_ms`` is
            negative, *payload* holds a NaN or infinite float or holds itself,
            or *delivery* is not one of the three names.
    """

    sequence: int = attrs.field(converter=_plain_int, validator=_sequence)
    session_id: str = attrs.field(converter=_plain_text, validator=_text)
    kind: str = attrs.field(converter=_plain_text, validator=_text)
    content: str = attrs.field(converter=_plain_text, validator=_text)
    source: str = attrs.field(converter=_plain_text, validator=_text)
    ts_ms: int = attrs.field(converter=_plain_int, validator=_timestamp)
    # Typed Any, as json.loads is: a JSON value's shape is the producer's to
    # know (entry.payload["handle"] must type-check in a predicate).
    payload: Any = attrs.field(default=None, converter=_frozen_payload)
    delivery: Delivery | None = attrs.field(default=None, converter=_delivery)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the Harn runtime: the eight fields, in order.

        ``payload`` comes as plain ``dict``/``list`` values (new ones, yours to
        change), ``delivery`` as its name or ``None``. ``json.dumps`` takes the
        result as it is, and `from_dict` of its ``json.loads`` is an equal entry.
        """
        return {
            "sequence": self.sequence,
            "session_id": self.session_id,
            "kind": self.kind,
            "content": self.content,
            "source": self.source,
            "ts_ms": self.ts_ms,
            "payload": thaw(self.payload),
            "delivery": None if self.delivery is None else self.delivery.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InboxEntry:
        """Rebuild an entry from `to_dict`'s shape (a parsed JSON object, say).

        Takes the eight keys, or the older six (without ``payload`` and
        ``delivery``, which are then ``None``).

        Raises:
            TypeError: *data* is not a mapping.
            ValueError: A key is missing or unknown, or a value has the wrong type
                or is out of range.
        """
        if not isinstance(data, Mapping):
            type_error("data", "a mapping", data)
        names = _FIELD_NAMES if any(key in data for key in _FIELD_NAMES[6:]) else _OLD_FIELD_NAMES
        missing = [name for name in names if name not in data]
        unknown = [key for key in data if key not in names]
        if missing or unknown:
            raise ValueError(
                f"data must have exactly the keys {list(_FIELD_NAMES)} (or the first six)"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {unknown}" if unknown else "")
            )
        try:
            return cls(**data)
        except TypeError as error:
            raise ValueError(str(error)) from error


def has_plain_fields(entry: InboxEntry) -> bool:
    """Whether *entry* holds only plain values: ``int``, ``str``, a frozen payload, a `Delivery`.

    Always, unless its converters were bypassed (unpickling sets the fields
    directly) or attrs' validators were off when it was built.
    """
    try:
        texts = (entry.session_id, entry.kind, entry.content, entry.source)
        integers = (entry.sequence, entry.ts_ms)
        payload, delivery = entry.payload, entry.delivery
    except AttributeError:  # unpickled from an older shape: fields missing
        return False
    return (
        all(type(number) is int for number in integers)
        and all(type(text) is str for text in texts)
        and (delivery is None or type(delivery) is Delivery)
        and is_frozen(payload)
    )


def rebuilt(entry: InboxEntry) -> InboxEntry:
    """A copy of *entry* built by its converters and validators (fields it lacks: None)."""
    return InboxEntry(
        entry.sequence,
        entry.session_id,
        entry.kind,
        entry.content,
        entry.source,
        entry.ts_ms,
        getattr(entry, "payload", None),
        getattr(entry, "delivery", None),
    )


def stamp(
    sequence: int,
    session_id: str,
    kind: str,
    content: str,
    source: str,
    ts_ms: int,
    payload: JsonValue = None,
    delivery: Delivery | None = None,
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
    entry.payload = payload
    entry.delivery = delivery
    entry.__class__ = InboxEntry
    return entry  # type: ignore[no-any-return]


# What stamp relies on: InboxEntry's fields are _EntrySlots' slots and it adds
# none (it has no __weakref__ slot for this reason). An attrs that stopped
# reusing a base's slots would break the re-typing; say so at import, not at a push.
if InboxEntry.__slots__ or tuple(field.name for field in attrs.fields(InboxEntry)) != _FIELD_NAMES:
    raise ImportError("InboxEntry must keep exactly the slots of _entry._EntrySlots")
