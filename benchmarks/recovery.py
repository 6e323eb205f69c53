"""Recovery: ``kill -9`` of a worker mid-step, until that workflow's next step start.

A ``bench_recovery`` workflow runs before -> hang -> after; ``hang`` blocks on
its first attempt. Once the ``hang`` row is RUNNING, the worker holding the
workflow's lease (found through ``leases`` and ``workers``) is sent SIGKILL.
The recovery time is the re-started ``hang`` row's ``started_at`` (attempt 2)
minus the time just before the kill. Two cases:

- ``supervisor alive``: one fleet of W workers serves every sample; the
  supervisor sees the death, expires the leases, and an idle worker claims it;
- ``supervisor restarted``: per sample, the supervisor is SIGKILLed first,
  then the worker, then a new supervisor is started at once (its start-up,
  dead-worker reaping and worker spawn are part of the time).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from durable_workers.backends import Store, open_store

from .databases import Databases, reader
from .fleet import Fleet, FleetError, wait_terminal
from .measure import Figure


def _wait_hang(db: str | Path, workflow_id: str, *, attempt: int, timeout: float = 60.0) -> float:
    """``started_at`` of the ``hang`` step once its attempt number reaches ``attempt``."""
    deadline = time.monotonic() + timeout
    with reader(db) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT attempts, started_at FROM steps WHERE workflow_id = ? AND step_key = 'hang#1'",
                (workflow_id,),
            ).fetchone()
            if row and row[0] >= attempt and row[1] is not None:
                return float(row[1])
            time.sleep(0.002)
    raise FleetError(f"step hang#1 of {workflow_id} did not reach attempt {attempt} within {timeout}s")


def _owner_pid(db: str | Path, workflow_id: str) -> int:
    with reader(db) as conn:
        row = conn.execute(
            "SELECT w.pid FROM leases l JOIN workers w ON w.id = l.worker_id WHERE l.workflow_id = ?",
            (workflow_id,),
        ).fetchone()
    if row is None:
        raise FleetError(f"no lease holder for {workflow_id}")
    return int(row[0])


def _start_sample(store: Store, db: str | Path, markers: Path, workflow_id: str) -> int:
    store.submit(workflow_id, "bench_recovery", json.dumps({"marker_dir": str(markers)}, sort_keys=True))
    _wait_hang(db, workflow_id, attempt=1)
    time.sleep(0.05)  # well inside the step's body
    return _owner_pid(db, workflow_id)


def bench_recovery(
    dbs: Databases,
    synchronous: str,
    *,
    workers: int,
    samples: int,
    restart_samples: int,
    log_level: str,
) -> list[Figure]:
    figures: list[Figure] = []
    markers = dbs.workdir / f"markers-{synchronous.lower()}"
    markers.mkdir(exist_ok=True)

    if samples:
        params = {"workers": workers, "samples": samples}
        alive_p50 = Figure(
            "recovery", "supervisor alive p50", "ms", synchronous, params=params, note="target ≤ 500 ms"
        )
        alive_max = Figure("recovery", "supervisor alive max", "ms", synchronous, params=params)
        db = dbs.new(f"rec-alive-{synchronous.lower()}")
        open_store(db, synchronous=synchronous).close()
        times = []
        log = dbs.log_path(db)
        with Fleet(db, workers=workers, synchronous=synchronous, log_level=log_level, log_path=log) as fleet:
            store = open_store(db, synchronous=synchronous)
            try:
                for i in range(samples):
                    fleet.wait_ready()  # the killed slot is back before the next sample
                    workflow_id = f"rec-{i:04d}"
                    pid = _start_sample(store, db, markers, workflow_id)
                    killed = time.time()
                    os.kill(pid, signal.SIGKILL)
                    times.append((_wait_hang(db, workflow_id, attempt=2) - killed) * 1000.0)
                    wait_terminal(db, (workflow_id, workflow_id + "~"), 1, timeout=60.0, fleet=fleet)
            finally:
                store.close()
        alive_p50.samples = times
        alive_max.samples = [max(times)]
        alive_p50.note += f"; figure is the distribution of {len(times)} kills"
        figures += [alive_p50, alive_max]

    if restart_samples:
        params = {"workers": workers, "samples": restart_samples}
        restart_p50 = Figure("recovery", "supervisor restarted p50", "ms", synchronous, params=params)
        restart_max = Figure("recovery", "supervisor restarted max", "ms", synchronous, params=params)
        times = []
        for i in range(restart_samples):
            db = dbs.new(f"rec-restart-{synchronous.lower()}-{i}")
            open_store(db, synchronous=synchronous).close()
            log = dbs.log_path(db)
            first = Fleet(db, workers=workers, synchronous=synchronous, log_level=log_level, log_path=log)
            second = Fleet(db, workers=workers, synchronous=synchronous, log_level=log_level, log_path=log)
            store = open_store(db, synchronous=synchronous)
            try:
                first.start()
                workflow_id = f"rst-{i:04d}"
                pid = _start_sample(store, db, markers, workflow_id)
                killed = time.time()
                first.kill_supervisor()
                os.kill(pid, signal.SIGKILL)
                second.start(wait=False)
                times.append((_wait_hang(db, workflow_id, attempt=2) - killed) * 1000.0)
                wait_terminal(db, (workflow_id, workflow_id + "~"), 1, timeout=60.0, fleet=second)
            finally:
                store.close()
                second.stop()
                first.stop()
        restart_p50.samples = times
        restart_max.samples = [max(times)]
        restart_p50.note = f"figure is the distribution of {len(times)} kills"
        figures += [restart_p50, restart_max]
    return figures
