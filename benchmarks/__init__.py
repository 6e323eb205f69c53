"""Reproducible benchmarks of durable_workers (not tests: nothing here asserts a timing).

Run ``python -m benchmarks`` (full sizes, ~20 minutes on 2 cores) or
``python -m benchmarks --quick`` (tiny sizes, one repetition, ~1 minute).
See ``docs/benchmarks.md`` for the method, the machine and the results.

Families, one module each: :mod:`.floor` (raw sqlite3 lower bound),
:mod:`.step` (per-step overhead in one process), :mod:`.throughput`,
:mod:`.latency` and :mod:`.recovery` (real fleets through the supervisor, app
:mod:`.flows`), :mod:`.scale` (claim time vs table size). :mod:`.measure`
holds the median/min/max helpers, :mod:`.report` the table, JSON and plot,
:mod:`.profile` the hot-path profile.
"""
