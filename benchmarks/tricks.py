"""Scenario 10: what each speed trick on the push path buys, measured by taking it out.

Each trick is one named function of the library; its variant swaps that
function (a module global) for the plain way, only for the variant's own
rounds, then puts it back. ``stamp`` (``harn_inbox._entry``, which builds an
entry by filling its slots and re-typing it) against building it with attrs'
``InboxEntry(...)``: the push of scenario 1, rounds rotating between the two.
``acquire_contended`` (``harn_inbox._mutex``, which yields the GIL to the
lock's holder a few times before blocking) against a plain blocking
``acquire()``: the 8-producer runs of scenario 6. A trick keeps its place if
the push (or the throughput) without it is at least 5% worse (issue #13, item 7).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import TYPE_CHECKING, Literal

import attrs

import harn_inbox

from . import throughput
from .measure import SESSION, collector_paused, interleave, rotations, time_pushes
from .report import HARN, ScenarioResult, method_of, ratio_verdict

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager
    from types import ModuleType

METHOD = method_of(__doc__)

#: How much a trick must buy to stay (issue #13, item 7).
KEEP_AT = 1.05


class VariantUnavailable(Exception):
    """The package has no such trick to take out (renamed, or already gone)."""


def _blocking_acquire(lock: threading.RLock) -> None:
    lock.acquire()


@attrs.frozen
class Variant:
    """The library with one trick taken out: its function swapped for the plain way."""

    name: str
    description: str
    #: The module that defines the trick, and the trick's name there.
    home: str
    function: str
    #: What replaces it, given the package.
    replacement: Callable[[ModuleType], object]

    @contextlib.contextmanager
    def applied(self, package: ModuleType) -> Iterator[None]:
        """*package* with this trick taken out, for the ``with`` block only.

        Every module of the package that holds the function (its home, and
        those that imported it by name) gets the replacement instead.

        Raises:
            VariantUnavailable: The package has no such function.
        """
        home = importlib.import_module(f"{package.__name__}.{self.home}")
        trick = getattr(home, self.function, None)
        if trick is None:
            raise VariantUnavailable(
                f"{self.name}: {package.__name__}.{self.home} has no {self.function}"
            )
        prefix = f"{package.__name__}."
        holders = [
            module
            for name, module in list(sys.modules.items())
            if name.startswith(prefix) and getattr(module, self.function, None) is trick
        ]
        replacement = self.replacement(package)
        for module in holders:
            setattr(module, self.function, replacement)
        try:
            yield
        finally:
            for module in holders:
                setattr(module, self.function, trick)


#: The tricks that can be taken out, by the name ``push_ab`` takes after a ``+``.
VARIANTS = {
    variant.name: variant
    for variant in (
        Variant(
            "entry-by-attrs",
            "without stamp: entries built by attrs' InboxEntry(...)",
            "_entry",
            "stamp",
            lambda package: package.InboxEntry,
        ),
        Variant(
            "blocking-acquire",
            "without acquire_contended: a contended lock blocks at once",
            "_mutex",
            "acquire_contended",
            lambda package: _blocking_acquire,
        ),
    )
}


def taken_out(variant: Variant | None, package: ModuleType) -> AbstractContextManager[None]:
    """*package* with *variant*'s trick taken out, or as it is if *variant* is None."""
    return contextlib.nullcontext() if variant is None else variant.applied(package)


def push_round(package: ModuleType, variant: Variant | None, ops: int) -> Callable[[], float]:
    """One round of scenario 1's push (ns per call) with *package*, *variant* applied.

    Raises:
        VariantUnavailable: At the first round, if *variant* does not apply.
    """
    inbox = package.Inbox()
    push, drain = inbox.push, inbox.drain

    def one_round() -> float:
        with taken_out(variant, package):
            per_call = time_pushes(push, ops)
        drain(SESSION)
        return per_call

    return one_round


def _throughput_run(
    framework: Literal["trio", "asyncio"], variant: Variant | None, count: int
) -> float:
    with taken_out(variant, harn_inbox):
        return throughput.run_once(framework, throughput.inbox_shape, count)


AS_SHIPPED = HARN


def run(quick: bool) -> ScenarioResult:
    rounds, ops = (60, 500) if quick else (600, 1_000)
    runs, count = (2, 2_000) if quick else (7, 20_000)
    result = ScenarioResult(
        "tricks",
        10,
        "The price of every trick on the push path",
        f"{METHOD} Push: {rounds} rounds of {ops:,} calls per candidate, ns per call. "
        f"Throughput: {runs} runs of {throughput.PRODUCERS} x {count:,} entries per candidate.",
    )
    not_measured: dict[str, str] = {}
    entry_by_attrs = VARIANTS["entry-by-attrs"]
    try:
        with entry_by_attrs.applied(harn_inbox):
            pass
    except VariantUnavailable as error:
        not_measured[entry_by_attrs.name] = str(error)
    else:
        with collector_paused():
            samples = interleave(
                {
                    AS_SHIPPED: push_round(harn_inbox, None, ops),
                    entry_by_attrs.description: push_round(harn_inbox, entry_by_attrs, ops),
                },
                rounds,
            )
        case = "push: stamp"
        for name, values in samples.items():
            result.add(case, name, "ns", values)
        result.verdicts.append(
            ratio_verdict(
                10,
                f"stamp keeps its place: push without it ≥ {KEEP_AT}x",
                result.find(case, entry_by_attrs.description),
                result.find(case, AS_SHIPPED),
                ">=",
                KEEP_AT,
            )
        )

    blocking = VARIANTS["blocking-acquire"]
    try:
        with blocking.applied(harn_inbox):
            pass
    except VariantUnavailable as error:
        not_measured[blocking.name] = str(error)
    else:
        frameworks: tuple[Literal["trio", "asyncio"], ...] = ("trio", "asyncio")
        candidates: list[tuple[Literal["trio", "asyncio"], str, Variant | None]] = [
            (framework, name, variant)
            for framework in frameworks
            for name, variant in ((AS_SHIPPED, None), (blocking.description, blocking))
        ]
        rates: dict[tuple[str, str], list[float]] = {(f, n): [] for f, n, _ in candidates}
        with collector_paused():
            for order in rotations(candidates, runs):
                for framework, name, variant in order:
                    rates[framework, name].append(_throughput_run(framework, variant, count))
        for (framework, name), values in rates.items():
            result.add(f"throughput, {framework}: acquire_contended", name, "entries/s", values)
        for framework in frameworks:
            case = f"throughput, {framework}: acquire_contended"
            result.verdicts.append(
                ratio_verdict(
                    10,
                    f"acquire_contended keeps its place ({framework}): "
                    f"entries/s ≥ {KEEP_AT}x without it",
                    result.find(case, AS_SHIPPED),
                    result.find(case, blocking.description),
                    ">=",
                    KEEP_AT,
                )
            )
    if not_measured:
        result.details["not_measured"] = not_measured
    return result
