"""``python -m harn_inbox``: the command line; its one command, ``demo``, runs a simulation."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from ._demo import BACKEND_NAMES, DEFAULT_PACE, run_demo

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import TextIO


def _pace(text: str) -> float:
    try:
        pace = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not pace >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, not {text!r}")
    return pace


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harn_inbox",
        description="harn_inbox: the per-session inbox of asynchronous nudges for agent runtimes.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run a simulated agent runtime and print its timeline",
        description=(
            "Run a simulated agent runtime: an agent loop drains one session's inbox around a"
            " slow compaction while tool handlers in worker threads, an async progress reporter"
            " and a repository watcher thread push nudges into it. Time is virtual, so each"
            " seed prints the same timeline on every run."
        ),
    )
    demo.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default="trio",
        help="the async framework to run the agent loop on (default: %(default)s)",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=0,
        help="picks the tools, job durations and timings (default: %(default)s)",
    )
    # Wall seconds per virtual second; 0 runs without sleeping (for the test suite).
    demo.add_argument("--pace", type=_pace, default=DEFAULT_PACE, help=argparse.SUPPRESS)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    pace: float | None = None,
) -> int:
    """Run the command line with *argv* (default: ``sys.argv[1:]``); return the exit status.

    The demo's timeline goes to *stdout* (default: ``sys.stdout``). *pace*, if
    given, overrides ``--pace``: wall seconds per virtual second, 0 for none.
    Bad arguments exit through ``argparse`` with status 2; no command prints
    the help to stderr and returns 2. If the reader of the output goes away
    (``| head``), the demo stops writing and ``main`` returns 1.
    """
    parser = _parser()
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        parser.print_help(sys.stderr)
        return 2
    out = sys.stdout if stdout is None else stdout
    try:
        return run_demo(
            arguments.backend, arguments.seed, out, arguments.pace if pace is None else pace
        )
    except BrokenPipeError:
        # The reader went away (``... | head``): end quietly, as command-line tools do. Point
        # stdout at devnull so that the interpreter's last flush does not complain either.
        if out is sys.__stdout__ and out is not None:
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
