"""A child process for the SQLite store's tests: ``python sqlite_child.py MODE PATH``.

It opens ``SqliteStore(PATH)`` and reports on stdout, one line per event,
each written and flushed only after what it reports has returned (so a line
the parent reads is a promise the store made). A line cut short by a kill is
no report. The modes:

- ``hold``: open, print ``ready``, keep the file open until stdin closes.
- ``try-open``: try to open; print ``opened``, or ``StoreError: <message>``.
- ``push``: print ``ready``; threads push into sessions ``s0`` and ``s1``
  (two threads each) and print ``P <session> <sequence> <content>`` per push.
- ``drain``: print ``ready``; one pusher and one drainer per session; the
  drainer prints ``D <session> <sequence>...`` after each non-empty drain.
- ``claim``: print ``ready``; one pusher and one claimer per session; the
  claimer prints ``C <session> <sequence>...`` inside the claim's block, sleeps
  there a little, and prints ``S <session> <sequence>...`` once the block ended
  (the claim settled).

The working modes run until killed (the parent's SIGKILL), or exit by
themselves after `LIFETIME_SECONDS` if the parent is gone.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from functools import partial
from typing import TYPE_CHECKING

from harn_inbox import Inbox, StoreError
from harn_inbox.stores import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Callable

#: A child nobody kills (the parent died) stops by itself after this long.
LIFETIME_SECONDS = 60.0
#: How long a claimer holds its entries in the block: where most claim kills land.
CLAIM_HOLD_SECONDS = 0.02
SESSIONS = ("s0", "s1")

_report_lock = threading.Lock()


def report(*fields: object) -> None:
    """One line on stdout, whole and flushed (threads do not interleave)."""
    line = " ".join(map(str, fields)) + "\n"
    with _report_lock:
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except BrokenPipeError:  # the parent is gone: nobody to report to
            os._exit(0)


def pusher(inbox: Inbox, session_id: str, name: str) -> None:
    number = 0
    while True:
        content = f"{os.getpid()}-{name}-{number}"
        entry = inbox.push(session_id, "tool_result", content, name)
        report("P", session_id, entry.sequence, content)
        number += 1


def drainer(inbox: Inbox, session_id: str) -> None:
    while True:
        drained = inbox.drain(session_id)
        if drained:
            report("D", session_id, *(entry.sequence for entry in drained))
        else:
            inbox.wait_sync(session_id, timeout=0.05)


def claimer(inbox: Inbox, session_id: str) -> None:
    while True:
        with inbox.claim(session_id) as claimed:
            if claimed:
                report("C", session_id, *(entry.sequence for entry in claimed))
                time.sleep(CLAIM_HOLD_SECONDS)
        if claimed:
            report("S", session_id, *(entry.sequence for entry in claimed))
        else:
            inbox.wait_sync(session_id, timeout=0.05)


def workers(mode: str, inbox: Inbox) -> list[Callable[[], None]]:
    """The threads' bodies for a working *mode*."""
    if mode == "push":
        return [partial(pusher, inbox, sid, f"t{n}-{sid}") for sid in SESSIONS for n in range(2)]
    consumer = drainer if mode == "drain" else claimer
    return [
        work
        for sid in SESSIONS
        for work in (partial(pusher, inbox, sid, f"t-{sid}"), partial(consumer, inbox, sid))
    ]


def main(mode: str, path: str) -> None:
    if mode == "try-open":
        try:
            SqliteStore(path).close()
        except StoreError as error:
            report(f"StoreError: {error}")
        else:
            report("opened")
        return
    store = SqliteStore(path)
    inbox = Inbox(store=store)
    report("ready")
    if mode == "hold":
        sys.stdin.read()
        store.close()
        return
    for body in workers(mode, inbox):
        threading.Thread(target=body, daemon=True).start()
    time.sleep(LIFETIME_SECONDS)
    os._exit(3)  # nobody killed us: the parent is gone


if __name__ == "__main__":
    main(*sys.argv[1:])
