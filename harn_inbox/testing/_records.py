"""What the machine saw: each rule records one, the invariants judge it.

Also `Parked`, the machine's note of a wait the model says is parked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from .._entry import InboxEntry
    from .._errors import InboxError
    from ._hosts import Outcome
    from ._vocabulary import PredicateFailed, Where


@attrs.define(eq=False)
class Parked:
    """A wait the model says is parked: who, on which session, and how long it has waited."""

    call: Outcome
    session: str
    predicate: Where | None  # None for wait / wait_sync
    timeout_ms: int | None
    elapsed_ms: int = 0


@attrs.frozen
class Pushed:
    call: str
    clock_ms: int
    returned: InboxEntry | InboxError
    expected: InboxEntry | InboxError


@attrs.frozen
class Pushes:
    pushes: list[Pushed]


@attrs.frozen
class Drained:
    session: str
    returned: list[InboxEntry]
    expected: list[InboxEntry]


@attrs.frozen
class Partitioned:
    session: str
    predicate: Where
    before: list[InboxEntry]
    taken: list[InboxEntry]
    kept: list[InboxEntry]
    judged: list[InboxEntry]


@attrs.frozen
class Aborted:
    session: str
    predicate: Where
    culprit: InboxEntry
    before: list[InboxEntry]
    outcome: list[InboxEntry] | PredicateFailed
    after: list[InboxEntry]


@attrs.frozen
class Requeued:
    entry: InboxEntry
    expected: ValueError | None
    raised: ValueError | None
    after: list[InboxEntry] | None  # None: a parked wait_for took it at once


@attrs.frozen
class Cleared:
    session: str
    returned: int
    expected: int


Seen = Pushes | Drained | Partitioned | Aborted | Requeued | Cleared | None
