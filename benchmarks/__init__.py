"""Benchmarks of harn_inbox against its peers, its own earlier commits, and its own tricks.

Run them with ``nox -s bench`` (``-- --quick`` for a smoke run) or
``python -m benchmarks``; compare two pushes with ``python -m
benchmarks.push_ab``. Every scenario measures harn_inbox side by side with its
references in one process and one run, interleaving their rounds, and states
its targets as ratios (or, where the contract names one, a time or a growth
factor): see ``benchmarks/README.md``.

The modules, one per scenario: `push_cost`, `drain_cost`, `wakeup_latency`
(which holds the fan-out scenario too), `memory`, `throughput`, `selective`,
`scale`, `controls`, `tricks`, `durable`, `redis_store`. `measure` holds the
timing and statistics they share, `report` the result records and their JSON
and Markdown renderings, `chart` the PNG of the stores side by side,
`revisions` the earlier commits of the package, imported beside the working
tree's, and `push_ab` the paired push comparison.
"""
