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
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from durable_workers.engine import run_claim

from .databases import Databases
from .floor import floor_per_step
from .profile_sql import Capture, claim_and_heartbeat, contention, prepared_claim, query_costs, shorten, statement_sets
from .step import registry, run_sequential


# --------------------------------------------------------------------------- capture


def wall_times(workdir: Path, steps: int, repeat: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for mode in ("OFF", "NORMAL", "FULL"):
        engine, floor = [], []
        for rep in range(repeat):
            floor.append(floor_per_step(Databases(workdir), mode, steps, f"p{rep}") * 1e6)
            engine.append(run_sequential(workdir / f"wall-{mode}-{rep}.db", mode, steps) / steps * 1e6)
        out[mode] = {"engine_us": statistics.median(engine), "floor_us": statistics.median(floor)}
    return out


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
