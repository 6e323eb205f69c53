"""Queues: what a claim costs with queue limits on, and what a limited queue delivers against its limit.

**Claim cost** (``bench_queue_claims``). Per table size N, two fresh databases
of the same dialect are filled by one raw bulk insert (a recursive CTE on
SQLite, ``generate_series`` on PostgreSQL; not engine code) with N PENDING
workflows due now, in FIFO order:

- ``default``: in the default queue (unlimited: the claim skips every queue check);
- ``limited``: in queue ``bench_limited`` with every limit on — ``concurrency``,
  ``worker_concurrency``, ``rate`` and ``per_key_concurrency=1`` over 1,000
  concurrency keys — set high enough that the timed claims are admitted, so
  the claim pays the queue plan (RUNNING counts, rate window, saturated keys)
  and the admission (queue row lock on PostgreSQL, re-count) on every take.

Each repetition, back to back: K claims that hit on ``default``, then K on
``limited`` (figures are per-repetition medians; the ratio is taken per
repetition). Then the limited queue's ``concurrency`` is lowered to what is
RUNNING, and E claims that the limit refuses are timed (N rows PENDING behind it).

**Throughput** (``bench_queue_throughput``). One fleet (2 workers × 4 slots,
app ``benchmarks.queues``) serves queues ``bench_limit_1/2/4`` (``concurrency``
1, 2, 4). Per limit L and repetition, ``L × per_slot`` one-step workflows whose
step sleeps ``step_ms`` are submitted in one transaction to queue
``bench_limit_L``; completed/s runs from that submit to the last completion.
The ceiling is L / step duration; the peak is the largest number of the
workflows whose [first start, completion] intervals overlap (it must not
exceed L).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from durable_workers import Context, Queue, workflow
from durable_workers.backends import Store, open_store
from durable_workers.backends.queues import QueueLimits

from .databases import Databases, pg_connect, reader
from .fleet import Fleet, wait_terminal
from .floor import connect
from .measure import Figure, stopwatch, time_claims

NAME = "bench_queue_step"
LIMITED = "bench_limited"
KEYS = 1_000  # distinct concurrency keys of the limited table
THROUGHPUT_LIMITS = (1, 2, 4)
FLEET_WORKERS, FLEET_SLOTS = 2, 4  # 8 slots: more than any limit, so the queue is the bound

for _limit in THROUGHPUT_LIMITS:
    Queue(f"bench_limit_{_limit}", concurrency=_limit)


@workflow
def bench_queue_step(ctx: Context, step_ms: float = 100.0) -> bool:
    """One step that sleeps ``step_ms`` (a fixed-duration call to a slow service)."""
    return bool(ctx.step("call", lambda: time.sleep(step_ms / 1000.0) or True))


# --------------------------------------------------------------------- claim cost

COLUMNS = "id, name, input, status, attempts, run_at, created_at, updated_at, queue, priority, concurrency_key"
SQLITE_FILL = (
    "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < ? - 1) "
    f"INSERT INTO workflows ({COLUMNS}) SELECT printf('q-%09d', i), ?, '{{}}', 'PENDING', 0, "
    "? + i * 1e-4, ? + i * 1e-4, ? + i * 1e-4, ?, 0, CASE WHEN ? THEN 'k' || (i % ?) END FROM seq"
)
PG_FILL = (
    f"INSERT INTO workflows ({COLUMNS}) SELECT 'q-' || lpad(i::text, 9, '0'), %s, '{{}}', 'PENDING', 0, "
    "%s + i * 1e-4, %s + i * 1e-4, %s + i * 1e-4, %s, 0, CASE WHEN %s THEN 'k' || (i %% %s) END "
    "FROM generate_series(0, %s - 1) AS i"
)


def fill(db: str, synchronous: str, rows: int, queue: str) -> float:
    """Create the schema on ``db`` and bulk-insert ``rows`` PENDING rows of ``queue``; return seconds taken.

    Rows are due (``run_at``) an hour ago, oldest first; a non-default queue's
    rows get concurrency keys ``k0`` … ``k999`` in turn.
    """
    open_store(db, synchronous=synchronous).close()
    base, keyed = time.time() - 3600.0, queue != "default"
    with stopwatch() as took:
        if db.startswith("postgres"):
            with contextlib.closing(pg_connect(db)) as conn:
                conn.execute(PG_FILL, (NAME, base, base, base, queue, keyed, KEYS, rows))
                conn.execute("ANALYZE workflows")
        else:
            conn = connect(db, synchronous)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(SQLITE_FILL, (rows, NAME, base, base, base, queue, keyed, KEYS))
                conn.execute("COMMIT")
            finally:
                conn.close()
    return took[0]


def limits(concurrency: int) -> QueueLimits:
    """The limited queue's limits: all on, ``concurrency`` as given."""
    return QueueLimits(LIMITED, concurrency, concurrency, 10 * concurrency, 3600.0, 1)


def bench_queue_claims(
    dbs: Databases, synchronous: str, *, sizes: list[int], claims: int, empty_claims: int, repeat: int
) -> list[Figure]:
    """Claim (hit) on the default vs a limited queue, their ratio, and a claim the limit refuses, per size."""
    figures: list[Figure] = []
    taken = claims * repeat
    for size in sizes:
        paths = {q: dbs.new(f"queues-{q[:7]}-{synchronous.lower()}-{size}") for q in ("default", LIMITED)}
        setup = {q: round(fill(db, synchronous, size, q), 1) for q, db in paths.items()}
        params = {"pending": size, "claims": claims, "empty_claims": empty_claims, "setup_s": setup["default"]}
        label = f"{size:,} pending"
        default = Figure("queues", f"claim (hit) default queue, {label}", "ms", synchronous, params=params)
        limited = Figure("queues", f"claim (hit) all limits on, {label}", "ms", synchronous, params=params)
        ratio = Figure("queues", f"claim (hit) limits on / default, {label}", "×", synchronous, params=params,
                       note="same run, back to back; 1 = free")  # fmt: skip
        refused = Figure("queues", f"claim refused at the limit, {label}", "ms", synchronous, params=params)
        stores = {q: open_store(db, synchronous=synchronous) for q, db in paths.items()}
        try:
            stores[LIMITED].register_queues([limits(taken + 1)])
            for rep in range(repeat):
                worker = f"queues:{synchronous}:{rep}"
                ours = time_claims(stores["default"], worker, [NAME], claims, expect_hit=True, what="queues")
                theirs = time_claims(stores[LIMITED], worker, [NAME], claims, expect_hit=True, what="queues")
                default.samples.append(ours)
                limited.samples.append(theirs)
                ratio.samples.append(theirs / ours)
            stores[LIMITED].register_queues([limits(taken)])  # now at its limit: every claim is refused
            for _ in range(repeat):
                refused.samples.append(
                    time_claims(stores[LIMITED], "queues:x", [NAME], empty_claims, expect_hit=False, what="queues")
                )
        finally:
            for store in stores.values():
                store.close()
        figures += [default, limited, ratio, refused]
        for path in paths.values() if not dbs.server else ():  # a server's databases go with the job
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    return figures


# --------------------------------------------------------------------- throughput against the limit


class QueueFleet(Fleet):
    """A benchmark fleet whose workers load this module (its queues and ``bench_queue_step``)."""

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--app") + 1] = __name__
        return cmd


def submit_to(store: Store, prefix: str, count: int, queue: str, step_ms: float) -> None:
    """Submit ``count`` ``bench_queue_step`` workflows to ``queue`` in one transaction."""
    input_json = json.dumps({"step_ms": step_ms})

    def body() -> None:
        for i in range(count):
            store.submit(f"{prefix}{i:06d}", NAME, input_json, queue=queue)

    store.write(body)


def peak_overlap(db: str, prefix: str) -> int:
    """The most workflows with ids ``prefix…`` whose [started_at, updated_at] intervals overlap."""
    with reader(db) as conn:
        rows = conn.execute(
            "SELECT started_at, updated_at FROM workflows WHERE id >= ? AND id < ?", (prefix, prefix + "~")
        ).fetchall()
    edges = sorted([(s, 1) for s, _ in rows] + [(e, -1) for _, e in rows], key=lambda x: (x[0], x[1]))
    peak = level = 0
    for _, delta in edges:
        level += delta
        peak = max(peak, level)
    return peak


def bench_queue_throughput(
    dbs: Databases, synchronous: str, *, queue_limits: tuple[int, ...], step_ms: float, per_slot: int, repeat: int,
    log_level: str,
) -> list[Figure]:  # fmt: skip
    """Completed/s of a queue with ``concurrency`` L, its ceiling L/step and the observed peak, per limit."""
    db = dbs.new(f"queues-tp-{synchronous.lower()}")
    open_store(db, synchronous=synchronous).close()
    made: dict[int, list[Figure]] = {}
    for limit in queue_limits:
        ceiling = limit / (step_ms / 1000.0)
        params = {"limit": limit, "step_ms": step_ms, "workflows": limit * per_slot, "ceiling_wf_s": ceiling,
                  "workers": FLEET_WORKERS, "concurrency": FLEET_SLOTS}  # fmt: skip
        made[limit] = [
            Figure("queues", f"limit {limit}, {step_ms:g} ms step: completed/s", "wf/s", synchronous, params=params,
                   higher_is_better=True, note=f"ceiling {ceiling:g}/s"),
            Figure("queues", f"limit {limit}, {step_ms:g} ms step: completed/s / ceiling", "×", synchronous,
                   params=params, higher_is_better=True, note="1 = the limit is the only bound"),
            Figure("queues", f"limit {limit}: peak RUNNING observed", "workflows", synchronous, params=params,
                   note=f"never above {limit}"),
        ]  # fmt: skip
    with QueueFleet(db, workers=FLEET_WORKERS, synchronous=synchronous, concurrency=FLEET_SLOTS,
                    log_level=log_level, log_path=dbs.log_path(db)) as fleet:  # fmt: skip
        store = open_store(db, synchronous=synchronous)
        try:
            for rep in range(repeat):
                for limit in queue_limits:
                    count, prefix = limit * per_slot, f"qt-l{limit}-r{rep:02d}-"
                    first = time.time()
                    submit_to(store, prefix, count, f"bench_limit_{limit}", step_ms)
                    timeout = 60.0 + count * step_ms / 1000.0 * 3
                    last, counts = wait_terminal(db, (prefix, prefix + "~"), count, timeout=timeout, fleet=fleet)
                    if counts.get("COMPLETED", 0) != count:
                        raise RuntimeError(f"queues: {counts} of {count} limit-{limit} workflows")
                    rate, figures = count / (last - first), made[limit]
                    figures[0].samples.append(rate)
                    figures[1].samples.append(rate / figures[0].params["ceiling_wf_s"])
                    figures[2].samples.append(float(peak_overlap(db, prefix)))
        finally:
            store.close()
    return [f for figures in made.values() for f in figures]
