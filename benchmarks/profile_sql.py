"""Sections 4, 5, 7 and 9 of ``python -m benchmarks.profile``: the cost of single statements.

The peewee cost of each hot-path query against the raw connection, the
statements of a claim and of a heartbeat, one step's SQL under three designs,
and write-lock contention among threads of one process. ``profile.py`` prints them.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import timeit
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from durable_workers.backends import Store, open_store
from durable_workers.engine import run_claim
from durable_workers.records import StepStatus
from durable_workers.worker import new_worker_id

from .databases import Databases
from .floor import OUTPUT, floor_per_step
from .step import registry




class Capture:
    """Records every statement peewee sends (with its sqlite3 execute time), BEGINs and COMMITs."""

    def __init__(self, database: Any) -> None:
        self.database = database  # the store's own peewee database (store.db)
        self.events: list[tuple[str, float]] = []
        self.spans: list[tuple[float, float, float]] = []  # (BEGIN start, BEGIN seconds, COMMIT end) per transaction
        self._open: dict[int, tuple[float, float]] = {}
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> "Capture":
        def hook(event: Any) -> None:
            self.events.append((event.sql, event.duration))

        database = self.database
        begin, commit = database.begin, database.commit

        def timed_begin(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return begin(*args, **kwargs)
            finally:
                took = time.perf_counter() - start
                self._open[threading.get_ident()] = (start, took)
                self.events.append(("BEGIN " + (args[0] if args else kwargs.get("lock_type") or ""), took))

        def timed_commit() -> Any:
            start = time.perf_counter()
            try:
                return commit()
            finally:
                end = time.perf_counter()
                self.events.append(("COMMIT", end - start))
                opened = self._open.pop(threading.get_ident(), None)
                if opened is not None:
                    self.spans.append((opened[0], opened[1], end))

        self._hook = hook
        database.query_hooks.append(hook)
        database.begin = timed_begin  # type: ignore[method-assign]
        database.commit = timed_commit  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        database = self.database
        database.query_hooks.remove(self._hook)
        del database.begin
        del database.commit

    def lock_held(self) -> float:
        """Seconds the write lock was held in all: from BEGIN IMMEDIATE returning to COMMIT returning."""
        return sum(end - start - waited for start, waited, end in self.spans)

    def grouped(self) -> list[tuple[str, int, float]]:
        """(statement, count, total seconds), most expensive first."""
        totals: dict[str, list[float]] = defaultdict(list)
        for sql, seconds in self.events:
            totals[sql].append(seconds)
        rows = [(sql, len(v), sum(v)) for sql, v in totals.items()]
        return sorted(rows, key=lambda r: -r[2])


def shorten(sql: str, width: int = 150) -> str:
    sql = " ".join(sql.split())
    return sql if len(sql) <= width else sql[: width - 1] + "…"


# --------------------------------------------------------------------------- sections


def prepared_claim(path: Path, mode: str, steps: int) -> tuple[Store, Any, str]:
    reg = registry()
    store = open_store(path, synchronous=mode)
    store.submit("sequential", "bench_sequential", json.dumps({"steps": steps}))
    worker_id = new_worker_id()
    store.register_worker(worker_id, names=reg.names())
    claim = store.claim_workflow("sequential", worker_id, ttl=15.0)
    return store, claim, worker_id



def best_of(fn: Callable[[], Any], number: int, repeat: int = 5) -> float:
    """Microseconds per call: the best of ``repeat`` rounds of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def query_costs(workdir: Path) -> list[dict[str, Any]]:
    """Each hot-path peewee query as the engine calls it vs its SQL on the raw connection."""
    store = open_store(workdir / "queries.db", synchronous="OFF")
    try:
        now = time.time()
        store.submit("wf", "bench_sequential", "{}")
        store.register_worker("w", names=["bench_sequential"])
        claim = store.claim_workflow("wf", "w", ttl=15.0)
        assert claim is not None
        token = claim.token
        conn = store.db.connection()
        Lease, Step, Workflow = store.m.Lease, store.m.Step, store.m.Workflow
        counter = iter(range(10**9))
        rows: list[dict[str, Any]] = []

        def compare(label: str, call: Callable[[], Any], raw_sql: str, raw_params: Callable[[], tuple], number: int) -> None:
            peewee_us = best_of(call, number)
            raw_us = best_of(lambda: conn.execute(raw_sql, raw_params()).fetchall(), number)
            rows.append({"query": label, "peewee_us": peewee_us, "raw_us": raw_us, "overhead_us": peewee_us - raw_us})

        # Reads and writes below run in autocommit (no transaction): they isolate statement cost.
        compare(
            "fence: Lease.select(token).where(...).scalar()",
            lambda: store._fence("wf", "w", token),
            "SELECT token FROM leases WHERE workflow_id = ? AND worker_id = ?",
            lambda: ("wf", "w"),
            2000,
        )
        conn.execute("INSERT INTO steps (workflow_id, step_key, name, scope, position, status, attempts) VALUES ('wf','noop#0','noop','',0,'RUNNING',1)")
        compare(
            "Step.get_or_none(pk) in start_step",
            lambda: Step.get_or_none((Step.workflow_id == "wf") & (Step.step_key == "noop#0")),
            "SELECT * FROM steps WHERE workflow_id = ? AND step_key = ? LIMIT 1",
            lambda: ("wf", "noop#0"),
            2000,
        )
        compare(
            "Step.insert(10 columns).execute() in start_step",
            lambda: Step.insert(
                workflow_id="wf", step_key=f"i#{next(counter)}", name="noop", scope="", position=1,
                status=StepStatus.RUNNING.value, attempts=1, deadline=None, started_at=now, worker_id="w",
            ).execute(),
            "INSERT INTO steps (workflow_id, step_key, name, scope, position, status, attempts, deadline, started_at, worker_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
            lambda: ("wf", f"r#{next(counter)}", "noop", "", 1, "RUNNING", 1, None, now, "w"),
            1000,
        )  # fmt: skip
        compare(
            "Step.update(6 columns).where(pk).execute() in complete_step",
            lambda: Step.update(
                status=StepStatus.COMPLETED.value, output=OUTPUT, error=None, finished_at=now, deadline=None, worker_id="w"
            ).where((Step.workflow_id == "wf") & (Step.step_key == "noop#0")).execute(),
            "UPDATE steps SET status = ?, output = ?, error = ?, finished_at = ?, deadline = ?, worker_id = ? WHERE workflow_id = ? AND step_key = ?",
            lambda: ("COMPLETED", OUTPUT, None, now, None, "w", "wf", "noop#0"),
            2000,
        )  # fmt: skip
        compare(
            "Workflow.get_by_id(id) (claim, submit)",
            lambda: Workflow.get_by_id("wf"),
            "SELECT * FROM workflows WHERE id = ? LIMIT 1",
            lambda: ("wf",),
            2000,
        )
        compare(
            "Lease.update(expires_at, heartbeat_at).where(worker_id) (heartbeat)",
            lambda: Lease.update(expires_at=now + 15, heartbeat_at=now).where(Lease.worker_id == "w").execute(),
            "UPDATE leases SET expires_at = ?, heartbeat_at = ? WHERE worker_id = ?",
            lambda: (now + 15, now, "w"),
            2000,
        )
        # Transactions: peewee's atomic() vs raw BEGIN IMMEDIATE / COMMIT, both empty.
        def peewee_txn() -> None:
            with store.db.atomic(lock_type="IMMEDIATE"):
                pass

        def store_write() -> None:
            store.write(lambda: None)

        def raw_txn() -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("COMMIT")

        txn_raw = best_of(raw_txn, 2000)
        rows.append({"query": "empty db.atomic(lock_type='IMMEDIATE')", "peewee_us": best_of(peewee_txn, 2000), "raw_us": txn_raw})
        rows.append({"query": "empty Store.write(body) (atomic + retry wrapper)", "peewee_us": best_of(store_write, 2000), "raw_us": txn_raw})
        for row in rows[-2:]:
            row["overhead_us"] = row["peewee_us"] - row["raw_us"]
        return rows
    finally:
        store.close()


def claim_and_heartbeat(workdir: Path, mode: str) -> dict[str, Any]:
    path = workdir / f"claim-{mode}.db"
    store = open_store(path, synchronous=mode)
    out: dict[str, Any] = {}
    try:
        for i in range(200):
            store.submit(f"c{i:04d}", "bench_onboarding", "{}")
        store.register_worker("w", names=["bench_onboarding"])

        def capture(label: str, fn: Callable[[], Any], n: int) -> None:
            times = []
            with Capture(store.db) as cap:
                for _ in range(n):
                    start = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - start)
            grouped = cap.grouped()
            sqlite_s = sum(s for _, _, s in grouped)
            out[label] = {
                "us_each": statistics.median(times) * 1e6,
                "sqlite_us_each": sqlite_s / n * 1e6,
                "statements_each": sum(c for _, c, _ in grouped) / n,
                "statements": [{"sql": shorten(sql), "per_call": c / n, "us_each": s / c * 1e6} for sql, c, s in grouped],
            }

        held: list[tuple[str, int]] = []

        def claim() -> None:
            got = store.claim_next("w", ["bench_onboarding"], ttl=15.0)
            if got is not None:
                held.append((got.workflow.id, got.token))

        capture("claim_next (hit)", claim, 100)
        # Empty: nothing runnable for a name nobody submitted.
        capture("claim_next (empty)", lambda: store.claim_next("w", ["nothing_here"], ttl=15.0), 200)
        capture("heartbeat (100 leases)", lambda: store.heartbeat("w", ttl=15.0, leases=held), 100)

        # Opening a connection: what every new thread pays (pool threads and parallel branches).
        def reopen() -> None:
            store.close()
            store.db.connect()

        out["connection open (connect + 4 pragmas)"] = {"us_each": best_of(reopen, 200, repeat=3)}
    finally:
        store.close()
    return out


def statement_sets(workdir: Path, mode: str, steps: int, repeat: int) -> list[dict[str, Any]]:
    """The SQL of one step under three designs, run on raw sqlite3 (no ORM, cached statements).

    ``current``: what store.py sends today (fence SELECT in both transactions, a
    SELECT of the step row before the INSERT); ``no read``: the step-row SELECT
    dropped (the context already knows which steps are recorded);
    ``fenced writes``: the fence folded into the write itself
    (``INSERT ... SELECT ... WHERE EXISTS (lease)`` / ``UPDATE ... AND EXISTS``),
    one statement per transaction — the floor plus a primary-key probe of
    ``leases``.
    """
    from .floor import COMPLETE, INSERT, connect, create_schema

    fence = "SELECT token FROM leases WHERE workflow_id = ? AND worker_id = ?"
    read = "SELECT * FROM steps WHERE workflow_id = ? AND step_key = ? LIMIT 1"
    exists = "EXISTS (SELECT 1 FROM leases WHERE workflow_id = ? AND worker_id = ? AND token = ?)"
    insert_fenced = (
        "INSERT INTO steps (workflow_id, step_key, name, scope, position, status, attempts, deadline, started_at, "
        f"worker_id) SELECT ?, ?, ?, ?, ?, 'RUNNING', 1, NULL, ?, ? WHERE {exists}"
    )
    complete_fenced = COMPLETE + f" AND {exists}"

    def run(variant: str, path: Path) -> float:
        create_schema(path, mode)
        conn = connect(path, mode)
        ex = conn.execute
        ex("INSERT INTO leases (workflow_id, worker_id, token, expires_at, heartbeat_at) VALUES ('wf', 'w', 1, 1e12, 0)")
        start = time.perf_counter()
        for i in range(steps):
            key = f"noop#{i + 1}"
            ex("BEGIN IMMEDIATE")
            if variant == "fenced writes":
                if ex(insert_fenced, ("wf", key, "noop", "", i, time.time(), "w", "wf", "w", 1)).rowcount != 1:
                    raise AssertionError("fence")
            else:
                if ex(fence, ("wf", "w")).fetchone()[0] != 1:
                    raise AssertionError("fence")
                if variant == "current":
                    ex(read, ("wf", key)).fetchone()
                ex(INSERT, ("wf", key, "noop", "", i, time.time(), "w"))
            ex("COMMIT")
            ex("BEGIN IMMEDIATE")
            if variant == "fenced writes":
                if ex(complete_fenced, (OUTPUT, time.time(), "w", "wf", key, "wf", "w", 1)).rowcount != 1:
                    raise AssertionError("fence")
            else:
                if ex(fence, ("wf", "w")).fetchone()[0] != 1:
                    raise AssertionError("fence")
                ex(COMPLETE, (OUTPUT, time.time(), "w", "wf", key))
            ex("COMMIT")
        took = time.perf_counter() - start
        conn.close()
        return took / steps * 1e6

    rows = []
    for variant, statements in (("floor (unfenced)", 2), ("current", 5), ("no read", 4), ("fenced writes", 2)):
        samples = []
        for rep in range(repeat):
            path = workdir / f"sets-{mode}-{variant.split()[0]}-{rep}.db"
            if variant.startswith("floor"):
                samples.append(floor_per_step(Databases(workdir), mode, steps, f"sets{rep}") * 1e6)
            else:
                samples.append(run(variant, path))
        rows.append({"variant": variant, "statements": statements, "us_per_step": statistics.median(samples)})
    return rows


def contention(workdir: Path, mode: str, threads: int, steps: int) -> dict[str, Any]:
    """``threads`` sequential workflows at once in one process: how long BEGIN IMMEDIATE waits.

    SQLite's busy handler sleeps (1, 2, 5, 10 ... 100 ms) and retries instead of
    queueing, so a waiter can sleep long after the lock was released.
    """
    reg = registry()
    store = open_store(workdir / f"contention-{mode}.db", synchronous=mode)
    try:
        worker_id = new_worker_id()
        store.register_worker(worker_id, names=reg.names())
        claims = []
        for i in range(threads):
            store.submit(f"seq{i}", "bench_sequential", json.dumps({"steps": steps}))
            claims.append(store.claim_workflow(f"seq{i}", worker_id, ttl=60.0))

        def body(claim: Any) -> None:
            try:
                run_claim(store, reg, claim, worker_id=worker_id)
            finally:
                store.close()

        with Capture(store.db) as cap:
            start = time.perf_counter()
            pool = [threading.Thread(target=body, args=(c,)) for c in claims]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            wall = time.perf_counter() - start
        waits = sorted(w for _, w, _ in cap.spans)
        from .measure import percentile

        return {
            "threads": threads,
            "steps_each": steps,
            "us_per_step_overall": wall / (threads * steps) * 1e6,
            "begin_wait_ms": {
                "p50": percentile(waits, 50) * 1e3,
                "p90": percentile(waits, 90) * 1e3,
                "p99": percentile(waits, 99) * 1e3,
                "max": waits[-1] * 1e3,
            },
            "waited_share_of_wall": sum(waits) / (wall * threads),
            "lock_held_share_of_wall": cap.lock_held() / wall,
        }
    finally:
        store.close()
