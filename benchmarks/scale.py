"""Scale: ``Store.claim_next`` with 1k, 100k and 1M rows in ``workflows``.

Setup (not engine code, so it is raw ``sqlite3``): the engine creates the
schema, then one transaction of ``executemany`` fills ``workflows`` with the
history of a busy system — finished workflows (COMPLETED, 2 % FAILED) with
their released lease rows, a few RUNNING ones under live leases — oldest
first. Steps rows are not generated: the claim reads the claimed workflow's
steps through the ``(workflow_id, step_key)`` primary key, whose cost does not
depend on the table's size.

Per synchronous mode and repetition, K PENDING workflows are added (newest),
then timed:

- ``claim (hit)``: K calls of ``claim_next`` that each take one of them;
- ``claim (empty)``: E calls once none is left — what every idle worker polls.

Each figure's samples are the per-repetition medians.

Backlog the claimer cannot run (``bench_backlog``, part of the same family):
on a 1k-row history, claims are timed without backlog, then again after
adding ``backlog`` PENDING rows older than the claimable ones — either of a
name no worker serves (``unserved``) or of the served name but due a day
from now (``future``). Each repetition measures both states on one fresh
database, back to back, and reports the ratio with/without.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any, Iterator

from durable_workers.backends import open_store

from .measure import Figure, stopwatch, time_claims

NAME = "bench_onboarding"
LIVE_RUNNING = 100  # workflows held by live leases of other workers
UNSERVED = "bench_nobody_serves_this"
BACKLOG_HISTORY = 1_000  # history rows under the backlog benchmark
#: Kinds of unrunnable backlog: (name of its rows, seconds from now to their run_at).
BACKLOG_KINDS = {"unserved": (UNSERVED, -60.0), "future": (NAME, 86_400.0)}


def _columns(conn: sqlite3.Connection, table: str, values: dict[str, Any]) -> list[str]:
    """The columns to insert; fails clearly if the schema grew a NOT NULL column we don't fill."""
    info = conn.execute(f"PRAGMA table_info({table})").fetchall()
    names = [row[1] for row in info]
    missing = [row[1] for row in info if row[3] and row[4] is None and row[1] not in values and not row[5]]
    if missing:
        raise RuntimeError(f"scale setup does not know how to fill {table}.{', '.join(missing)}")
    return [name for name in names if name in values]


def _insert(conn: sqlite3.Connection, table: str, sample: dict[str, Any], rows: Iterator[dict[str, Any]]) -> None:
    columns = _columns(conn, table, sample)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
    conn.executemany(sql, (tuple(row[c] for c in columns) for row in rows))


def _workflow(i: int, status: str, created: float) -> dict[str, Any]:
    return {
        "id": f"wf-{i:09d}",
        "name": NAME,
        "input": "{}",
        "status": status,
        "result": '{"ok": true}' if status == "COMPLETED" else None,
        "error": "ValueError: boom" if status == "FAILED" else None,
        "attempts": 1 if status != "PENDING" else 0,
        "run_at": created,
        "created_at": created,
        "updated_at": created + 0.1,
        "crash_at": None,
    }


def _lease(i: int, worker: str | None, expires: float | None, now: float) -> dict[str, Any]:
    return {"workflow_id": f"wf-{i:09d}", "worker_id": worker, "token": 1, "expires_at": expires, "heartbeat_at": now}


def populate(path: Path, rows: int, synchronous: str) -> tuple[int, float]:
    """Create ``path`` with ``rows`` history rows; return (next free index, seconds taken)."""
    open_store(path, synchronous=synchronous).close()
    now = time.time()
    live = min(LIVE_RUNNING, rows // 10)
    done = rows - live
    base = now - rows * 0.01

    def statuses(i: int) -> str:
        return "FAILED" if i % 50 == 0 else "COMPLETED"

    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = wal")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    with stopwatch() as took:
        conn.execute("BEGIN IMMEDIATE")
        sample = _workflow(0, "COMPLETED", base)
        _insert(
            conn,
            "workflows",
            sample,
            (_workflow(i, statuses(i) if i < done else "RUNNING", base + i * 0.01) for i in range(rows)),
        )
        _insert(
            conn,
            "leases",
            _lease(0, None, None, now),
            (
                _lease(i, None, None, now) if i < done else _lease(i, f"other:{i % 8}", now + 3600, now)
                for i in range(rows)
            ),
        )
        conn.execute("COMMIT")
    conn.close()
    return rows, took[0]


def add_pending(path: Path, start: int, count: int) -> None:
    """``count`` new PENDING workflows, newer than everything else."""
    now = time.time()
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
    conn.execute("BEGIN IMMEDIATE")
    _insert(
        conn,
        "workflows",
        _workflow(start, "PENDING", now),
        (_workflow(start + j, "PENDING", now - 1.0 + j * 1e-4) for j in range(count)),
    )
    conn.execute("COMMIT")
    conn.close()


def bench_scale(
    workdir: Path, syncs: list[str], *, sizes: list[int], claims: int, empty_claims: int, repeat: int
) -> list[Figure]:
    figures: list[Figure] = []
    for size in sizes:
        path = workdir / f"scale-{size}.db"
        next_index, took = populate(path, size, syncs[0])
        for synchronous in syncs:
            params = {"rows": size, "claims": claims, "empty_claims": empty_claims, "setup_s": round(took, 1)}
            hit = Figure("scale", f"claim (hit) {size:,} rows", "ms", synchronous, params=params)
            empty = Figure("scale", f"claim (empty) {size:,} rows", "ms", synchronous, params=params)
            for rep in range(repeat):
                add_pending(path, next_index, claims)
                next_index += claims
                store = open_store(path, synchronous=synchronous)
                try:
                    worker = f"scale:{synchronous}:{rep}"
                    timings = []
                    for _ in range(claims):
                        with stopwatch() as t:
                            claim = store.claim_next(worker, [NAME], ttl=3600.0)
                        if claim is None:
                            raise RuntimeError("scale: a PENDING workflow was not claimed")
                        timings.append(t[0] * 1000.0)
                    hit.samples.append(statistics.median(timings))
                    timings = []
                    for _ in range(empty_claims):
                        with stopwatch() as t:
                            claim = store.claim_next(worker, [NAME], ttl=3600.0)
                        if claim is not None:
                            raise RuntimeError("scale: claimed a workflow where none was runnable")
                        timings.append(t[0] * 1000.0)
                    empty.samples.append(statistics.median(timings))
                finally:
                    store.close()
            figures += [hit, empty]
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return figures


def add_backlog(path: Path, start: int, count: int, name: str, due_in: float) -> None:
    """``count`` PENDING rows of ``name`` due ``due_in`` s from now, created before every claimable row."""
    now = time.time()

    def row(j: int) -> dict[str, Any]:
        values = _workflow(start + j, "PENDING", now - 3600.0 + j * 1e-3)
        values.update(name=name, run_at=now + due_in)
        return values

    conn = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
    conn.execute("BEGIN IMMEDIATE")
    _insert(conn, "workflows", row(0), (row(j) for j in range(count)))
    conn.execute("COMMIT")
    conn.close()


def _time_claims(path: Path, synchronous: str, worker: str, claims: int, empty_claims: int) -> tuple[float, float]:
    """Median ms of ``claims`` claims that hit, then of ``empty_claims`` that find nothing."""
    store = open_store(path, synchronous=synchronous)
    try:
        hit = time_claims(store, worker, [NAME], claims, expect_hit=True, what="scale backlog")
        return hit, time_claims(store, worker, [NAME], empty_claims, expect_hit=False, what="scale backlog")
    finally:
        store.close()


def bench_backlog(
    workdir: Path, syncs: list[str], *, backlog: int, claims: int, empty_claims: int, repeat: int
) -> list[Figure]:
    """Claim cost with and without ``backlog`` unrunnable PENDING rows, and their ratio, per kind."""
    figures: list[Figure] = []
    for kind, (name, due_in) in BACKLOG_KINDS.items():
        for synchronous in syncs:
            params = {"rows": BACKLOG_HISTORY, "backlog": backlog, "kind": kind, "claims": claims}
            label = f"+{backlog:,} {kind}"
            states = {"none": f"before {label}", label: f"with {label}", "ratio": f"{label} / before"}
            made = {
                (what, state): Figure(
                    "scale",
                    f"claim ({what}) {metric}",
                    "×" if state == "ratio" else "ms",
                    synchronous,
                    params=params,
                    note="same database, back to back; flat = 1" if state == "ratio" else "",
                )
                for what in ("hit", "empty")
                for state, metric in states.items()
            }
            for rep in range(repeat):
                path = workdir / f"backlog-{kind}-{synchronous}-{rep}.db"
                next_index, _ = populate(path, BACKLOG_HISTORY, synchronous)
                worker = f"backlog:{kind}:{synchronous}:{rep}"
                results = {}
                for state in ("none", label):
                    if state == label:
                        add_backlog(path, next_index, backlog, name, due_in)
                        next_index += backlog
                    add_pending(path, next_index, claims)
                    next_index += claims
                    results[state] = _time_claims(path, synchronous, worker, claims, empty_claims)
                for i, what in enumerate(("hit", "empty")):
                    made[(what, "none")].samples.append(results["none"][i])
                    made[(what, label)].samples.append(results[label][i])
                    made[(what, "ratio")].samples.append(results[label][i] / results["none"][i])
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            figures += list(made.values())
    return figures
