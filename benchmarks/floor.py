"""Floor: raw ``sqlite3`` doing the minimum a durable step needs (PostgreSQL: :mod:`.floor_pg`).

Per step, two short ``BEGIN IMMEDIATE`` transactions on the engine's own
``steps`` table (same schema, indexes and pragmas as the engine, same
synchronous mode): one INSERT marking the step RUNNING, one UPDATE marking it
COMPLETED with a 100-byte JSON output. No fencing, no reads, no ORM: a lower
bound for what ``ctx.step`` can cost on this machine and disk.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from durable_workers.backends import open_store

from .databases import Databases
from .measure import Figure
from .flows import PAYLOAD

OUTPUT = json.dumps(PAYLOAD)
assert len(OUTPUT) == 100, len(OUTPUT)

INSERT = (
    "INSERT INTO steps (workflow_id, step_key, name, scope, position, status, attempts, "
    "deadline, started_at, worker_id) VALUES (?, ?, ?, ?, ?, 'RUNNING', 1, NULL, ?, ?)"
)
COMPLETE = (
    "UPDATE steps SET status = 'COMPLETED', output = ?, error = NULL, finished_at = ?, "
    "deadline = NULL, worker_id = ? WHERE workflow_id = ? AND step_key = ?"
)


def connect(path: str | Path, synchronous: str) -> sqlite3.Connection:
    """A raw connection with the engine's pragmas, in autocommit (explicit BEGIN)."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA journal_mode = wal")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = 1")
    return conn


def create_schema(path: str | Path, synchronous: str) -> None:
    """Create the engine's tables in a new file (through the engine's own Store)."""
    open_store(path, synchronous=synchronous).close()


def run_floor(path: str | Path, synchronous: str, steps: int, workflow_id: str = "floor") -> float:
    """Run ``steps`` raw durable steps; return the elapsed seconds."""
    conn = connect(path, synchronous)
    try:
        execute = conn.execute
        start = time.perf_counter()
        for i in range(steps):
            key = f"noop#{i + 1}"
            execute("BEGIN IMMEDIATE")
            execute(INSERT, (workflow_id, key, "noop", "", i, time.time(), "floor-worker"))
            execute("COMMIT")
            execute("BEGIN IMMEDIATE")
            execute(COMPLETE, (OUTPUT, time.time(), "floor-worker", workflow_id, key))
            execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def floor_per_step(dbs: Databases, synchronous: str, steps: int, tag: str) -> float:
    """Seconds per raw durable step, on a fresh database of ``dbs``."""
    if dbs.server:
        from .floor_pg import floor_per_step_pg

        return floor_per_step_pg(dbs, steps, tag)
    path = dbs.new(f"floor-{synchronous.lower()}-{tag}")
    create_schema(path, synchronous)
    return run_floor(path, synchronous, steps) / steps


def floor_metric(dbs: Databases) -> str:
    """The floor's metric name: which raw driver it is."""
    return "raw psycopg per step" if dbs.server else "raw sqlite3 per step"


def bench_floor(dbs: Databases, synchronous: str, *, steps: int, repeat: int) -> list[Figure]:
    """The floor alone (``--only floor``)."""
    figure = Figure("floor", floor_metric(dbs), "µs", synchronous, params={"steps": steps})
    for rep in range(repeat):
        figure.samples.append(floor_per_step(dbs, synchronous, steps, f"r{rep}") * 1e6)
    return [figure]
