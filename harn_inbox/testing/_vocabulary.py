"""The machine's vocabulary: what it pushes, the predicates it drains with, and their strategies.

Predicates are `Where` values that print as the lambdas they are, so that a
counterexample reads as code; `Judge` and `FailingJudge` wrap one to record
what an inbox asked it, or to make it raise part-way.
"""

from __future__ import annotations

from operator import attrgetter
from typing import TYPE_CHECKING, Any, final

import attrs
from hypothesis import strategies as st

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._entry import InboxEntry

_KINDS = ("tool_result", "progress", "")
_SOURCES = ("worker", "mcp")
_CONTENTS = ("", "ok", "dône ✓")


@final
@attrs.frozen(repr=False)
class Where:
    """A predicate over entries that prints as the lambda it is, for readable counterexamples."""

    expression: str
    test: Callable[[InboxEntry], object] = attrs.field(eq=False)

    def __call__(self, entry: InboxEntry) -> object:
        return self.test(entry)

    def __repr__(self) -> str:
        return f"lambda entry: {self.expression}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # hypothesis prints the steps of a counterexample with its own pretty
        # printer, which spells out attrs classes field by field unless told.
        printer.text(repr(self))


def _field_is(field: str, value: object) -> Where:
    get = attrgetter(field)
    return Where(f"entry.{field} == {value!r}", lambda entry: get(entry) == value)


def _negated(where: Where) -> Where:
    return Where(f"not {where.expression}", lambda entry: not where.test(entry))


def _both(left: Where, right: Where) -> Where:
    return Where(
        f"{left.expression} and {right.expression}",
        lambda entry: left.test(entry) and right.test(entry),
    )


def _either(left: Where, right: Where) -> Where:
    return Where(
        f"{left.expression} or {right.expression}",
        lambda entry: left.test(entry) or right.test(entry),
    )


_ATOMS = (
    Where("True", lambda entry: True),
    *(_field_is("kind", kind) for kind in _KINDS),
    *(_field_is("source", source) for source in _SOURCES),
    *(_field_is("content", content) for content in _CONTENTS),
    # Truthy, not bool: an inbox must go by truth value, not `is True`.
    Where("entry.sequence % 2", lambda entry: entry.sequence % 2),
    Where("entry.sequence % 2 == 0", lambda entry: entry.sequence % 2 == 0),
    Where("entry.content", attrgetter("content")),
    Where("False", lambda entry: False),
)
# Every predicate the kit uses, simplest first (hypothesis shrinks towards the front). One
# draw picks one: each draw costs a stateful step time, and a step's draws are most of it.
_ALL_PREDICATES = (
    *_ATOMS,
    *map(_negated, _ATOMS),
    *(_both(left, right) for left in _ATOMS for right in _ATOMS if left != right),
    *(_either(left, right) for left in _ATOMS for right in _ATOMS if left != right),
)
# Drawn by index rather than with sampled_from(), whose repr lists all of them (117 kB of
# text in the repr of the machine's rule strategy): hypothesis records that repr in an event
# of every test case whose rule draw it retried, so a long run grew by some 0.4 MB a case.
PREDICATES = st.integers(min_value=0, max_value=len(_ALL_PREDICATES) - 1).map(
    _ALL_PREDICATES.__getitem__
)
KIND = st.sampled_from(_KINDS)
SOURCE = st.sampled_from(_SOURCES)
CONTENT = st.sampled_from(_CONTENTS)
#: Wait timeouts in whole milliseconds of the ManualClock: None waits for ever, 0 just looks.
TIMEOUT_MS = st.none() | st.integers(min_value=0, max_value=25)


@final
class Judge:
    """Wraps a predicate and records the entries it was asked about."""

    def __init__(self, where: Where) -> None:
        self.where = where
        self.judged: list[InboxEntry] = []

    def __call__(self, entry: InboxEntry) -> object:
        self.judged.append(entry)
        return self.where.test(entry)


class PredicateFailed(Exception):
    """What the kit's failing predicate raises."""


@final
class FailingJudge:
    """A predicate that answers like *where* until it meets *culprit*, then raises."""

    def __init__(self, where: Where, culprit: InboxEntry) -> None:
        self.where = where
        self.culprit = culprit

    def __call__(self, entry: InboxEntry) -> object:
        if entry == self.culprit:
            raise PredicateFailed(f"the kit's predicate fails on {entry!r}")
        return self.where.test(entry)
