"""``python -m harn_inbox``: the command line, one argparse subcommand per command.

``demo`` runs a simulated agent runtime and prints its timeline; ``inspect``,
``push`` and ``drain`` act on a durable store (see ``_cli.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from ._cli import add_store_commands
from ._demo import BACKENDS, DEFAULT_PACE, run_demo

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


def _demo(arguments: argparse.Namespace, out: TextIO) -> int:
    return run_demo(arguments.backend, arguments.seed, out, arguments.pace)


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
            "Run a simulated agent runtime: an agent loop runs Harn-style turns of one session"
            " (feedback drained at turn start and after a slow compaction, injections after"
            " the next tool call, tool results taken by handle) while tool handlers in worker"
            " threads, an MCP progress reporter task and a repository watcher thread push"
            " into its inbox. Time is virtual, so each seed prints the same timeline on every"
            " run."
        ),
    )
    demo.add_argument(
        "--backend",
        choices=tuple(BACKENDS),
        default="trio",
        help="the async framework to run the agent loop on (default: %(default)s)",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=0,
        help="picks the tools, durations and timings (default: %(default)s)",
    )
    # Wall seconds per virtual second; 0 runs without sleeping (for the test suite).
    demo.add_argument("--pace", type=_pace, default=DEFAULT_PACE, help=argparse.SUPPRESS)
    demo.set_defaults(run=_demo)
    add_store_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Run the command line with *argv* (default: ``sys.argv[1:]``); return the exit status.

    A command's output goes to *stdout* (default: ``sys.stdout``). Bad arguments
    exit through ``argparse`` with status 2; no command prints the help to
    stderr and returns 2. If the reader of the output goes away (``| head``),
    the command stops writing and ``main`` returns 1.
    """
    parser = _parser()
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        parser.print_help(sys.stderr)
        return 2
    out = sys.stdout if stdout is None else stdout
    try:
        status: int = arguments.run(arguments, out)
    except BrokenPipeError:
        # The reader went away (``... | head``): end quietly, as command-line tools do. Point
        # stdout at devnull so that the interpreter's last flush does not complain either.
        if out is sys.__stdout__ and out is not None:
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
