"""The results of a run: records, the environment they were measured in, JSON and Markdown."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import attrs

from .measure import Summary

#: The candidate every relative column is taken against.
HARN = "harn_inbox"

Comparison = Literal["<=", "<", ">="]

_DISTRIBUTIONS = (
    "harn-inbox",
    "trio",
    "attrs",
    "structlog",
    "sniffio",
    "janus",
    "culsans",
    "aiologic",
    "redis",
)


@attrs.frozen
class Measurement:
    """One quantity for one candidate: the median of its repeats and their spread.

    *repeats* are in the order they were taken: the i-th repeat of every
    candidate of a scenario comes from the same rotation round, so two
    candidates' repeats pair up (see `paired_ratio`).
    """

    case: str
    candidate: str
    unit: str
    summary: Summary
    repeats: tuple[float, ...]


@attrs.frozen
class Verdict:
    """One target of the contract, a ratio measured side by side, and whether it holds."""

    scenario: int
    target: str
    ratio: float
    comparison: Comparison
    limit: float
    measured: str
    #: Whether the project README shows it: a comparison with the peers or the bare primitives.
    headline: bool = False

    @property
    def passed(self) -> bool:
        if self.comparison == "<=":
            return self.ratio <= self.limit
        if self.comparison == "<":
            return self.ratio < self.limit
        return self.ratio >= self.limit


def ratio_verdict(
    scenario: int,
    target: str,
    value: Measurement,
    reference: Measurement,
    comparison: Comparison,
    limit: float,
    *,
    headline: bool = False,
) -> Verdict:
    """A verdict on the `paired_ratio` of *value* to *reference*, showing both medians too."""
    ratio = paired_ratio(value, reference)
    # Two decimals, or three where two would round onto the limit and hide the verdict.
    shown = f"{ratio:.2f}"
    if float(shown) == limit and ratio != limit:
        shown = f"{ratio:.3f}"
    measured = (
        f"{shown}x (medians {format_value(value.summary.median, value.unit)} vs "
        f"{format_value(reference.summary.median, reference.unit)} {reference.unit})"
    )
    return Verdict(scenario, target, ratio, comparison, limit, measured, headline)


def paired_ratio(value: Measurement, reference: Measurement) -> float:
    """The median over rotation rounds of value's repeat / reference's repeat in that round.

    Each pair was measured back to back, so a load that comes and goes on the
    machine mostly falls on both halves of a pair. The ratio of the two
    medians, which `ratio_verdict` shows beside it, is at the mercy of which
    mode of a two-mode (busy / idle) distribution each median lands in.
    """
    if len(value.repeats) != len(reference.repeats) or len(value.repeats) < 2:
        return value.summary.median / reference.summary.median
    return statistics.median(
        mine / theirs for mine, theirs in zip(value.repeats, reference.repeats, strict=True)
    )


@attrs.define
class ScenarioResult:
    """What one scenario measured and judged."""

    key: str
    number: int
    title: str
    method: str
    measurements: list[Measurement] = attrs.field(factory=list)
    verdicts: list[Verdict] = attrs.field(factory=list)
    details: dict[str, Any] = attrs.field(factory=dict)
    seconds: float = 0.0

    def add(self, case: str, candidate: str, unit: str, samples: list[float]) -> Measurement:
        measurement = Measurement(case, candidate, unit, Summary.of(samples), tuple(samples))
        self.measurements.append(measurement)
        return measurement

    def find(self, case: str, candidate: str) -> Measurement:
        for measurement in self.measurements:
            if measurement.case == case and measurement.candidate == candidate:
                return measurement
        raise KeyError((case, candidate))


def method_of(docstring: str | None) -> str:
    """A scenario module's docstring less its title line, as one paragraph for the tables."""
    paragraphs = (docstring or "").strip().split("\n\n")[1:]
    return " ".join(" ".join(paragraph.split()) for paragraph in paragraphs)


# -- The environment -----------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    versions = {name: _version(name) for name in _DISTRIBUTIONS}
    try:
        usable_cpus: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable_cpus = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "python_build": " ".join(platform.python_build()),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "versions": versions,
        "git": _git_revision(),
        "load_average_at_start": load_average(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages: how busy the machine was besides us."""
    try:
        return [round(load, 2) for load in os.getloadavg()]
    except (AttributeError, OSError):  # not on this platform
        return None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_revision() -> str | None:
    """The commit the library was measured at, ``+dirty`` if its files had changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "harn_inbox"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}+dirty" if dirty else commit


# -- Writing -------------------------------------------------------------------------------------


def write(
    directory: Path, stem: str, env: dict[str, Any], results: list[ScenarioResult], mode: str
) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into *directory*, each replaced atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "environment": env,
        "mode": mode,
        "scenarios": [scenario_json(result) for result in results],
        "verdicts": [_verdict_json(verdict) for result in results for verdict in result.verdicts],
    }
    json_path = directory / f"{stem}.json"
    markdown_path = directory / f"{stem}.md"
    _replace(json_path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    _replace(markdown_path, markdown(env, results, mode))
    return json_path, markdown_path


def _replace(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def scenario_json(result: ScenarioResult) -> dict[str, Any]:
    return {
        "key": result.key,
        "number": result.number,
        "title": result.title,
        "method": result.method,
        "seconds": round(result.seconds, 2),
        "measurements": [
            {**attrs.asdict(measurement), "repeats": [round(x, 3) for x in measurement.repeats]}
            for measurement in result.measurements
        ],
        "verdicts": [_verdict_json(verdict) for verdict in result.verdicts],
        "details": result.details,
    }


def _verdict_json(verdict: Verdict) -> dict[str, Any]:
    return {**attrs.asdict(verdict), "passed": verdict.passed}


# -- Markdown ------------------------------------------------------------------------------------


def markdown(env: dict[str, Any], results: list[ScenarioResult], mode: str) -> str:
    """The targets table (what the README shows), then every measurement by scenario."""
    versions = env["versions"]
    peers = ", ".join(
        f"{name} {versions[name]}"
        for name in ("trio", "janus", "culsans", "aiologic", "redis")
        if versions.get(name)
    )
    revision = f" (git {env['git']})" if env.get("git") else ""
    load = env.get("load_average_at_start")
    busy = f" Load average {load[0]:.2f} at the start." if load else ""
    lines = [
        "# harn_inbox benchmarks",
        "",
        (
            f"{env['implementation']} {env['python']} on {env['platform']}, "
            f"{env['cpu_count']} CPUs; harn-inbox {versions.get('harn-inbox')}{revision}; "
            f"{peers}. {env['date']}, {mode} run, {env.get('seconds', 0):.0f} s.{busy}"
        ),
        "",
        "Targets are ratios measured side by side in this run; see `benchmarks/README.md`.",
        "",
        *targets_table(results),
    ]
    for result in results:
        lines += ["", f"## {result.number}. {result.title}", "", result.method, ""]
        lines += _measurement_table(result.measurements)
        lines.append(f"\n_{result.seconds:.1f} s._")
    return "\n".join(lines) + "\n"


def targets_table(results: list[ScenarioResult], *, headline_only: bool = False) -> list[str]:
    """One row per target (or per headline target): aimed at, measured, PASS or MISS."""
    titles = {result.number: result.title for result in results}
    return [
        "| # | Scenario | Target | Measured | Result |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {verdict.scenario} | {titles[verdict.scenario]} | {verdict.target} | "
            f"{verdict.measured} | {'PASS' if verdict.passed else '**MISS**'} |"
            for result in results
            for verdict in result.verdicts
            if verdict.headline or not headline_only
        ),
    ]


def _tally(results: list[ScenarioResult]) -> str:
    """How many targets passed, and which missed, in a sentence."""
    verdicts = [verdict for result in results for verdict in result.verdicts]
    missed = [f"{v.target} (scenario {v.scenario})" for v in verdicts if not v.passed]
    passed = len(verdicts) - len(missed)
    tally = f"{passed} of {len(verdicts)} targets pass"
    return tally + (f"; missed: {'; '.join(missed)}." if missed else ".")


README_START = "<!-- bench-targets:start -->"
README_END = "<!-- bench-targets:end -->"


def update_readme(readme: Path, env: dict[str, Any], results: list[ScenarioResult]) -> None:
    """Put this run's headline targets between the README's two ``bench-targets`` markers.

    The headline targets are those against the peers and the bare
    primitives; a sentence after the table counts them all and names the
    misses, and ``results.md`` has every one.

    Raises:
        ValueError: The README lacks the markers (nothing is written).
    """
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block")
    revision = f", git {env['git']}" if env.get("git") else ""
    block = [
        README_START,
        "",
        (
            f"_{env['implementation']} {env['python']}, {env['cpu_count']} CPUs{revision}, "
            f"{env['date'][:10]}; the targets against the peers:_"
        ),
        "",
        *targets_table(results, headline_only=True),
        "",
        (
            f"{_tally(results)} Every target and figure: "
            "[`benchmarks/results/results.md`](benchmarks/results/results.md)."
        ),
        "",
    ]
    _replace(readme, text[:start] + "\n".join(block) + "\n" + text[end:])


def _measurement_table(measurements: list[Measurement]) -> list[str]:
    lines = [
        "| Case | Candidate | Median | p25 - p75 | Repeats | / harn_inbox |",
        "| --- | --- | --: | --: | --: | --: |",
    ]
    ours = {m.case: m.summary.median for m in measurements if m.candidate == HARN}
    for measurement in measurements:
        summary, unit = measurement.summary, measurement.unit
        reference = ours.get(measurement.case)
        relative = "" if reference in (None, 0) else f"{summary.median / reference:.2f}"
        lines.append(
            f"| {measurement.case} | {measurement.candidate} | "
            f"{format_value(summary.median, unit)} {unit} | "
            f"{format_value(summary.p25, unit)} - {format_value(summary.p75, unit)} | "
            f"{summary.count} | {relative} |"
        )
    return lines


def format_value(value: float, unit: str) -> str:
    """Few enough digits to read, enough to compare."""
    if unit in ("µs", "ms", "%"):
        return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,.0f}"
