"""Latency and idle cost of a fleet at rest.

Per repetition, a fresh fleet (``durable-supervisor``, W workers) is started
and left alone for a settle period. Then:

- idle CPU: user + system CPU seconds of each worker process and of the
  supervisor, over a window of ``idle_s`` seconds (psutil), as % of one core;
- submit-to-start: S times, after a random idle gap, one ``bench_one_step``
  workflow is submitted through ``Store.submit`` and the latency is the
  step's recorded ``started_at`` minus the time taken just before the submit
  call. p50 and p99 per repetition; the figure is their median over
  repetitions.

On PostgreSQL it runs twice: idle workers woken by NOTIFY (their LISTEN
connection), and by polling alone (the store's ``?listen=off``).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from durable_workers.backends import open_store

from .databases import Databases, reader, with_option
from .fleet import Fleet, FleetError, wait_terminal
from .measure import Figure, percentile


def first_step_start(db: str | Path, workflow_id: str, *, timeout: float = 30.0) -> float:
    """``started_at`` of the workflow's first step, once it exists."""
    deadline = time.monotonic() + timeout
    with reader(db) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT MIN(started_at) FROM steps WHERE workflow_id = ?", (workflow_id,)
            ).fetchone()
            if row and row[0] is not None:
                return float(row[0])
            time.sleep(0.005)
    raise FleetError(f"workflow {workflow_id} did not start a step within {timeout}s")


def bench_latency(
    dbs: Databases,
    synchronous: str,
    *,
    listen: bool | None = None,
    workers: int,
    samples: int,
    idle_s: float,
    settle_s: float,
    gap: tuple[float, float],
    repeat: int,
    log_level: str,
) -> list[Figure]:
    """Idle CPU and submit-to-start p50/p95/p99; ``listen`` (PostgreSQL) picks NOTIFY or polling only."""
    params = {"workers": workers, "samples": samples, "idle_window_s": idle_s, "gap_s": list(gap)}
    tag = "" if listen is None else (" (NOTIFY)" if listen else " (polling)")
    target = "target ≤ 10 ms" if listen else "target ≤ 20 ms" if listen is None else ""
    p50 = Figure("latency", f"submit-to-start p50{tag}", "ms", synchronous, params=params, note=target)
    p95 = Figure("latency", f"submit-to-start p95{tag}", "ms", synchronous, params=params)
    p99 = Figure("latency", f"submit-to-start p99{tag}", "ms", synchronous, params=params)
    cpu_worker = Figure(
        "latency", f"idle CPU per worker{tag}", "% core", synchronous, params=params, note="target < 1 %"
    )
    cpu_worker_max = Figure("latency", f"idle CPU, busiest worker{tag}", "% core", synchronous, params=params)
    cpu_supervisor = Figure("latency", f"idle CPU supervisor{tag}", "% core", synchronous, params=params)
    rng = random.Random(1234)
    for rep in range(repeat):
        db = dbs.new(f"lat-{synchronous.lower()}-{'poll' if listen is False else 'wake'}-r{rep}")
        open_store(db, synchronous=synchronous).close()
        fleet_db = with_option(db, "listen=off") if listen is False else db
        with Fleet(
            fleet_db, workers=workers, synchronous=synchronous, log_level=log_level, log_path=dbs.log_path(db)
        ) as fleet:
            time.sleep(settle_s)  # workers back off to their idle poll interval
            before = fleet.cpu_seconds()
            wall = time.perf_counter()
            time.sleep(idle_s)
            after = fleet.cpu_seconds()
            wall = time.perf_counter() - wall
            assert fleet.process is not None
            supervisor_pid = fleet.process.pid
            per_worker = [
                100.0 * (after[pid] - before[pid]) / wall
                for pid in after
                if pid in before and pid != supervisor_pid
            ]
            if len(per_worker) != workers:
                raise FleetError(f"expected {workers} workers during the idle window, saw {len(per_worker)}")
            cpu_worker.samples.append(sum(per_worker) / len(per_worker))
            cpu_worker_max.samples.append(max(per_worker))
            cpu_supervisor.samples.append(100.0 * (after[supervisor_pid] - before[supervisor_pid]) / wall)

            store = open_store(db, synchronous=synchronous)
            latencies = []
            try:
                for i in range(samples):
                    time.sleep(rng.uniform(*gap))
                    workflow_id = f"lat-{i:05d}"
                    submitted = time.time()
                    store.submit(workflow_id, "bench_one_step", "{}")
                    latencies.append((first_step_start(db, workflow_id) - submitted) * 1000.0)
                    wait_terminal(db, (workflow_id, workflow_id + "~"), 1, timeout=30.0, fleet=fleet, poll=0.005)
            finally:
                store.close()
            p50.samples.append(percentile(latencies, 50))
            p95.samples.append(percentile(latencies, 95))
            p99.samples.append(percentile(latencies, 99))
            p50.params.setdefault("all_ms", []).append([round(x, 2) for x in latencies])
    return [p50, p95, p99, cpu_worker, cpu_worker_max, cpu_supervisor]
