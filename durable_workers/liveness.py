"""Is the process behind a worker row still alive? (psutil)"""

from __future__ import annotations

import time

import psutil

from .store import Store, WorkerRecord, hostname

#: Two create times closer than this are the same process.
CREATE_TIME_TOLERANCE = 0.05


def process_alive(pid: int, proc_started_at: float) -> bool:
    """True while ``pid`` runs and is the process that was started at ``proc_started_at``.

    A reused PID (different create time) and a zombie count as dead.
    """
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - proc_started_at) > CREATE_TIME_TOLERANCE:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def worker_alive(worker: WorkerRecord, *, stale_after: float, now: float | None = None) -> bool:
    """Liveness of a worker row: by PID on this host, by heartbeat elsewhere."""
    if worker.host == hostname():
        return process_alive(worker.pid, worker.proc_started_at)
    now = time.time() if now is None else now
    return worker.heartbeat_at >= now - stale_after


def reap_dead_workers(store: Store, *, stale_after: float, now: float | None = None) -> list[tuple[WorkerRecord, list[str]]]:
    """Mark dead every live-looking worker whose process is gone; expire its leases.

    Returns each reaped worker with the workflow ids it held.
    """
    reaped = []
    for worker in store.list_workers(alive_only=True):
        if not worker_alive(worker, stale_after=stale_after, now=now):
            reaped.append((worker, store.expire_worker(worker.id)))
    return reaped
