"""``python -m benchmarks.push_ab [A] [B]``: the push of B against the push of A, paired.

For iterating on the push path. A and B are each a git revision (its
``harn_inbox/`` extracted and imported beside the working tree's, see
`benchmarks.revisions`) or ``.`` for the working tree, optionally followed by
``+VARIANT``: the same with one trick taken out (see `benchmarks.tricks`).
By default A is the commit before the redesign and B the working tree.

Timing (the default): rounds of *ops* pushes, A and B alternating which goes
first, the collector paused; the result is the median over rounds of B's
round divided by A's round in the same pair, with the interquartile range of
those ratios. On a shared machine, run it when nothing else is.

``--instructions``: the same push loop run under ``valgrind --tool=callgrind``,
once with *pushes* pushes and once with none; the difference over *pushes* is
the instructions per push (a drain after every 1,000 included, the collector
off). Deterministic, so it holds on a busy machine, but it counts
instructions, not cache misses or branch mispredictions: confirm a change
with timing before keeping it.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import statistics
import subprocess
import sys
from typing import TYPE_CHECKING

from . import revisions
from .measure import SESSION, percentile, time_pushes
from .tricks import VARIANTS, VariantUnavailable, push_round, taken_out

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from .tricks import Variant

#: Pushes between two drains, in both modes.
BLOCK = 1_000


class Side:
    """One side of the comparison: a package (revision or working tree) and maybe a variant."""

    def __init__(self, spec: str) -> None:
        revision, _, variant = spec.partition("+")
        self.spec = spec
        self.package = revisions.package(revision or ".")
        if variant and variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
        self.variant: Variant | None = VARIANTS[variant] if variant else None
        self.label = self.package.label + (f" +{variant}" if variant else "")

    def module(self) -> ModuleType:
        return self.package.module()

    def round(self, ops: int) -> Callable[[], float]:
        return push_round(self.module(), self.variant, ops)


def timed(a: Side, b: Side, rounds: int, ops: int) -> None:
    round_a, round_b = a.round(ops), b.round(ops)
    samples_a: list[float] = []
    samples_b: list[float] = []
    gc.collect()
    gc.disable()
    try:
        for index in range(rounds):
            if index % 2:
                samples_a.append(round_a())
                samples_b.append(round_b())
            else:
                samples_b.append(round_b())
                samples_a.append(round_a())
    finally:
        gc.enable()
    ratios = sorted(mine / theirs for mine, theirs in zip(samples_b, samples_a, strict=True))
    print(f"push A/B, {rounds} rounds of {ops:,} pushes, alternating; ns per push (median)")
    for name, side, samples in (("A", a, samples_a), ("B", b, samples_b)):
        ordered = sorted(samples)
        print(
            f"  {name}  {side.label:<40} {statistics.median(ordered):>8,.0f} ns"
            f"   (p25-p75 {percentile(ordered, 25):,.0f} - {percentile(ordered, 75):,.0f})"
        )
    print(
        f"  B/A paired ratio {statistics.median(ratios):.3f}x"
        f"   (p25-p75 of the round ratios {percentile(ratios, 25):.3f}x"
        f" - {percentile(ratios, 75):.3f}x)"
    )


def instructions(a: Side, b: Side, pushes: int) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind on PATH (apt-get install valgrind)")
    print(f"push A/B, instructions per push under callgrind ({pushes:,} pushes against none)")
    counts = {}
    for name, side in (("A", a), ("B", b)):
        counts[name] = (_instructions(side.spec, pushes) - _instructions(side.spec, 0)) / pushes
        print(f"  {name}  {side.label:<40} {counts[name]:>8,.0f} instructions", flush=True)
    print(f"  B/A {counts['B'] / counts['A']:.3f}x")


def _instructions(spec: str, pushes: int) -> int:
    """What callgrind counts for a child process that loads *spec* and pushes *pushes* times."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.push_ab",
        "--count-pushes",
        spec,
        str(pushes),
    ]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    finished = subprocess.run(
        command, cwd=revisions.ROOT, capture_output=True, text=True, env=environment, check=False
    )
    found = re.search(r"Collected : (\d+)", finished.stderr)
    if finished.returncode or found is None:
        raise SystemExit(f"callgrind failed for {spec!r}:\n{finished.stderr[-2_000:]}")
    return int(found.group(1))


def count_pushes(spec: str, pushes: int) -> None:
    """The child of `--instructions`: *pushes* pushes, a drain after every `BLOCK`."""
    side = Side(spec)
    module = side.module()
    inbox = module.Inbox()
    drain = inbox.drain
    gc.disable()
    with taken_out(side.variant, module):
        for _ in range(pushes // BLOCK):
            time_pushes(inbox.push, BLOCK)
            drain(SESSION)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.push_ab",
        description="The push of B against the push of A: paired timing or callgrind counts.",
        epilog="Variants: "
        + "; ".join(f"+{name}: {variant.description}" for name, variant in VARIANTS.items()),
    )
    parser.add_argument(
        "a",
        nargs="?",
        default=revisions.BEFORE_REDESIGN,
        metavar="A",
        help=f"REVISION[+VARIANT] or .[+VARIANT] (default {revisions.BEFORE_REDESIGN}, "
        "the commit before the redesign)",
    )
    parser.add_argument(
        "b", nargs="?", default=".", metavar="B", help="the same (default ., the working tree)"
    )
    parser.add_argument("--rounds", type=int, default=400, help="timing rounds (default 400)")
    parser.add_argument(
        "--ops", type=int, default=BLOCK, help=f"pushes per round (default {BLOCK:,})"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions under valgrind's callgrind instead of timing",
    )
    parser.add_argument(
        "--pushes",
        type=int,
        default=20_000,
        help="pushes per counted run with --instructions (a multiple of 1,000; default 20,000)",
    )
    parser.add_argument("--count-pushes", nargs=2, metavar=("SPEC", "N"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse(sys.argv[1:] if argv is None else argv)
    try:
        if arguments.count_pushes:
            spec, pushes = arguments.count_pushes
            count_pushes(spec, int(pushes))
            return 0
        a, b = Side(arguments.a), Side(arguments.b)
        if arguments.instructions:
            instructions(a, b, arguments.pushes // BLOCK * BLOCK or BLOCK)
        else:
            timed(a, b, arguments.rounds, arguments.ops)
    except (revisions.RevisionUnavailable, VariantUnavailable) as error:
        raise SystemExit(str(error)) from error
    return 0


if __name__ == "__main__":
    sys.exit(main())
