"""``python -m benchmarks [--quick] [--out DIR] [--only SCENARIO ...]``: run, print, write."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import (
    chart,
    controls,
    drain_cost,
    durable,
    memory,
    push_cost,
    redis_store,
    report,
    scale,
    selective,
    throughput,
    tricks,
    wakeup_latency,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from .report import ScenarioResult

#: The scenarios in the contract's order, by the name ``--only`` takes.
SCENARIOS: dict[str, Callable[[bool], ScenarioResult]] = {
    "push": push_cost.run,
    "drain": drain_cost.run,
    "wakeup": wakeup_latency.run_latency,
    "fanout": wakeup_latency.run_fan_out,
    "memory": memory.run,
    "throughput": throughput.run,
    "selective": selective.run,
    "scale": scale.run,
    "controls": controls.run,
    "tricks": tricks.run,
    "durable": durable.run,
    "redis": redis_store.run,
}

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent.parent / "README.md"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of harn_inbox against its peers, its earlier commits and its "
        "own tricks (python -m benchmarks.push_ab compares two pushes).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="few repeats and small sizes: a smoke run of well under a minute "
        "(writes quick.json and quick.md, leaving the full results alone)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help="where to write the JSON and Markdown results (default: benchmarks/results)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(SCENARIOS),
        metavar="SCENARIO",
        help=f"run only this scenario; repeat for more ({', '.join(SCENARIOS)})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse(sys.argv[1:] if argv is None else argv)
    chosen = [name for name in SCENARIOS if not arguments.only or name in arguments.only]
    if "redis" in chosen and (missing := redis_store.unavailable()):
        # Before anything runs: a complete run should not lose its first minutes to it.
        print(f"python -m benchmarks: {missing}", file=sys.stderr)
        return 2
    mode = "quick" if arguments.quick else "full"
    env = report.environment()
    print(
        f"harn_inbox benchmarks, {mode} run: Python {env['python']}, {env['cpu_count']} CPUs, "
        f"scenarios {', '.join(chosen)}",
        flush=True,
    )
    results: list[ScenarioResult] = []
    started = time.perf_counter()
    for name in chosen:
        scenario_started = time.perf_counter()
        result = SCENARIOS[name](arguments.quick)
        result.seconds = time.perf_counter() - scenario_started
        results.append(result)
        print(f"\n{result.number}. {result.title} ({result.seconds:.1f} s)", flush=True)
        for verdict in result.verdicts:
            status = "PASS" if verdict.passed else "MISS"
            print(f"   {status}  {verdict.target}: {verdict.measured}", flush=True)
    env["seconds"] = round(time.perf_counter() - started, 1)
    env["load_average_at_end"] = report.load_average()
    stem = "quick" if arguments.quick else "results"
    json_path, markdown_path = report.write(arguments.out, stem, env, results, mode)
    print(f"\n{env['seconds']} s in all; wrote {json_path} and {markdown_path}")
    picture = arguments.out / ("quick.stores.png" if arguments.quick else "stores.png")
    try:
        drawn = chart.draw_run(results, env, mode, picture)
    except Exception as error:  # the chart never costs a run its results
        print(f"no chart: {type(error).__name__}: {error}")
    else:
        if drawn is not None:
            print(f"drew {drawn}")
        elif any(result.key in chart.KEYS for result in results):
            print(
                "no chart: matplotlib is not installed (pip install -r benchmarks/requirements.txt)"
            )
    if mode == "full" and len(chosen) == len(SCENARIOS) and arguments.out == DEFAULT_OUT:
        # Only a complete full run into the committed results speaks for the README.
        report.update_readme(README, env, results)
        print(f"updated the targets table in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
