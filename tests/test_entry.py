"""InboxEntry: an immutable, validated value, and its JSON shape (to_dict / from_dict)."""

from __future__ import annotations

import copy
import json
import pickle
import types
from typing import Any

import attrs
import pytest

from harn_inbox import Inbox, InboxEntry, ManualClock

FIELDS = ("sequence", "session_id", "kind", "content", "source", "ts_ms")
MAX_SEQUENCE = 2**64 - 1


def make_entry(**overrides: Any) -> InboxEntry:
    fields: dict[str, Any] = {
        "sequence": 7,
        "session_id": "session-a",
        "kind": "tool_result",
        "content": "done",
        "source": "worker-1",
        "ts_ms": 1_700_000_000_000,
    }
    fields.update(overrides)
    return InboxEntry(**fields)


def entry_dict(**overrides: Any) -> dict[str, Any]:
    data = make_entry().to_dict()
    data.update(overrides)
    return data


# -- Shape -------------------------------------------------------------------------------------


def test_fields_are_the_eight_promised_in_order() -> None:
    assert tuple(field.name for field in attrs.fields(InboxEntry)) == (
        *FIELDS,
        "payload",
        "delivery",
    )


def test_positional_construction_follows_field_order() -> None:
    entry = InboxEntry(3, "s", "k", "c", "src", 42)
    assert (entry.sequence, entry.session_id, entry.kind) == (3, "s", "k")
    assert (entry.content, entry.source, entry.ts_ms) == ("c", "src", 42)


def test_entry_is_immutable() -> None:
    entry = make_entry()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        entry.content = "changed"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        entry.sequence = 8  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del entry.kind  # type: ignore[misc]
    assert entry == make_entry()


def test_entries_with_equal_fields_are_equal_and_hash_alike() -> None:
    assert make_entry() == make_entry()
    assert hash(make_entry()) == hash(make_entry())
    assert make_entry() != make_entry(sequence=8)
    assert make_entry() != make_entry(content="other")
    assert len({make_entry(), make_entry(), make_entry(ts_ms=0)}) == 2


def test_empty_strings_are_valid_fields() -> None:
    entry = make_entry(session_id="", kind="", content="", source="")
    assert entry.session_id == ""


def test_sequence_and_timestamp_bounds_are_inclusive() -> None:
    assert make_entry(sequence=1).sequence == 1
    assert make_entry(sequence=MAX_SEQUENCE).sequence == MAX_SEQUENCE
    assert make_entry(ts_ms=0).ts_ms == 0


# -- Validation on construction ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "type_name"),
    [
        ("sequence", "1", "str"),
        ("sequence", 1.0, "float"),
        ("sequence", None, "NoneType"),
        ("session_id", 1, "int"),
        ("session_id", b"s", "bytes"),
        ("kind", None, "NoneType"),
        ("content", 3.5, "float"),
        ("source", ["w"], "list"),
        ("ts_ms", 1.5, "float"),
        ("ts_ms", "0", "str"),
    ],
)
def test_wrongly_typed_field_raises_type_error_naming_it(
    field: str, value: object, type_name: str
) -> None:
    with pytest.raises(TypeError, match=rf"^{field} must be .*, not {type_name}$"):
        make_entry(**{field: value})


@pytest.mark.parametrize("field", ["sequence", "ts_ms"])
def test_bool_is_not_an_int_field(field: str) -> None:
    with pytest.raises(TypeError, match=rf"^{field} must be int, not bool$"):
        make_entry(**{field: True})


@pytest.mark.parametrize("sequence", [0, -1, MAX_SEQUENCE + 1, 2**70])
def test_sequence_outside_u64_range_raises_value_error(sequence: int) -> None:
    with pytest.raises(ValueError, match="sequence"):
        make_entry(sequence=sequence)


def test_negative_timestamp_raises_value_error() -> None:
    with pytest.raises(ValueError, match="ts_ms"):
        make_entry(ts_ms=-1)


# -- to_dict / from_dict -------------------------------------------------------------------------


def test_to_dict_has_exactly_the_eight_keys_in_order() -> None:
    data = make_entry().to_dict()
    assert tuple(data) == (*FIELDS, "payload", "delivery")
    assert data == {
        "sequence": 7,
        "session_id": "session-a",
        "kind": "tool_result",
        "content": "done",
        "source": "worker-1",
        "ts_ms": 1_700_000_000_000,
        "payload": None,
        "delivery": None,
    }


def test_to_dict_returns_a_fresh_dict() -> None:
    entry = make_entry()
    data = entry.to_dict()
    data["content"] = "tampered"
    assert entry.content == "done"
    assert entry.to_dict() is not entry.to_dict()


def test_from_dict_rebuilds_an_equal_entry() -> None:
    entry = make_entry(sequence=MAX_SEQUENCE, ts_ms=0, session_id="")
    rebuilt = InboxEntry.from_dict(entry.to_dict())
    assert type(rebuilt) is InboxEntry
    assert rebuilt == entry


def test_json_round_trip_preserves_the_entry() -> None:
    entry = make_entry(content='quotes " and \n newlines and ünïcode')
    assert InboxEntry.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry


def test_from_dict_accepts_any_mapping() -> None:
    data = types.MappingProxyType(make_entry().to_dict())
    assert InboxEntry.from_dict(data) == make_entry()


def test_from_dict_leaves_its_argument_alone() -> None:
    data = make_entry().to_dict()
    before = dict(data)
    InboxEntry.from_dict(data)
    assert data == before


@pytest.mark.parametrize("missing", FIELDS)
def test_from_dict_missing_key_raises_value_error_naming_it(missing: str) -> None:
    data = entry_dict()
    del data[missing]
    with pytest.raises(ValueError, match=missing):
        InboxEntry.from_dict(data)


@pytest.mark.parametrize("unknown", ["extra", "Sequence", "seq"])
def test_from_dict_unknown_key_raises_value_error_naming_it(unknown: str) -> None:
    with pytest.raises(ValueError, match=unknown):
        InboxEntry.from_dict(entry_dict(**{unknown: 1}))


def test_from_dict_non_string_key_raises_value_error() -> None:
    data: dict[Any, Any] = entry_dict()
    data[1] = "one"
    with pytest.raises(ValueError, match="unknown"):
        InboxEntry.from_dict(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sequence", "7"),
        ("sequence", 7.0),
        ("sequence", True),
        ("session_id", 5),
        ("kind", None),
        ("content", {"nested": "json"}),
        ("source", ["list"]),
        ("ts_ms", 1.5),
        ("ts_ms", False),
    ],
)
def test_from_dict_wrongly_typed_value_raises_value_error(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        InboxEntry.from_dict(entry_dict(**{field: value}))


@pytest.mark.parametrize(
    ("field", "value"),
    [("sequence", 0), ("sequence", MAX_SEQUENCE + 1), ("ts_ms", -5)],
)
def test_from_dict_out_of_range_value_raises_value_error(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        InboxEntry.from_dict(entry_dict(**{field: value}))


@pytest.mark.parametrize("data", [None, [("sequence", 1)], "sequence", 7])
def test_from_dict_non_mapping_raises_type_error(data: object) -> None:
    with pytest.raises(TypeError, match=r"^data must be a mapping"):
        InboxEntry.from_dict(data)  # type: ignore[arg-type]


# -- Entries made by push behave like entries made by hand --------------------------------------


@pytest.fixture(params=["system clock", "manual clock", "bounded"])
def pushed(request: pytest.FixtureRequest) -> InboxEntry:
    # Each through its own path of push: the SystemClock read inline, and the
    # pushes that must first be admitted (another clock, a bound).
    inbox = {
        "system clock": lambda: Inbox(),
        "manual clock": lambda: Inbox(clock=ManualClock(start_ms=123)),
        "bounded": lambda: Inbox(max_pending=1, overflow="drop_oldest"),
    }[request.param]()
    return inbox.push("s", "k", "c", "src")


def test_pushed_entry_equals_and_hashes_like_a_constructed_one(pushed: InboxEntry) -> None:
    constructed = InboxEntry(1, "s", "k", "c", "src", pushed.ts_ms)
    assert type(pushed) is InboxEntry
    assert pushed == constructed
    assert constructed == pushed
    assert hash(pushed) == hash(constructed)
    assert repr(pushed) == repr(constructed)


def test_pushed_entry_is_immutable(pushed: InboxEntry) -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        pushed.content = "changed"  # type: ignore[misc]
    assert pushed.content == "c"


def test_pushed_entry_survives_copy_and_pickle(pushed: InboxEntry) -> None:
    assert copy.copy(pushed) == pushed
    assert copy.deepcopy(pushed) == pushed
    assert pickle.loads(pickle.dumps(pushed)) == pushed
    assert attrs.evolve(pushed, content="d") == InboxEntry(1, "s", "k", "d", "src", pushed.ts_ms)


def test_pushed_entry_round_trips_through_dict(pushed: InboxEntry) -> None:
    assert InboxEntry.from_dict(pushed.to_dict()) == pushed
