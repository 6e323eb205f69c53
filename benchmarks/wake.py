"""Wake lateness of a sleep storm: how late sleeping workflows resume.

Per storm size and repetition, a fresh fleet (W workers) is started and ``count``
``bench_sleep`` workflows are submitted at once, each sleeping a duration drawn
uniformly from ``sleep_s`` (seeded). Each records its wake time
(``durable:sleep``, the database clock plus the duration) and, right after the
sleep, ``ctx.now()`` (the database clock when it resumed). Lateness is resume
minus wake time, per workflow; p50 and p99 per repetition, the figure their
median over repetitions. Goals: p50 ≤ 50 ms, p99 ≤ one idle poll interval
(the worker's ``poll_max``, 1 s). A small storm shows the wake path itself; a
large one, on a small machine, the fleet's backlog (the first claims of the
late submits compete with the first wakes).
"""

from __future__ import annotations

import json
import random

from durable_workers.backends import open_store
from durable_workers.worker import WorkerOptions

from .databases import Databases, reader
from .fleet import Fleet, FleetError, wait_terminal
from .measure import Figure, percentile

PREFIX = "wake-"


def lateness_ms(db: str) -> list[float]:
    """Resume time minus wake time (ms) of every completed ``bench_sleep`` workflow of ``db``."""
    with reader(db) as conn:
        rows = conn.execute(
            "SELECT w.result, s.output FROM workflows w JOIN steps s ON s.workflow_id = w.id"
            " WHERE w.status = 'COMPLETED' AND s.step_key = 'durable:sleep#1'"
        ).fetchall()
    return [(float(json.loads(resumed)) - float(json.loads(wake_at))) * 1000.0 for resumed, wake_at in rows]


def bench_wake(
    dbs: Databases,
    synchronous: str,
    *,
    workers: int,
    counts: tuple[int, ...],
    sleep_s: tuple[float, float],
    repeat: int,
    log_level: str,
) -> list[Figure]:
    """Wake lateness p50/p99/max of storms of each of ``counts`` workflows sleeping ``sleep_s`` s on ``workers`` workers."""
    figures: list[Figure] = []
    for count in counts:
        figures += _storm(dbs, synchronous, workers=workers, count=count, sleep_s=sleep_s, repeat=repeat, log_level=log_level)
    return figures


def _storm(
    dbs: Databases, synchronous: str, *, workers: int, count: int, sleep_s: tuple[float, float], repeat: int, log_level: str
) -> list[Figure]:
    poll_ms = WorkerOptions().poll_max * 1000.0
    params = {"workers": workers, "workflows": count, "sleep_s": list(sleep_s)}
    name = f"sleep storm n={count} lateness"
    p50 = Figure("wake", f"{name} p50", "ms", synchronous, params=params, note="goal ≤ 50 ms")
    p99 = Figure("wake", f"{name} p99", "ms", synchronous, params=params, note=f"goal ≤ {poll_ms:g} ms (one poll)")
    worst = Figure("wake", f"{name} max", "ms", synchronous, params=params)
    rng = random.Random(4321)
    for rep in range(repeat):
        db = dbs.new(f"wake-{synchronous.lower()}-n{count}-r{rep}")
        open_store(db, synchronous=synchronous).close()
        with Fleet(db, workers=workers, synchronous=synchronous, log_level=log_level, log_path=dbs.log_path(db)) as fleet:
            store = open_store(db, synchronous=synchronous)
            try:
                for i in range(count):
                    seconds = rng.uniform(*sleep_s)
                    store.submit(f"{PREFIX}{i:06d}", "bench_sleep", json.dumps({"seconds": seconds}))
            finally:
                store.close()
            _, by_status = wait_terminal(db, (PREFIX, PREFIX + "~"), count, timeout=120.0 + 10 * sleep_s[1], fleet=fleet)
        late = lateness_ms(db)
        if len(late) != count:
            raise FleetError(f"{len(late)}/{count} sleepers completed ({by_status})")
        p50.samples.append(percentile(late, 50))
        p99.samples.append(percentile(late, 99))
        worst.samples.append(max(late))
    return [p50, p99, worst]
