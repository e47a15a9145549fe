"""Scenario 5: what sessions cost in memory, by tracemalloc.

One inbox and *sessions* sessions: the footprint with one entry in each, after
draining every session (which keeps its sequence counter), and after clearing
every session. The session ids and contents are made before the starting
snapshot, so only the inbox's own allocations count; the collector runs
before every reading. Allocation is deterministic, so the repeats agree to the
byte; where memory stays behind after clearing, the inbox's allocation sites
still holding it are listed in the JSON (``details.residual_sites``).
"""

from __future__ import annotations

import gc
import tracemalloc

from harn_inbox import Inbox

from .report import HARN, ScenarioResult, Verdict, method_of

KIND = "tool_result"
SOURCE = "tool:build"

METHOD = method_of(__doc__)


def _traced() -> int:
    gc.collect()
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def _site(frame: tracemalloc.Frame) -> str:
    """``harn_inbox/_inbox.py:218``: the allocating line, wherever the package is installed."""
    path = frame.filename.replace("\\", "/")
    start = path.rfind("harn_inbox/")
    return f"{path[start:] if start >= 0 else path}:{frame.lineno}"


def _one_pass(session_ids: list[str], contents: list[str]) -> tuple[int, int, int, int, Inbox]:
    """Start, holding, drained and cleared footprints (bytes), and the inbox measured."""
    inbox = Inbox()
    start = _traced()
    push = inbox.push
    for session_id, content in zip(session_ids, contents, strict=True):
        push(session_id, KIND, content, SOURCE)
    holding = _traced()
    for session_id in session_ids:
        inbox.drain(session_id)
    drained = _traced()
    for session_id in session_ids:
        inbox.clear_session(session_id)
    cleared = _traced()
    return start, holding, drained, cleared, inbox


def run(quick: bool) -> ScenarioResult:
    sessions, repeats = (10_000, 1) if quick else (100_000, 3)
    result = ScenarioResult(
        "memory",
        5,
        "Memory per session (tracemalloc)",
        f"{METHOD} {sessions:,} sessions, {repeats} repeat(s).",
    )
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        session_ids = [f"session-{index:07d}" for index in range(sessions)]
        contents = [f"tool call {index} finished: 0 errors" for index in range(sessions)]
        holding_per: list[float] = []
        drained_per: list[float] = []
        residual: list[float] = []
        starts: list[float] = []
        for _ in range(repeats):
            start, holding, drained, cleared, inbox = _one_pass(session_ids, contents)
            holding_per.append((holding - start) / sessions)
            drained_per.append((drained - start) / sessions)
            residual.append(cleared - start)
            starts.append(start)
        # Where the inbox still holds memory after clearing (the last pass's inbox is alive).
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(inclusive=True, filename_pattern="*harn_inbox*")]
        )
        sites = [
            {"site": _site(stat.traceback[0]), "bytes": stat.size, "blocks": stat.count}
            for stat in snapshot.statistics("lineno")[:5]
        ]
        del snapshot, inbox
    finally:
        if not was_tracing:
            tracemalloc.stop()

    case = f"{sessions:,} sessions"
    holding_m = result.add(f"{case}, one entry each", HARN, "B/session", holding_per)
    drained_m = result.add(f"{case}, drained, not cleared", HARN, "B/session", drained_per)
    residual_m = result.add(f"{case}, cleared: above start", HARN, "B", residual)
    start_bytes = sorted(starts)[len(starts) // 2]
    result.details["starting_footprint_bytes"] = start_bytes
    result.details["residual_sites"] = sites

    held = holding_m.summary.median
    result.verdicts.append(
        Verdict(
            5,
            "≤ 1,000 B per session holding one entry",
            held / 1_000,
            "<=",
            1.0,
            f"{held:,.0f} B/session",
        )
    )
    drained_value = drained_m.summary.median
    result.verdicts.append(
        Verdict(
            5,
            "≤ 150 B per drained, not cleared session",
            drained_value / 150,
            "<=",
            1.0,
            f"{drained_value:,.0f} B/session",
        )
    )
    left = residual_m.summary.median
    growth = (start_bytes + left) / start_bytes
    result.verdicts.append(
        Verdict(
            5,
            "after clearing, within 1% of the starting footprint",
            growth,
            "<=",
            1.01,
            f"{(growth - 1) * 100:+.1f}% ({left:,.0f} B above the start of "
            f"{start_bytes:,.0f} B; {left / sessions:,.0f} B/session)",
        )
    )
    return result
