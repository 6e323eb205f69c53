"""Step overhead: one workflow of N sequential no-op steps, run by the engine in this process.

Each repetition uses a fresh database: it submits ``bench_sequential``,
registers a worker with a live heartbeat thread (as a worker process does),
claims the workflow and times :func:`durable_workers.engine.run_claim` — every
``ctx.step`` (start transaction, the no-op, complete transaction) plus the
final ``finish_workflow`` transaction. The floor is measured in the same
repetition, right before, so the ratio compares two numbers taken under the
same machine load.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from durable_workers.backends import open_store
from durable_workers.engine import run_claim
from durable_workers.registry import Registry, load_app
from durable_workers.heartbeat import Heartbeat, LiveAttempts
from durable_workers.worker import new_worker_id

from .databases import Databases
from .floor import floor_metric, floor_per_step
from .measure import Figure, stopwatch

APP = "benchmarks.flows"


def registry() -> Registry:
    """The benchmark app's workflows (imported once)."""
    return load_app(APP)


def run_sequential(path: str | Path, synchronous: str, steps: int) -> float:
    """Run one ``bench_sequential`` workflow of ``steps`` steps; return elapsed seconds."""
    reg = registry()
    store = open_store(path, synchronous=synchronous)
    try:
        workflow_id = "sequential"
        store.submit(workflow_id, "bench_sequential", json.dumps({"steps": steps}))
        worker_id = new_worker_id()
        store.register_worker(worker_id, names=reg.names())
        attempts = LiveAttempts(threading.Event())
        heartbeat = Heartbeat(store, worker_id, 15.0, attempts).start()
        try:
            claim = store.claim_workflow(workflow_id, worker_id, ttl=15.0)
            assert claim is not None
            control = attempts.begin(workflow_id, claim.token)
            with stopwatch() as elapsed:
                outcome = run_claim(store, reg, claim, worker_id=worker_id, control=control)
        finally:
            heartbeat.stop()
            store.expire_worker(worker_id, state="stopped")
        if outcome.status != "COMPLETED":
            raise RuntimeError(f"bench_sequential ended {outcome.status}: {outcome.error}")
        return elapsed[0]
    finally:
        store.close()


def bench_step(dbs: Databases, synchronous: str, *, steps: int, repeat: int) -> list[Figure]:
    """Floor, engine per-step time and their ratio, each repetition measured back to back."""
    params = {"steps": steps}
    target = "target ≤ 1.5×" if dbs.server else "target ≤ 2×"
    floor = Figure("floor", floor_metric(dbs), "µs", synchronous, params=params)
    engine = Figure("step", "engine per step", "µs", synchronous, params=params)
    ratio = Figure("step", "ratio to floor", "×", synchronous, params=params, note=target)
    for rep in range(repeat):
        raw = floor_per_step(dbs, synchronous, steps, f"s{rep}")
        path = dbs.new(f"step-{synchronous.lower()}-r{rep}")
        per_step = run_sequential(path, synchronous, steps) / steps
        floor.samples.append(raw * 1e6)
        engine.samples.append(per_step * 1e6)
        ratio.samples.append(per_step / raw)
    return [floor, engine, ratio]
