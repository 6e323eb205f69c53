"""Where the time of a durable step goes: ``python -m benchmarks.profile``.

    python -m benchmarks.profile                      # 500 steps, NORMAL
    python -m benchmarks.profile --sync FULL --steps 300 --top 25

Sections (all on fresh databases in a temporary folder):

1. wall time per step of the engine (``bench_sequential`` through
   ``run_claim``) and of the raw floor, for synchronous OFF / NORMAL / FULL:
   the difference between modes is the cost of syncing;
2. every SQL statement the engine sends per step, captured with peewee's
   ``query_hooks`` (time spent inside ``sqlite3`` executing it), plus BEGIN
   and COMMIT (timed by wrapping ``database.begin`` / ``database.commit``):
   SQLite time vs everything else (Python: peewee + engine);
3. cProfile of the same run, self time grouped by where the code lives
   (peewee, backends/, context.py/engine.py, sqlite3 C calls, json, ...);
4. the peewee cost of each hot-path query, call by call: the peewee call as
   the engine makes it vs the same SQL on the raw connection (cached
   prepared statement), and ``db.atomic()`` vs a raw BEGIN IMMEDIATE/COMMIT;
5. the statements of ``claim_next`` (hit and empty), of a heartbeat, and
   the cost of opening a connection (done per workflow and per parallel
   branch today, since threads close their connection when they end);
6. with ``strace`` available: fsync/fdatasync calls per step in each mode;
7. the SQL of one step under three designs (today's, without the step-row
   read, with the fence folded into the write) on raw sqlite3;
8. context + engine Python per step with a store that does nothing;
9. four workflows at once in one process: how long BEGIN IMMEDIATE waits
   (SQLite's busy handler sleeps instead of queueing) and how much of the
   time the write lock is held.

Profiles are for finding the hot spots; absolute numbers come from the
un-profiled timings (sections 1, 2, 4, 5).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
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

from .floor import OUTPUT, floor_per_step
from .step import registry, run_sequential


# --------------------------------------------------------------------------- capture


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


def wall_times(workdir: Path, steps: int, repeat: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for mode in ("OFF", "NORMAL", "FULL"):
        engine, floor = [], []
        for rep in range(repeat):
            floor.append(floor_per_step(workdir, mode, steps, f"p{rep}") * 1e6)
            engine.append(run_sequential(workdir / f"wall-{mode}-{rep}.db", mode, steps) / steps * 1e6)
        out[mode] = {"engine_us": statistics.median(engine), "floor_us": statistics.median(floor)}
    return out


def prepared_claim(path: Path, mode: str, steps: int) -> tuple[Store, Any, str]:
    reg = registry()
    store = open_store(path, synchronous=mode)
    store.submit("sequential", "bench_sequential", json.dumps({"steps": steps}))
    worker_id = new_worker_id()
    store.register_worker(worker_id, names=reg.names())
    claim = store.claim_workflow("sequential", worker_id, ttl=15.0)
    return store, claim, worker_id


def statements_per_step(workdir: Path, mode: str, steps: int) -> dict[str, Any]:
    store, claim, worker_id = prepared_claim(workdir / f"capture-{mode}.db", mode, steps)
    try:
        with Capture(store.db) as cap:
            start = time.perf_counter()
            run_claim(store, registry(), claim, worker_id=worker_id)
            total = time.perf_counter() - start
    finally:
        store.close()
    grouped = cap.grouped()
    sqlite_s = sum(s for _, _, s in grouped)
    return {
        "total_us": total / steps * 1e6,
        "sqlite_us": sqlite_s / steps * 1e6,
        "other_us": (total - sqlite_s) / steps * 1e6,
        "statements_per_step": sum(n for _, n, _ in grouped) / steps,
        "lock_held_us": cap.lock_held() / steps * 1e6,
        "statements": [
            {"sql": shorten(sql), "per_step": n / steps, "us_each": s / n * 1e6, "us_per_step": s / steps * 1e6}
            for sql, n, s in grouped
        ],
    }


BUCKETS = (
    ("sqlite3 C calls (execute/commit/fetch)", lambda f, fn: f == "~" and "sqlite3" in fn),
    ("peewee.py", lambda f, fn: f.endswith("peewee.py")),
    ("durable_workers/backends/", lambda f, fn: os.path.join("durable_workers", "backends") in f),
    ("durable_workers/context.py + engine.py", lambda f, fn: f.endswith(("context.py", "engine.py"))),
    ("dataclasses (record construction)", lambda f, fn: f.endswith("dataclasses.py") or f == "<string>"),
    ("json", lambda f, fn: os.sep + "json" + os.sep in f or "json" in fn),
    ("threading / locks", lambda f, fn: f.endswith("threading.py") or "lock" in fn),
    ("benchmarks app (the no-op steps)", lambda f, fn: os.sep + "benchmarks" + os.sep in f),
)


def profile_buckets(workdir: Path, mode: str, steps: int, top: int) -> dict[str, Any]:
    store, claim, worker_id = prepared_claim(workdir / f"profile-{mode}.db", mode, steps)
    profiler = cProfile.Profile()
    try:
        start = time.perf_counter()
        profiler.enable()
        run_claim(store, registry(), claim, worker_id=worker_id)
        profiler.disable()
        total = time.perf_counter() - start
    finally:
        store.close()
    stats = pstats.Stats(profiler)
    buckets: dict[str, float] = defaultdict(float)
    functions = []
    for (filename, line, name), (cc, nc, tt, ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        label = "other (builtins, time, logging, ...)"
        for bucket, match in BUCKETS:
            if match(filename, name):
                label = bucket
                break
        buckets[label] += tt
        where = "built-in" if filename == "~" else f"{os.path.basename(filename)}:{line}"
        functions.append((tt, nc, ct, f"{where} {name}"))
    functions.sort(reverse=True)
    profiled_total = sum(buckets.values())
    return {
        "profiled_us_per_step": total / steps * 1e6,
        "buckets": sorted(
            ((k, v / profiled_total * 100, v / steps * 1e6) for k, v in buckets.items()), key=lambda r: -r[1]
        ),
        "top": [
            {"function": f, "calls_per_step": nc / steps, "self_us_per_step": tt / steps * 1e6, "cum_us_per_step": ct / steps * 1e6}
            for tt, nc, ct, f in functions[:top]
        ],
    }


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
                samples.append(floor_per_step(workdir, mode, steps, f"sets{rep}") * 1e6)
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


class NullStore:
    """Answers the engine's store calls without a database: isolates context/engine Python cost."""

    path = ":memory:"

    def start_step(self, *args: Any, **kwargs: Any) -> Any:
        from durable_workers.records import StepStart

        return StepStart(1, None)

    def complete_step(self, *args: Any, **kwargs: Any) -> None:
        return None

    def finish_workflow(self, *args: Any, **kwargs: Any) -> None:
        return None

    def close(self) -> None:
        return None


def engine_without_db(steps: int, repeat: int) -> float:
    """µs per step of Context + run_claim with a store that does nothing."""
    from durable_workers.records import Claim, WorkflowRecord

    record = WorkflowRecord(
        id="wf", name="bench_sequential", input={"steps": steps}, status="RUNNING", result=None, error=None,
        attempts=1, run_at=0.0, created_at=0.0, updated_at=0.0, crash_at=None,
    )  # fmt: skip
    claim = Claim(workflow=record, token=1, steps=())
    reg = registry()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        outcome = run_claim(NullStore(), reg, claim, worker_id="w")  # type: ignore[arg-type]
        samples.append((time.perf_counter() - start) / steps * 1e6)
        assert outcome.status == "COMPLETED", outcome
    return statistics.median(samples)


STRACE_CHILD = """
import sys
from pathlib import Path
from benchmarks.step import run_sequential
run_sequential(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
"""


def fsyncs(workdir: Path, steps: int) -> dict[str, dict[str, float]] | None:
    if shutil.which("strace") is None:
        return None
    root = Path(__file__).resolve().parent.parent
    out: dict[str, dict[str, float]] = {}
    for mode in ("NORMAL", "FULL"):
        counts = {}
        for n in (0, steps):  # the difference removes start-up (schema, submit, claim)
            log = workdir / f"strace-{mode}-{n}.txt"
            subprocess.run(
                ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(log),
                 sys.executable, "-c", STRACE_CHILD, str(workdir / f"strace-{mode}-{n}.db"), mode, str(n)],
                cwd=root, check=True, capture_output=True,
            )  # fmt: skip
            calls = 0
            for line in log.read_text().splitlines():
                parts = line.split()
                if parts and parts[-1] in ("fsync", "fdatasync"):
                    calls += int(parts[3]) if len(parts) >= 5 else 0
            counts[n] = calls
        out[mode] = {"fsyncs_per_step": (counts[steps] - counts[0]) / steps}
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--sync", default="NORMAL", help="mode for the statement capture and cProfile [NORMAL]")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of the wall-time runs [3]")
    parser.add_argument("--top", type=int, default=20, help="functions listed from the profile [20]")
    parser.add_argument("--out", help="write everything as JSON here too")
    args = parser.parse_args(argv)
    mode = args.sync.upper()
    workdir = Path(tempfile.mkdtemp(prefix="durable-profile-"))
    report: dict[str, Any] = {"steps": args.steps, "sync": mode}
    try:
        p = print
        report["wall"] = wall = wall_times(workdir, args.steps, args.repeat)
        p(f"== 1. wall time per step ({args.steps} sequential no-op steps, median of {args.repeat})")
        p(f"{'mode':8} {'engine µs':>10} {'floor µs':>10} {'ratio':>6}")
        for m, row in wall.items():
            p(f"{m:8} {row['engine_us']:10.1f} {row['floor_us']:10.1f} {row['engine_us'] / row['floor_us']:6.1f}")
        p(f"sync cost per step (NORMAL - OFF): engine {wall['NORMAL']['engine_us'] - wall['OFF']['engine_us']:+.1f} µs, "
          f"floor {wall['NORMAL']['floor_us'] - wall['OFF']['floor_us']:+.1f} µs; "
          f"(FULL - NORMAL): engine {wall['FULL']['engine_us'] - wall['NORMAL']['engine_us']:+.1f} µs, "
          f"floor {wall['FULL']['floor_us'] - wall['NORMAL']['floor_us']:+.1f} µs")  # fmt: skip

        report["statements"] = st = statements_per_step(workdir, mode, args.steps)
        p(f"\n== 2. statements per step ({mode}): {st['statements_per_step']:.2f} statements, "
          f"{st['total_us']:.0f} µs per step = {st['sqlite_us']:.0f} µs inside sqlite3 (execute + BEGIN + COMMIT) "
          f"+ {st['other_us']:.0f} µs Python (peewee + engine); write lock held {st['lock_held_us']:.0f} µs per step "
          f"({st['lock_held_us'] / st['total_us'] * 100:.0f} %)")  # fmt: skip
        p(f"{'per step':>8} {'µs each':>8} {'µs/step':>8}  statement")
        for row in st["statements"]:
            p(f"{row['per_step']:8.2f} {row['us_each']:8.1f} {row['us_per_step']:8.1f}  {row['sql']}")

        report["profile"] = prof = profile_buckets(workdir, mode, args.steps, args.top)
        p(f"\n== 3. cProfile self time by location ({mode}; profiled run {prof['profiled_us_per_step']:.0f} µs/step, "
          "inflated by the profiler: read the shares)")  # fmt: skip
        for label, share, us in prof["buckets"]:
            p(f"{share:6.1f} %  {us:7.1f} µs/step (profiled)  {label}")
        p(f"\ntop {args.top} functions by self time:")
        p(f"{'calls/step':>10} {'self µs':>8} {'cum µs':>8}  function")
        for row in prof["top"]:
            p(f"{row['calls_per_step']:10.2f} {row['self_us_per_step']:8.1f} {row['cum_us_per_step']:8.1f}  {row['function']}")

        report["queries"] = queries = query_costs(workdir)
        p("\n== 4. peewee call vs the same SQL on the raw connection (µs per call, best of 5, synchronous=OFF, autocommit)")
        p(f"{'peewee':>8} {'raw':>8} {'overhead':>8}  query")
        for row in queries:
            p(f"{row['peewee_us']:8.1f} {row['raw_us']:8.1f} {row['overhead_us']:8.1f}  {row['query']}")

        report["claim"] = claim = claim_and_heartbeat(workdir, mode)
        p(f"\n== 5. claim, heartbeat, connections ({mode}; µs per call, median)")
        for label, row in claim.items():
            extra = ""
            if "statements_each" in row:
                extra = f" — {row['statements_each']:.1f} statements, {row['sqlite_us_each']:.0f} µs inside sqlite3"
            p(f"{label}: {row['us_each']:.0f} µs{extra}")
            for s in row.get("statements", []):
                p(f"    {s['per_call']:5.2f} × {s['us_each']:7.1f} µs  {s['sql']}")

        report["fsync"] = fs = fsyncs(workdir, min(args.steps, 200))
        if fs is None:
            p("\n== 6. strace not installed: fsync counts skipped")
        else:
            p("\n== 6. fsync + fdatasync calls per step (strace -f -c)")
            for m, row in fs.items():
                p(f"{m:8} {row['fsyncs_per_step']:.2f}")
        report["sets"] = sets = statement_sets(workdir, mode, args.steps, args.repeat)
        p(f"\n== 7. the SQL of one step under three designs, raw sqlite3 ({mode}, µs per step, median of {args.repeat})")
        for row in sets:
            p(f"{row['us_per_step']:8.1f}  {row['statements']} statements + 2 transactions  {row['variant']}")

        report["engine_without_db_us"] = bare = engine_without_db(args.steps, max(args.repeat, 5))
        p(f"\n== 8. context + engine Python per step with a store that does nothing: {bare:.1f} µs; "
          f"projected step with prepared, fenced writes: {sets[-1]['us_per_step'] + bare:.0f} µs "
          f"= {(sets[-1]['us_per_step'] + bare) / sets[0]['us_per_step']:.2f}× the floor (plus the store's own Python)")  # fmt: skip

        report["contention"] = con = contention(workdir, mode, 4, min(args.steps, 200))
        w = con["begin_wait_ms"]
        p(f"\n== 9. {con['threads']} sequential workflows at once in one process ({mode}): "
          f"{con['us_per_step_overall']:.0f} µs per step overall; BEGIN IMMEDIATE waits p50 {w['p50']:.2f} ms, "
          f"p90 {w['p90']:.2f} ms, p99 {w['p99']:.2f} ms, max {w['max']:.1f} ms; threads spent "
          f"{con['waited_share_of_wall'] * 100:.0f} % of their time waiting for the lock, which was held "
          f"{con['lock_held_share_of_wall'] * 100:.0f} % of the wall time")  # fmt: skip

        if args.out:
            from .measure import dump_json

            dump_json(args.out, report)
            p(f"\nJSON written to {args.out}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
