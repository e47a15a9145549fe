"""Benchmarks of harn_inbox against a floor built from the same parts and against its peers.

Run them with ``nox -s bench`` (``-- --quick`` for a smoke run) or
``python -m benchmarks``. Every scenario measures harn_inbox side by side with
its references in one process and one run, interleaving their rounds, and
states its targets as ratios, never as absolute times: see
``benchmarks/README.md``.

The modules, one per scenario: `push_cost`, `drain_cost`, `wakeup_latency`
(which holds the fan-out scenario too), `memory`, `throughput`; `measure`
holds the timing and statistics they share and `report` the result records
and their JSON and Markdown renderings.
"""
