"""harn_inbox: the per-session inbox of asynchronous nudges for agent runtimes.

Producers anywhere (threads, trio or asyncio tasks) `Inbox.push` entries into a
session's inbox; the agent loop drains them at turn boundaries or waits for
them, under trio or asyncio. Where the sessions live is the inbox's store
(`harn_inbox.stores`).
"""

from ._batches import Batches
from ._claim import Claim
from ._clock import Clock, ManualClock, SystemClock
from ._entry import Delivery, InboxEntry
from ._errors import InboxClosed, InboxError, InboxFull, StoreError
from ._inbox import Inbox
from ._json import JsonArray, JsonObject
from ._protocol import InboxLike
from ._statistics import SessionStatistics

__all__ = [
    "Batches",
    "Claim",
    "Clock",
    "Delivery",
    "Inbox",
    "InboxClosed",
    "InboxEntry",
    "InboxError",
    "InboxFull",
    "InboxLike",
    "JsonArray",
    "JsonObject",
    "ManualClock",
    "SessionStatistics",
    "StoreError",
    "SystemClock",
]

# Say harn_inbox.Inbox, not harn_inbox._inbox.Inbox, in reprs, tracebacks and docs.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
