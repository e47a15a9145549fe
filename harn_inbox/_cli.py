"""The operator's commands of ``python -m harn_inbox``: ``inspect``, ``push`` and ``drain`` a store.

``STORE`` names a durable store: a path is a `SqliteStore` file, a
``redis://`` (``rediss://``, ``unix://``) URL a `RedisStore`, with
``--namespace`` (default ``harn_inbox``). The store is opened for the one
command and closed after it. A file that an inbox has open is refused (one
owner at a time), so on SQLite these commands act on a store whose runtime is
stopped; on Redis they act on the live deployment, as one more process
sharing its sessions (a push wakes its waiters, a drain takes entries from
its consumers). Output is JSON lines: one session, or one entry, a line.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import InboxError
from ._inbox import Inbox
from .stores import RedisStore, SqliteStore

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import TextIO

    from ._entry import InboxEntry

#: What a STORE argument starts with when it names a Redis server.
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_STORE_HELP = "the store: a SQLite file's path, or a redis:// URL"


def add_store_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``inspect``, ``push`` and ``drain`` to the command line's subcommands."""
    inspect = commands.add_parser(
        "inspect",
        help="list a store's sessions with their pending counts, or one session's entries",
        description="Print each session with entries pending (JSON lines: session_id, pending,"
        " last_sequence), or with SESSION, that session's pending entries as JSON lines.",
    )
    inspect.add_argument("store", metavar="STORE", help=_STORE_HELP)
    inspect.add_argument("session", metavar="SESSION", nargs="?", help="one session to show")
    _add_namespace(inspect)
    inspect.set_defaults(run=run_store_command)
    push = commands.add_parser(
        "push",
        help="push one entry into a session of a store",
        description="Push an entry and print it, stamped, as a JSON line.",
    )
    push.add_argument("store", metavar="STORE", help=_STORE_HELP)
    for name in ("session", "kind", "content", "source"):
        push.add_argument(name, metavar=name.upper())
    push.add_argument(
        "--payload", metavar="JSON", type=_json_value, help="structured data for the entry"
    )
    _add_namespace(push)
    push.set_defaults(run=run_store_command)
    drain = commands.add_parser(
        "drain",
        help="take every pending entry of a session of a store",
        description="Take the session's pending entries and print them as JSON lines.",
    )
    drain.add_argument("store", metavar="STORE", help=_STORE_HELP)
    drain.add_argument("session", metavar="SESSION")
    _add_namespace(drain)
    drain.set_defaults(run=run_store_command)


def _add_namespace(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--namespace",
        default="harn_inbox",
        help="a Redis store's namespace (default: harn_inbox); ignored for a SQLite file",
    )


def run_store_command(arguments: argparse.Namespace, out: TextIO) -> int:
    """Run ``inspect``, ``push`` or ``drain``; return the exit status (1 if the store refused)."""
    try:
        with _opened(
            arguments.store, arguments.namespace, must_exist=arguments.command != "push"
        ) as inbox:
            if arguments.command == "inspect":
                if arguments.session is None:
                    for session_id in sorted(inbox.sessions()):
                        stats = inbox.statistics(session_id)
                        _print(
                            out,
                            {
                                "session_id": session_id,
                                "pending": stats.pending,
                                "last_sequence": stats.last_sequence,
                            },
                        )
                else:
                    _print_entries(out, inbox.snapshot(arguments.session))
            elif arguments.command == "push":
                entry = inbox.push(
                    arguments.session,
                    arguments.kind,
                    arguments.content,
                    arguments.source,
                    payload=arguments.payload,
                )
                _print_entries(out, [entry])
            else:
                _print_entries(out, inbox.drain(arguments.session))
    except (InboxError, TypeError, ValueError) as error:
        print(f"python -m harn_inbox {arguments.command}: {error}", file=sys.stderr)
        return 1
    return 0


@contextmanager
def _opened(store: str, namespace: str, *, must_exist: bool) -> Iterator[Inbox]:
    if store.startswith(_REDIS_SCHEMES):
        with RedisStore(store, namespace=namespace) as redis_store:
            inbox = Inbox(store=redis_store)
            try:
                yield inbox
            finally:
                inbox.close()
        return
    path = Path(store)
    if must_exist and not path.exists():
        raise ValueError(f"no store at {store!r}")
    with SqliteStore(path) as sqlite_store:
        inbox = Inbox(store=sqlite_store)
        try:
            yield inbox
        finally:
            inbox.close()


def _print_entries(out: TextIO, entries: list[InboxEntry]) -> None:
    for entry in entries:
        _print(out, entry.to_dict())


def _print(out: TextIO, value: object) -> None:
    out.write(json.dumps(value, ensure_ascii=False) + "\n")


def _json_value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
