"""Floor on PostgreSQL: raw psycopg 3 doing the minimum a correct durable step needs.

Per step, two transactions on the engine's own ``steps`` and ``leases`` tables
(schema created by the engine's Store): one marking the step RUNNING, one
marking it COMPLETED with the 100-byte JSON output. Each is correct the way the
engine must be — fenced by a ``FOR SHARE`` lock on the lease row
``(workflow_id, worker_id, token)`` taken before the write, timestamps and the
deadline from the database clock (``statement_timestamp()``) — but in the
fewest round trips that allows: one statement per transaction (the lock in a
CTE the write depends on), sent in autocommit, so one round trip each, two per
step. No ORM, no pool, no retries, no reads of the step's prior state.
"""

from __future__ import annotations

import contextlib
import time

from durable_workers.backends import open_store

from .databases import Databases, pg_connect
from .floor import OUTPUT

CLOCK = "extract(epoch from statement_timestamp())"
START = (
    "WITH fence AS (SELECT 1 FROM leases WHERE workflow_id = %s AND worker_id = %s AND token = %s FOR SHARE) "
    "INSERT INTO steps (workflow_id, step_key, name, scope, position, status, attempts, deadline, started_at, "
    f"worker_id, token) SELECT %s, %s, 'noop', '', %s, 'RUNNING', 1, NULL, {CLOCK}, %s, %s FROM fence"
)
COMPLETE = (
    "WITH fence AS (SELECT 1 FROM leases WHERE workflow_id = %s AND worker_id = %s AND token = %s FOR SHARE) "
    f"UPDATE steps SET status = 'COMPLETED', output = %s, error = NULL, finished_at = {CLOCK}, deadline = NULL "
    "FROM fence WHERE workflow_id = %s AND step_key = %s"
)
LEASE = (
    "INSERT INTO leases (workflow_id, worker_id, token, expires_at, heartbeat_at) "
    f"VALUES (%s, %s, 1, {CLOCK} + 60, {CLOCK})"
)
WORKER = "floor-worker"


def run_floor_pg(url: str, steps: int, workflow_id: str = "floor") -> float:
    """Run ``steps`` raw fenced steps on ``url`` (schema present); return the elapsed seconds."""
    with contextlib.closing(pg_connect(url)) as conn:
        conn.execute(LEASE, (workflow_id, WORKER))
        execute = conn.execute
        start = time.perf_counter()
        for i in range(steps):
            key = f"noop#{i + 1}"
            cur = execute(START, (workflow_id, WORKER, 1, workflow_id, key, i, WORKER, 1), prepare=True)
            if cur.rowcount != 1:
                raise RuntimeError("floor: the fenced start wrote no row")
            execute(COMPLETE, (workflow_id, WORKER, 1, OUTPUT, workflow_id, key), prepare=True)
        return time.perf_counter() - start


def floor_per_step_pg(dbs: Databases, steps: int, tag: str) -> float:
    """Seconds per raw durable step, on a fresh PostgreSQL database."""
    url = dbs.new(f"floor-{tag}")
    open_store(url).close()
    return run_floor_pg(url, steps) / steps
