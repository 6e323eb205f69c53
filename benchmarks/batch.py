"""Batch submit: ``Client.submit_many`` of N workflows against raw ``sqlite3`` inserting the same rows.

Each repetition, back to back on two fresh files with the same schema and
synchronous mode: the raw floor (one ``BEGIN IMMEDIATE``, one ``executemany``
INSERT of the N rows the engine would write, ``COMMIT``), then the engine's
``Client.submit_many`` of N ``bench_onboarding`` workflows with distinct ids
and inputs (registry validation, idempotency read, one transaction). The ratio
compares two numbers taken under the same conditions. SQLite only.
"""

from __future__ import annotations

import json
import time

from durable_workers import Client
from durable_workers.batch import Submission

from . import flows  # noqa: F401  (registers bench_onboarding)
from .databases import Databases
from .floor import connect, create_schema
from .measure import Figure

INSERT = (
    "INSERT INTO workflows (id, name, input, status, attempts, run_at, created_at, updated_at) "
    "VALUES (?, ?, ?, 'PENDING', 0, ?, ?, ?)"
)


def _inputs(count: int) -> list[tuple[str, dict]]:
    return [(f"batch-{i}", {"sleep_ms": float(i % 7)}) for i in range(count)]


def raw_insert(path: str, synchronous: str, count: int) -> float:
    """Seconds for one raw transaction inserting ``count`` PENDING workflows rows."""
    create_schema(path, synchronous)
    conn = connect(path, synchronous)
    try:
        now = time.time()
        rows = [(wid, "bench_onboarding", json.dumps(values, sort_keys=True), now, now, now) for wid, values in _inputs(count)]
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, rows)
        conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def engine_submit(path: str, synchronous: str, count: int) -> float:
    """Seconds for ``Client.submit_many`` of ``count`` workflows (the database already open and migrated)."""
    create_schema(path, synchronous)
    client = Client(db=path, app="benchmarks.flows", synchronous=synchronous)
    try:
        client.registry.get("bench_onboarding")
        client.store.now()  # opened before the clock starts, as a long-lived client is
        batch = [Submission("bench_onboarding", wid, values) for wid, values in _inputs(count)]
        start = time.perf_counter()
        records = client.submit_many(batch)
        elapsed = time.perf_counter() - start
        assert len(records) == count
        return elapsed
    finally:
        client.close()


def bench_batch(dbs: Databases, synchronous: str, *, count: int, repeat: int) -> list[Figure]:
    """Raw insert, engine batch submit and their ratio, each repetition measured back to back."""
    params = {"workflows": count}
    raw = Figure("batch", f"raw sqlite3 executemany of {count}", "ms", synchronous, params=params)
    engine = Figure("batch", f"Client.submit_many of {count}", "ms", synchronous, params=params)
    ratio = Figure("batch", "ratio to raw insert", "×", synchronous, params=params)
    for rep in range(repeat):
        floor = raw_insert(dbs.new(f"batch-raw-{synchronous.lower()}-{rep}"), synchronous, count)
        ours = engine_submit(dbs.new(f"batch-engine-{synchronous.lower()}-{rep}"), synchronous, count)
        raw.samples.append(floor * 1e3)
        engine.samples.append(ours * 1e3)
        ratio.samples.append(ours / floor)
    return [raw, engine, ratio]
