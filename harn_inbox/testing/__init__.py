"""The conformance kit: check `Inbox`, or an inbox of your own, against a reference model.

This module runs on hypothesis, an optional dependency: install the ``testing``
extra (``pip install 'harn-inbox[testing]'``) to import it.

The kit drives an inbox with random sequences of operations over several
sessions (pushes, drains, selective drains, requeues, clears, clock moves, and
waits parked in threads, under trio and under asyncio), checks every result
and every intermediate state against `InboxModel`, a plain reference model of
the contract, and ends each run by closing the inbox. When the inbox strays,
hypothesis shrinks the run to a minimal program of steps and reports it.

Hand the kit a *factory*: a callable of no arguments returning a new, empty
inbox and the `harn_inbox.ManualClock` it was built with. The kit moves that
clock to predict stamps and to end timed waits, so no verdict depends on the
wall clock. In a pytest suite::

    from harn_inbox import Inbox, ManualClock
    from harn_inbox.testing import run_conformance


    def make_inbox():
        clock = ManualClock(start_ms=1_000_000)
        return Inbox(clock=clock), clock


    def test_inbox_conforms():
        run_conformance(make_inbox)

The same works for any object with `Inbox`'s methods (see `InboxLike`): a
wrapper that adds persistence or metrics, or a new implementation. For a
store shared between processes, `SharedInboxes` drives several inboxes on
one store as one, against one model.
"""

try:
    # Fail here, with a message that says what to install, not deep inside the kit.
    import hypothesis.stateful  # noqa: F401
except ImportError as error:  # pragma: no cover
    raise ImportError(
        "harn_inbox.testing needs hypothesis; install it with the testing extra: "
        "pip install 'harn-inbox[testing]'"
    ) from error

from .._protocol import InboxLike
from ._entry_points import make_conformance_machine, run_conformance
from ._model import InboxModel
from ._shared import SharedInboxes

__all__ = [
    "InboxLike",
    "InboxModel",
    "SharedInboxes",
    "make_conformance_machine",
    "run_conformance",
]

# Say harn_inbox.testing.InboxModel, not harn_inbox.testing._model.InboxModel, in reprs,
# tracebacks and docs.
for _name in __all__:
    if _name != "InboxLike":  # harn_inbox.InboxLike, re-exported here
        globals()[_name].__module__ = __name__
del _name
