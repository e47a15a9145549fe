"""Bad input to issue #14's arguments: a TypeError or ValueError naming it, and nothing changed.

Each refused call is made on an inbox holding entries with every control
(dedupe key, coalesce key, expiry); the session's snapshot, statistics and the
list of sessions must read the same afterwards, and the refused push's own
keys must not have been recorded.
"""

from __future__ import annotations

import enum
import functools
import math
from typing import TYPE_CHECKING, Any

import hypothesis
import pytest
from hypothesis import strategies as st

from harn_inbox import Delivery, Inbox, ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Backend

    from harn_inbox import InboxEntry

NAN, INF = math.nan, math.inf

#: The keyword arguments of a push that would change the inbox if the push went through:
#: the coalesce key replaces the pending "c" entry, the dedupe key is recorded.
VALID_OPTIONS: dict[str, Any] = {
    "payload": {"ok": [1, 2]},
    "delivery": "immediate",
    "dedupe_key": "fresh",
    "coalesce_key": "c",
    "expires_in": 30,
}


def fill(inbox: Inbox) -> None:
    inbox.push("s", "tool_result", "plain", "worker")
    inbox.push("s", "tool_result", "keyed", "worker", dedupe_key="k", payload=[1])
    inbox.push("s", "progress", "coalescing", "worker", coalesce_key="c", delivery="immediate")
    inbox.push("s", "reminder", "expiring", "worker", expires_in=60)
    inbox.reserve_sequence("s")


def state(inbox: Inbox) -> object:
    return inbox.snapshot("s"), inbox.statistics("s"), inbox.sessions()


@pytest.fixture
def filled(inbox: Inbox) -> Inbox:
    fill(inbox)
    return inbox


def refuses(
    inbox: Inbox, call: Callable[[], object], error: type[Exception], name: str
) -> pytest.ExceptionInfo[Exception]:
    """Check that *call* raises *error* naming *name*, and that the inbox is as it was."""
    before = state(inbox)
    with pytest.raises(error, match=name) as raised:
        call()
    assert state(inbox) == before
    return raised


def push_with(inbox: Inbox, **options: Any) -> InboxEntry:
    return inbox.push("s", "tool_result", "bad", "worker", **{**VALID_OPTIONS, **options})


def assert_push_keys_unrecorded(inbox: Inbox) -> None:
    """The refused push's dedupe key is unknown: a push with it now stores a new entry."""
    last = inbox.statistics("s").last_sequence
    assert push_with(inbox, dedupe_key="fresh").sequence == last + 1


def list_cycle() -> list[Any]:
    cycle: list[Any] = [1]
    cycle.append(cycle)
    return cycle


def nested_cycle() -> dict[str, Any]:
    inner: dict[str, Any] = {"ok": 1}
    inner["again"] = {"list": [inner]}
    return {"a": inner}


class OtherDelivery(enum.Enum):
    IMMEDIATE = "immediate"


async def async_predicate(entry: InboxEntry) -> bool:
    return True


class AsyncCallable:
    async def __call__(self, entry: InboxEntry) -> bool:
        return True


# -- push: payload -------------------------------------------------------------------------------

BAD_PAYLOADS = [
    pytest.param({1, 2}, TypeError, "payload must be a JSON value", id="set"),
    pytest.param(frozenset(), TypeError, "payload must be a JSON value", id="frozenset"),
    pytest.param(b"bytes", TypeError, "payload must be a JSON value", id="bytes"),
    pytest.param(bytearray(b"x"), TypeError, "payload must be a JSON value", id="bytearray"),
    pytest.param(object(), TypeError, "payload must be a JSON value", id="object"),
    pytest.param(1 + 2j, TypeError, "payload must be a JSON value", id="complex"),
    pytest.param(iter([1]), TypeError, "payload must be a JSON value", id="iterator"),
    pytest.param(NAN, ValueError, "payload must be a finite number", id="nan"),
    pytest.param(INF, ValueError, "payload must be a finite number", id="inf"),
    pytest.param(-INF, ValueError, "payload must be a finite number", id="-inf"),
    pytest.param({1: "x"}, TypeError, "payload must have str keys", id="int-key"),
    pytest.param({None: "x"}, TypeError, "payload must have str keys", id="none-key"),
    pytest.param({("a",): 1}, TypeError, "payload must have str keys", id="tuple-key"),
    pytest.param({"a": [0, 1, b""]}, TypeError, r"payload\['a'\]\[2\] must be", id="nested"),
    pytest.param({"a": {"b": NAN}}, ValueError, r"payload\['a'\]\['b'\] must be", id="nested-nan"),
    pytest.param([{"k": {2: 0}}], TypeError, r"payload\[0\]\['k'\] must have str", id="deep-key"),
    pytest.param(list_cycle(), ValueError, r"payload\[1\] contains itself", id="list-cycle"),
    pytest.param(
        nested_cycle(), ValueError, r"payload\['a'\]\['again'\]\['list'\]\[0\]", id="dict-cycle"
    ),
]


@pytest.mark.parametrize(("payload", "error", "message"), BAD_PAYLOADS)
def test_push_refuses_a_payload_that_is_not_json(
    filled: Inbox, payload: object, error: type[Exception], message: str
) -> None:
    refuses(filled, lambda: push_with(filled, payload=payload), error, message)
    assert_push_keys_unrecorded(filled)


def json_with_one_bad_part(bad: st.SearchStrategy[object]) -> st.SearchStrategy[tuple[Any, str]]:
    """JSON values holding one part drawn from *bad*, with the path to it (``['a'][2]``)."""
    fine = st.none() | st.booleans() | st.integers() | st.text(max_size=3)

    def wrapped(inner: st.SearchStrategy[tuple[Any, str]]) -> st.SearchStrategy[tuple[Any, str]]:
        in_object = st.tuples(
            inner, st.text(max_size=3), st.dictionaries(st.text(max_size=3), fine, max_size=3)
        ).map(lambda t: ({**{k: v for k, v in t[2].items() if k != t[1]}, t[1]: t[0][0]},
                         f"[{t[1]!r}]{t[0][1]}"))  # fmt: skip
        in_array = st.tuples(inner, st.lists(fine, max_size=3), st.lists(fine, max_size=3)).map(
            lambda t: ([*t[1], t[0][0], *t[2]], f"[{len(t[1])}]{t[0][1]}")
        )
        return in_object | in_array

    return st.recursive(bad.map(lambda value: (value, "")), wrapped, max_leaves=6)


NOT_JSON = st.sampled_from([NAN, INF, -INF]) | st.builds(set) | st.binary() | st.builds(object)


@hypothesis.given(bad=json_with_one_bad_part(NOT_JSON))
def test_push_names_the_path_to_the_part_of_a_payload_that_is_not_json(
    bad: tuple[Any, str],
) -> None:
    payload, path = bad
    with Inbox(clock=ManualClock()) as inbox:
        fill(inbox)
        raised = refuses(inbox, lambda: push_with(inbox, payload=payload), Exception, "payload")
        assert isinstance(raised.value, (TypeError, ValueError))
        assert str(raised.value).startswith(f"payload{path} must be")


# -- push: the other keyword arguments -----------------------------------------------------------

BAD_PUSH_OPTIONS = [
    pytest.param("delivery", "soon", ValueError, id="delivery-unknown-name"),
    pytest.param("delivery", "IMMEDIATE", ValueError, id="delivery-wrong-case"),
    pytest.param("delivery", "Delivery.IMMEDIATE", ValueError, id="delivery-qualified"),
    pytest.param("delivery", "", ValueError, id="delivery-empty"),
    pytest.param("delivery", 1, TypeError, id="delivery-int"),
    pytest.param("delivery", True, TypeError, id="delivery-bool"),
    pytest.param("delivery", b"immediate", TypeError, id="delivery-bytes"),
    pytest.param("delivery", ["immediate"], TypeError, id="delivery-list"),
    pytest.param("delivery", OtherDelivery.IMMEDIATE, TypeError, id="delivery-other-enum"),
    pytest.param("delivery", Delivery, TypeError, id="delivery-the-enum-class"),
    pytest.param("expires_in", -1, ValueError, id="expires_in-negative"),
    pytest.param("expires_in", -0.001, ValueError, id="expires_in-slightly-negative"),
    pytest.param("expires_in", -INF, ValueError, id="expires_in-minus-infinity"),
    pytest.param("expires_in", NAN, ValueError, id="expires_in-nan"),
    pytest.param("expires_in", "5", TypeError, id="expires_in-str"),
    pytest.param("expires_in", True, TypeError, id="expires_in-bool"),
    pytest.param("expires_in", [5], TypeError, id="expires_in-list"),
    *(
        pytest.param(key, value, error, id=f"{key}-{label}")
        for key in ("dedupe_key", "coalesce_key")
        for label, value, error in [
            ("empty", "", ValueError),
            ("int", 1, TypeError),
            ("bytes", b"k", TypeError),
            ("bool", False, TypeError),
            ("list", ["k"], TypeError),
        ]
    ),
]


@pytest.mark.parametrize(("name", "value", "error"), BAD_PUSH_OPTIONS)
def test_push_refuses_a_bad_control_by_name(
    filled: Inbox, name: str, value: object, error: type[Exception]
) -> None:
    refuses(filled, lambda: push_with(filled, **{name: value}), error, f"^{name} must")
    assert_push_keys_unrecorded(filled)


DELIVERY_NAMES = {member.value for member in Delivery}


@hypothesis.given(name=st.text().filter(lambda text: text not in DELIVERY_NAMES))
def test_push_refuses_every_str_but_the_three_delivery_names(name: str) -> None:
    with Inbox(clock=ManualClock()) as inbox:
        fill(inbox)
        refuses(inbox, lambda: push_with(inbox, delivery=name), ValueError, "^delivery must")


NEGATIVE_OR_NAN = (
    st.floats(max_value=0, exclude_max=True) | st.integers(max_value=-1) | st.just(NAN)
)


@hypothesis.given(seconds=NEGATIVE_OR_NAN)
def test_push_refuses_every_negative_or_nan_expires_in(seconds: float) -> None:
    with Inbox(clock=ManualClock()) as inbox:
        fill(inbox)
        refuses(inbox, lambda: push_with(inbox, expires_in=seconds), ValueError, "^expires_in")


# -- Inbox(dedupe_window=...) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "error"),
    [
        (-1, ValueError),
        (-0.001, ValueError),
        (NAN, ValueError),
        (INF, ValueError),
        (-INF, ValueError),
        ("600", TypeError),
        (True, TypeError),
        (None, TypeError),
        ([600], TypeError),
    ],
    ids=repr,
)
def test_inbox_refuses_a_bad_dedupe_window(window: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"^dedupe_window must"):
        Inbox(dedupe_window=window)  # type: ignore[arg-type]


@hypothesis.given(window=NEGATIVE_OR_NAN | st.just(INF))
def test_inbox_refuses_every_negative_nan_or_infinite_dedupe_window(window: float) -> None:
    with pytest.raises(ValueError, match=r"^dedupe_window must"):
        Inbox(dedupe_window=window)


# -- revoke, reserve_sequence, claim, wait_any_sync ----------------------------------------------

#: What wait_any and wait_any_sync refuse as *session_ids*, and how.
BAD_SESSION_IDS: list[tuple[str, Any, type[Exception]]] = [
    ("str", "ab", TypeError),
    ("none", None, TypeError),
    ("int", 5, TypeError),
    ("empty-list", [], ValueError),
    ("empty-tuple", (), ValueError),
    ("empty-iterator", iter(()), ValueError),  # empty however often it is read
    ("int-item", ["a", 1], TypeError),
    ("none-item", ["a", None], TypeError),
    ("bytes-item", [b"a"], TypeError),
]

BAD_SYNC_CALLS: list[Any] = [
    *(
        pytest.param(
            lambda inbox, value=value: inbox.revoke("s", value), error, "^sequence must", id=label
        )
        for label, value, error in [
            ("revoke-str", "1", TypeError),
            ("revoke-float", 1.0, TypeError),
            ("revoke-bool", True, TypeError),
            ("revoke-none", None, TypeError),
            ("revoke-zero", 0, ValueError),
            ("revoke-negative", -1, ValueError),
            ("revoke-past-u64", 2**64, ValueError),
        ]
    ),
    pytest.param(lambda inbox: inbox.revoke(1, 1), TypeError, "^session_id", id="revoke-sid"),
    pytest.param(
        lambda inbox: inbox.reserve_sequence(b"s"), TypeError, "^session_id", id="reserve-sid"
    ),
    *(
        pytest.param(lambda inbox, p=p: inbox.claim("s", p), TypeError, "^predicate", id=label)
        for label, p in [
            ("claim-int", 1),
            ("claim-str", "content"),
            ("claim-async-def", async_predicate),
            ("claim-async-call", AsyncCallable()),
            ("claim-async-partial", functools.partial(async_predicate)),
        ]
    ),
    pytest.param(lambda inbox: inbox.claim(None), TypeError, "^session_id", id="claim-sid"),
    *(
        pytest.param(
            lambda inbox, ids=ids: inbox.wait_any_sync(ids, timeout=0),
            error,
            "^session_ids must",
            id=f"wait_any_sync-{label}",
        )
        for label, ids, error in BAD_SESSION_IDS
    ),
]


@pytest.mark.parametrize(("call", "error", "name"), BAD_SYNC_CALLS)
def test_a_bad_argument_is_refused_by_name_and_changes_nothing(
    filled: Inbox, call: Callable[[Inbox], object], error: type[Exception], name: str
) -> None:
    refuses(filled, lambda: call(filled), error, name)


def test_a_claim_whose_predicate_returns_an_awaitable_takes_nothing(filled: Inbox) -> None:
    claim = filled.claim("s", lambda entry: async_predicate(entry))
    refuses(filled, claim.__enter__, TypeError, "predicate returned an awaitable")


# -- wait_for(limit=) and wait_any, on both backends ---------------------------------------------

BAD_ASYNC_CALLS: list[Any] = [
    *(
        pytest.param(
            lambda inbox, limit=limit: inbox.wait_for("s", bool, timeout=0, limit=limit),
            error,
            "^limit must",
            id=f"wait_for-limit-{label}",
        )
        for label, limit, error in [
            ("zero", 0, ValueError),
            ("negative", -1, ValueError),
            ("huge-negative", -(2**70), ValueError),
            ("float", 1.0, TypeError),
            ("str", "1", TypeError),
            ("true", True, TypeError),
            ("false", False, TypeError),
        ]
    ),
    *(
        pytest.param(
            lambda inbox, ids=ids: inbox.wait_any(ids, timeout=0),
            error,
            "^session_ids must",
            id=f"wait_any-{label}",
        )
        for label, ids, error in BAD_SESSION_IDS
    ),
]


@pytest.mark.parametrize(("call", "error", "name"), BAD_ASYNC_CALLS)
def test_a_bad_argument_of_a_wait_is_refused_by_name_and_changes_nothing(
    backend: Backend,
    filled: Inbox,
    call: Callable[[Inbox], Any],
    error: type[Exception],
    name: str,
) -> None:
    refuses(filled, lambda: backend.run(call, filled), error, name)
    assert filled.waiter_count("s") == 0
