"""Entries with a payload and a delivery class: frozen JSON, its dict shape, copies, requeueing.

A payload is any JSON value, nested; the entry keeps a read-only copy
(`JsonObject`, `JsonArray`) equal to the plain value, so entries stay hashable
and no consumer can change what another sees. ``to_dict`` / ``from_dict`` give
the eight-key shape (and take the old six-key one), and a JSON round trip
rebuilds an equal entry, field for field and type for type.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import hypothesis
import pytest
from hypothesis import strategies as st

import harn_inbox
from harn_inbox import Delivery, Inbox, InboxEntry, JsonArray, JsonObject, ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable

FIELDS = ("sequence", "session_id", "kind", "content", "source", "ts_ms", "payload", "delivery")
OLD_FIELDS = FIELDS[:6]

NESTED: dict[str, Any] = {
    "handle": "call-7",
    "result": [1, 2.5, {"ok": True, "note": None}],
    "tags": [],
}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=16,
)
deliveries = st.sampled_from([None, *Delivery])


def nudge(inbox: Inbox, content: str = "done", **options: Any) -> InboxEntry:
    return inbox.push("s", "tool_result", content, "worker", **options)


def make_entry(**overrides: Any) -> InboxEntry:
    fields: dict[str, Any] = {
        "sequence": 7,
        "session_id": "s",
        "kind": "tool_result",
        "content": "done",
        "source": "worker",
        "ts_ms": 1_700_000_000_000,
        "payload": NESTED,
        "delivery": Delivery.IMMEDIATE,
    }
    fields.update(overrides)
    return InboxEntry(**fields)


def exactly(value: object) -> object:
    """*value* tagged with the type of every part: tells True from 1, 1 from 1.0, 0.0 from -0.0."""
    if isinstance(value, Mapping):
        return ("object", [(key, exactly(item)) for key, item in value.items()])
    if isinstance(value, (list, tuple)):
        return ("array", [exactly(item) for item in value])
    return (type(value).__name__, repr(value))


def is_plain(value: object) -> bool:
    """Whether *value* is plain JSON: dicts, lists and scalars, nothing frozen, all the way down."""
    if type(value) is dict:
        return all(type(key) is str and is_plain(item) for key, item in value.items())
    if type(value) is list:
        return all(is_plain(item) for item in value)
    return value is None or type(value) in (bool, int, float, str)


# -- A payload is any JSON value, kept read-only ------------------------------------------------


@hypothesis.given(payload=json_values, delivery=deliveries)
def test_any_json_payload_drains_as_pushed_and_its_entry_round_trips_exactly(
    payload: object, delivery: Delivery | None
) -> None:
    with Inbox(clock=ManualClock(start_ms=5)) as inbox:
        pushed = nudge(inbox, payload=payload, delivery=delivery)
        (drained,) = inbox.drain("s")
    assert drained is pushed
    assert drained.payload == payload
    assert exactly(drained.payload) == exactly(payload)
    # push stamps its entries its own way, not through InboxEntry's converters.
    rebuilt = InboxEntry.from_dict(json.loads(json.dumps(drained.to_dict())))
    assert rebuilt == drained
    assert exactly(rebuilt.to_dict()) == exactly(drained.to_dict())


def test_payload_defaults_to_none(inbox: Inbox) -> None:
    assert nudge(inbox).payload is None
    assert InboxEntry(1, "s", "k", "c", "src", 0).payload is None


def test_payload_objects_and_arrays_are_frozen_json(inbox: Inbox) -> None:
    payload = nudge(inbox, payload=NESTED).payload
    assert isinstance(payload, JsonObject)
    assert isinstance(payload["result"], JsonArray)
    assert isinstance(payload["result"][2], JsonObject)
    assert isinstance(payload["tags"], JsonArray)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda payload: payload.__setitem__("handle", "x"), id="set-key"),
        pytest.param(lambda payload: payload.__delitem__("handle"), id="delete-key"),
        pytest.param(lambda payload: payload.update(handle="x"), id="update"),
        pytest.param(lambda payload: payload.pop("handle"), id="pop"),
        pytest.param(lambda payload: payload.clear(), id="clear"),
        pytest.param(lambda payload: payload["result"].append(3), id="append-to-array"),
        pytest.param(lambda payload: payload["result"].__setitem__(0, 9), id="set-in-array"),
        pytest.param(lambda payload: payload["result"][2].__setitem__("ok", False), id="nested"),
    ],
)
def test_no_consumer_can_change_a_payload_in_place(
    inbox: Inbox, change: Callable[[Any], object]
) -> None:
    pushed = nudge(inbox, payload=NESTED)
    (seen_by_one,) = inbox.snapshot("s")
    with pytest.raises((TypeError, AttributeError)):
        change(seen_by_one.payload)
    (seen_by_another,) = inbox.drain("s")
    assert seen_by_another.payload == NESTED
    assert seen_by_another == pushed


def test_changing_the_pushed_value_afterwards_changes_no_entry(inbox: Inbox) -> None:
    mine = copy.deepcopy(NESTED)
    nudge(inbox, payload=mine)
    mine["handle"] = "changed"
    mine["result"].append("more")
    mine["result"][2]["ok"] = False
    (entry,) = inbox.drain("s")
    assert entry.payload == NESTED


def test_changing_what_to_dict_returned_changes_no_entry(inbox: Inbox) -> None:
    nudge(inbox, payload=NESTED)
    (seen_by_one,) = inbox.snapshot("s")
    plain = seen_by_one.to_dict()["payload"]
    plain["result"][2]["ok"] = False
    plain["tags"].append("mine")
    (seen_by_another,) = inbox.drain("s")
    assert seen_by_another.payload == NESTED


@pytest.mark.parametrize("payload", [NESTED, [1, [2, {"a": []}]], {}, []], ids=repr)
def test_frozen_payload_equals_the_plain_value_both_ways(payload: object) -> None:
    frozen = make_entry(payload=payload).payload
    assert frozen == payload
    assert payload == frozen
    assert not frozen != payload  # noqa: SIM202 (JsonArray defines __ne__ of its own)
    assert frozen != ["something else"]
    assert frozen != {"something": "else"}


def test_payload_str_and_int_subclasses_are_stored_as_plain_copies() -> None:
    class Handle(str):
        pass

    class Count(int):
        pass

    payload = make_entry(payload={"handle": Handle("h"), "items": [Count(3)]}).payload
    assert type(payload["handle"]) is str
    assert type(payload["items"][0]) is int


def test_entries_with_payloads_are_hashable_and_equal_ones_hash_alike() -> None:
    one = make_entry()
    same = make_entry(payload=copy.deepcopy(NESTED))
    other = make_entry(payload={**NESTED, "handle": "call-8"})
    assert one == same
    assert hash(one) == hash(same)
    assert one != other
    assert {one, same, other} == {one, other}


# -- The dict shape ------------------------------------------------------------------------------


def test_to_dict_gives_the_eight_keys_in_order_with_a_plain_payload() -> None:
    data = make_entry().to_dict()
    assert tuple(data) == FIELDS
    assert data["payload"] == NESTED
    assert is_plain(data["payload"])
    assert data["delivery"] == "immediate"
    assert data["sequence"] == 7


@pytest.mark.parametrize("payload", [NESTED, [[1], {"a": [2]}]], ids=["object", "array"])
def test_to_dict_gives_a_fresh_payload_each_call(payload: object) -> None:
    entry = make_entry(payload=payload)
    first, second = entry.to_dict()["payload"], entry.to_dict()["payload"]
    assert first == second == payload
    assert first is not second
    first.clear()
    assert entry.to_dict()["payload"] == payload


@pytest.mark.parametrize("delivery", [None, *Delivery], ids=str)
def test_from_dict_takes_the_eight_key_shape(delivery: Delivery | None) -> None:
    entry = make_entry(delivery=delivery)
    assert InboxEntry.from_dict(entry.to_dict()) == entry


def test_from_dict_takes_the_old_six_key_shape() -> None:
    data = {name: value for name, value in make_entry().to_dict().items() if name in OLD_FIELDS}
    entry = InboxEntry.from_dict(data)
    assert (entry.payload, entry.delivery) == (None, None)
    assert entry == make_entry(payload=None, delivery=None)


@pytest.mark.parametrize("dropped", ["payload", "delivery"])
def test_from_dict_refuses_a_shape_between_the_two(dropped: str) -> None:
    data = make_entry().to_dict()
    del data[dropped]
    with pytest.raises(ValueError, match=f"missing \\['{dropped}'\\]"):
        InboxEntry.from_dict(data)


@hypothesis.given(
    sequence=st.integers(1, 2**64 - 1),
    texts=st.tuples(st.text(), st.text(), st.text(), st.text()),
    ts_ms=st.integers(min_value=0),
    payload=json_values,
    delivery=deliveries,
)
def test_json_round_trip_rebuilds_the_very_entry(
    sequence: int,
    texts: tuple[str, str, str, str],
    ts_ms: int,
    payload: object,
    delivery: Delivery | None,
) -> None:
    session_id, kind, content, source = texts
    entry = InboxEntry(sequence, session_id, kind, content, source, ts_ms, payload, delivery)
    rebuilt = InboxEntry.from_dict(json.loads(json.dumps(entry.to_dict())))
    assert rebuilt == entry
    assert hash(rebuilt) == hash(entry)
    assert exactly(rebuilt.to_dict()) == exactly(entry.to_dict())


# -- Delivery ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Delivery", "JsonObject", "JsonArray"])
def test_the_new_types_are_public_names(name: str) -> None:
    assert name in harn_inbox.__all__
    assert getattr(harn_inbox, name).__module__ == "harn_inbox"


def test_delivery_classes_are_the_three_names_of_the_harn_runtime() -> None:
    assert [member.value for member in Delivery] == [
        "turn_boundary",
        "immediate",
        "after_next_tool_call",
    ]


class Name(str):
    """A str subclass: a name given this way is stored as the member all the same."""


@pytest.mark.parametrize("member", list(Delivery), ids=str)
@pytest.mark.parametrize(
    "spelled",
    [lambda m: m, lambda m: m.value, lambda m: Name(m.value)],
    ids=["member", "name", "str-subclass-name"],
)
def test_delivery_is_given_as_a_member_or_its_name(
    inbox: Inbox, member: Delivery, spelled: Callable[[Delivery], Any]
) -> None:
    given = spelled(member)
    assert nudge(inbox, delivery=given).delivery is member
    assert make_entry(delivery=given).delivery is member
    assert InboxEntry.from_dict({**make_entry().to_dict(), "delivery": given}).delivery is member
    assert inbox.drain("s")[0].delivery is member


# -- Copies --------------------------------------------------------------------------------------


COPIES = [
    *(
        pytest.param(lambda entry, p=p: pickle.loads(pickle.dumps(entry, p)), id=f"pickle-{p}")
        for p in range(pickle.HIGHEST_PROTOCOL + 1)
    ),
    pytest.param(copy.copy, id="copy"),
    pytest.param(copy.deepcopy, id="deepcopy"),
]


@pytest.mark.parametrize("duplicate", COPIES)
def test_a_copy_of_an_entry_with_payload_is_equal_and_as_read_only(
    inbox: Inbox, duplicate: Callable[[InboxEntry], InboxEntry]
) -> None:
    entry = nudge(inbox, payload=NESTED, delivery="after_next_tool_call")
    copied = duplicate(entry)
    assert copied == entry
    assert hash(copied) == hash(entry)
    assert copied.delivery is Delivery.AFTER_NEXT_TOOL_CALL
    assert exactly(copied.to_dict()) == exactly(entry.to_dict())
    payload: Any = copied.payload
    with pytest.raises(TypeError):
        payload["handle"] = "x"
    with pytest.raises(AttributeError):
        payload["result"].append(3)


@pytest.mark.parametrize("duplicate", COPIES)
def test_a_copy_of_a_drained_entry_with_payload_can_be_requeued(
    inbox: Inbox, duplicate: Callable[[InboxEntry], InboxEntry]
) -> None:
    nudge(inbox, payload=NESTED)
    (first,) = inbox.drain("s")
    newest = nudge(inbox, "newest")
    inbox.requeue_front(duplicate(first))
    assert inbox.snapshot("s") == [first, newest]
    assert inbox.snapshot("s")[0].payload == NESTED


# -- Requeueing: equality decides duplicates ------------------------------------------------------


def test_requeue_front_puts_an_entry_with_payload_back_unchanged(inbox: Inbox) -> None:
    first = nudge(inbox, payload=NESTED, delivery="immediate")
    second = nudge(inbox, "second", payload=[1, 2])
    assert inbox.drain("s") == [first, second]
    inbox.requeue_front(second)
    inbox.requeue_front(first)
    assert inbox.snapshot("s") == [first, second]
    assert inbox.statistics("s").last_sequence == 2


@pytest.mark.parametrize(
    "duplicate",
    [
        pytest.param(lambda entry: entry, id="itself"),
        pytest.param(lambda entry: InboxEntry.from_dict(entry.to_dict()), id="from-dict"),
        pytest.param(lambda entry: pickle.loads(pickle.dumps(entry)), id="unpickled"),
    ],
)
def test_requeue_front_refuses_an_entry_equal_to_a_pending_one(
    inbox: Inbox, duplicate: Callable[[InboxEntry], InboxEntry]
) -> None:
    entry = nudge(inbox, payload=NESTED)
    with pytest.raises(ValueError, match="already pending"):
        inbox.requeue_front(duplicate(entry))
    assert inbox.snapshot("s") == [entry]


@pytest.mark.parametrize(
    "differing",
    [
        pytest.param({"payload": {**NESTED, "handle": "call-8"}}, id="payload"),
        pytest.param({"payload": None}, id="no-payload"),
        pytest.param({"delivery": "turn_boundary"}, id="delivery"),
    ],
)
def test_requeue_front_takes_an_entry_that_differs_only_in_payload_or_delivery(
    inbox: Inbox, differing: dict[str, Any]
) -> None:
    # Two lives of a session on a clock that did not move: the same six fields.
    earlier = nudge(inbox, payload=NESTED, delivery="immediate")
    inbox.drain("s")
    inbox.clear_session("s")
    options = {"payload": NESTED, "delivery": "immediate", **differing}
    later = nudge(inbox, **options)
    assert (later.sequence, later.ts_ms) == (earlier.sequence, earlier.ts_ms)
    inbox.requeue_front(earlier)
    assert inbox.snapshot("s") == [earlier, later]
