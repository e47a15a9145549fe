"""``python -m benchmarks.chart [RESULTS.json ...] [--out PNG]``: the stores side by side, as a PNG.

Two rows, one column per store: the wake-up latency (p50) and the entries per
second of each store, harn_inbox beside the peers and the bare primitives its
scenario measures with it. A full run draws it from its own results
(``stores.png`` beside ``results.json``; ``quick.stores.png`` for a quick
run). This command draws it from results files instead: given several, a
scenario in a later file replaces the same scenario of an earlier one, and the
footer names the run each scenario comes from. So a scenario rerun alone
(``--only redis --out /tmp/bench``) can be drawn beside the committed others.

Each panel's figures come from one scenario and were measured side by side;
panels are not: an in-process wake-up and one across processes through a
server are different things, so each panel has its own axis.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from . import durable, redis_store, throughput, wakeup_latency
from .report import HARN, format_value, scenario_json

if TYPE_CHECKING:
    from .report import ScenarioResult

RESULTS = Path(__file__).resolve().parent / "results"

#: The scenarios the chart draws from, by key.
KEYS = ("wakeup", "throughput", "durable", "redis")

#: A panel: what it shows, then (scenario key, case, label prefix) for each group of bars.
Panel = tuple[str, tuple[tuple[str, str, str], ...]]


@attrs.frozen
class Store:
    title: str
    wake: Panel | str
    rate: Panel | str


STORES = (
    Store(
        "MemoryStore (the default)",
        (
            "wake-up p50, µs: a thread pushes, a task in the same process waits (scenario 3)",
            (("wakeup", "trio, p50", "trio"), ("wakeup", "asyncio, p50", "asyncio")),
        ),
        (
            f"entries/s: {throughput.PRODUCERS} threads, one consumer loop (scenario 6)",
            (("throughput", "trio", "trio"), ("throughput", "asyncio", "asyncio")),
        ),
    ),
    Store(
        'SqliteStore, sync="normal"',
        (
            "wake-up p50, µs: a thread pushes and commits, a task waits (scenario 11)",
            (("durable", "trio, p50", "trio"), ("durable", "asyncio, p50", "asyncio")),
        ),
        (
            f"entries/s stored: {durable.PRODUCERS} threads committing, no consumer (scenario 11)",
            (("durable", f"{durable.PRODUCERS} threads, {durable.PRODUCERS} sessions", ""),),
        ),
    ),
    Store(
        "RedisStore",
        (
            "wake-up p50, µs: a process pushes, a task in another process waits (scenario 12)",
            tuple(
                ("redis", redis_store.wake_case(framework), framework)
                for framework in ("trio", "asyncio")
            ),
        ),
        (
            f"entries/s: {redis_store.PRODUCERS} processes, one consumer (scenario 12)",
            tuple(
                ("redis", redis_store.throughput_case(framework), framework)
                for framework in ("trio", "asyncio")
            ),
        ),
    ),
)

#: The floors (bare primitives, raw writes) are drawn apart from the peers.
FLOORS = frozenset(
    {wakeup_latency.BARE, durable.RAW, durable.COMMIT_THEN_WAKE, *redis_store.FLOORS}
)
COLOURS = {"harn_inbox": "#1f6fb4", "floor": "#4d4d4d", "peer": "#b0b0b0"}


def _kind(candidate: str) -> str:
    if candidate == HARN or candidate.startswith(f"{HARN}:"):
        return "harn_inbox"
    return "floor" if candidate in FLOORS else "peer"


def draw(scenarios: dict[str, dict[str, Any]], sources: dict[str, str], path: Path) -> Path | None:
    """Draw the chart of *scenarios* (their JSON form, by key) into *path*; None without matplotlib.

    *sources* says, per scenario key, which run it comes from (the footer).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    panels: list[list[tuple[str, str | list[tuple[str, dict[str, Any]]]]]] = [[], []]
    for store in STORES:
        for row, (panel, unit_note) in enumerate(
            ((store.wake, "lower is better"), (store.rate, "higher is better"))
        ):
            heading = f"{store.title}\n" if row == 0 else ""
            if isinstance(panel, str):
                panels[row].append((heading, panel))
                continue
            what, groups = panel
            bars = [
                (f"{prefix}: {candidate}" if prefix else candidate, measurement)
                for key, case, prefix in groups
                for candidate, measurement in _measurements(scenarios.get(key), case)
            ]
            title = heading + _wrap(f"{what} ({unit_note})", 60)
            panels[row].append((title, bars or "not in these results"))
    # Each row as tall as its most crowded panel needs (labels wrap to up to three lines).
    tallest = [
        max((len(bars) for _, bars in row if isinstance(bars, list)), default=0) for row in panels
    ]
    figure = Figure(figsize=(18, max(10.5, 2.5 + BAR_INCHES * sum(tallest))), layout="constrained")
    grid = figure.subplots(
        2, len(STORES), squeeze=False, height_ratios=[max(count, 4) for count in tallest]
    )
    for row, row_panels in enumerate(panels):
        for column, (title, content) in enumerate(row_panels):
            axes = grid[row][column]
            if isinstance(content, str):
                _empty(axes, title, content)
            else:
                _bars(axes, content)
                axes.set_title(title, fontsize=9, loc="left")
    figure.suptitle(
        "harn_inbox: wake-up latency and throughput per store, beside what each scenario "
        "measures with it (median; whiskers p25 - p75 of the repeats)",
        fontsize=12,
    )
    legend = [(COLOURS[kind], label) for kind, label in _LEGEND]
    footer = "; ".join(f"{run}: {keys}" for run, keys in _runs(sources).items())
    figure.legend(
        handles=[_patch(colour, label) for colour, label in legend],
        loc="outside lower center",
        ncols=len(legend),
        fontsize=9,
        frameon=False,
        title=footer,
        title_fontsize=7,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    figure.savefig(temporary, format="png", dpi=100, metadata={"Software": None})
    os.replace(temporary, path)
    return path


#: Height of one bar's slot (its label wrapped to up to three lines), inches.
BAR_INCHES = 0.42

_LEGEND = (
    ("harn_inbox", "harn_inbox"),
    ("floor", "bare primitive or raw write (a floor)"),
    ("peer", "peer queue"),
)


def _patch(colour: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=colour, label=label)


def _measurements(scenario: dict[str, Any] | None, case: str) -> list[tuple[str, dict[str, Any]]]:
    if scenario is None:
        return []
    return [
        (measurement["candidate"], measurement)
        for measurement in scenario["measurements"]
        if measurement["case"] == case
    ]


def _bars(axes: Any, bars: list[tuple[str, dict[str, Any]]]) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    positions = range(len(bars))
    medians = [m["summary"]["median"] for _, m in bars]
    spread = [
        [m["summary"]["median"] - m["summary"]["p25"] for _, m in bars],
        [m["summary"]["p75"] - m["summary"]["median"] for _, m in bars],
    ]
    colours = [COLOURS[_kind(m["candidate"])] for _, m in bars]
    axes.barh(positions, medians, xerr=spread, color=colours, error_kw={"elinewidth": 0.8})
    axes.set_yticks(list(positions), [_wrap(label, 30) for label, _ in bars], fontsize=8)
    axes.invert_yaxis()
    axes.tick_params(axis="x", labelsize=8)
    axes.xaxis.set_major_locator(MaxNLocator(4))
    if bars[0][1]["unit"] == "entries/s":
        axes.xaxis.set_major_formatter(FuncFormatter(_thousands))
    axes.grid(axis="x", alpha=0.3)
    for position, (_, measurement) in zip(positions, bars, strict=True):
        unit = measurement["unit"]
        axes.annotate(
            f" {format_value(measurement['summary']['median'], unit)} {unit}",
            (max(measurement["summary"]["median"], measurement["summary"]["p75"]), position),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
    axes.margins(x=0.25)


def _empty(axes: Any, title: str, note: str) -> None:
    axes.set_title(title, fontsize=9, loc="left")
    axes.text(0.5, 0.5, _wrap(note, 50), ha="center", va="center", fontsize=9, color="#555555")
    axes.set_axis_off()


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width))


def _thousands(value: float, _position: object) -> str:
    return f"{value / 1000:,.0f}k" if value else "0"


def _runs(sources: dict[str, str]) -> dict[str, str]:
    """Per run, the scenarios the chart took from it."""
    runs: dict[str, list[str]] = {}
    for key in KEYS:
        if key in sources:
            runs.setdefault(sources[key], []).append(key)
    return {run: ", ".join(keys) for run, keys in runs.items()}


def _describe(env: dict[str, Any], mode: str) -> str:
    revision = f"git {env['git']}, " if env.get("git") else ""
    load = env.get("load_average_at_start")
    return f"{revision}{env.get('date', '?')[:16]}, {mode} run, load {load}"


def draw_run(
    results: list[ScenarioResult], env: dict[str, Any], mode: str, path: Path
) -> Path | None:
    """The chart of one run's results, if it ran any scenario the chart draws from."""
    scenarios = {result.key: scenario_json(result) for result in results if result.key in KEYS}
    if not scenarios:
        return None
    described = _describe(env, mode)
    return draw(scenarios, dict.fromkeys(scenarios, described), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.chart",
        description="Draw wake-up latency and throughput per store from results files.",
    )
    parser.add_argument(
        "results",
        nargs="*",
        type=Path,
        default=[RESULTS / "results.json"],
        metavar="RESULTS.json",
        help="results files of python -m benchmarks; a later one's scenarios replace an "
        "earlier one's (default: benchmarks/results/results.json)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "stores.png",
        metavar="PNG",
        help="where to write the chart (default: benchmarks/results/stores.png)",
    )
    arguments = parser.parse_args(argv)
    scenarios: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    for path in arguments.results:
        document = json.loads(path.read_text(encoding="utf-8"))
        described = _describe(document["environment"], document["mode"])
        for scenario in document["scenarios"]:
            if scenario["key"] in KEYS:
                scenarios[scenario["key"]] = scenario
                sources[scenario["key"]] = described
    if not scenarios:
        parser.error("none of the files has a scenario the chart draws from")
    drawn = draw(scenarios, sources, arguments.out)
    if drawn is None:
        parser.error("matplotlib is not installed (pip install -r benchmarks/requirements.txt)")
    print(f"wrote {drawn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
