"""Process identity and liveness: host identity, pid, create time (psutil).

A worker row names its process by host identity, pid and psutil create time.
The host identity is the kernel's boot id plus the PID namespace, not the
hostname (containers share hostnames, and a PID means nothing after a
reboot); ``DURABLE_HOST_ID`` overrides it. Only processes of this host
identity are judged by their PID; other hosts' workers by their heartbeat.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:  # pragma: no cover
    from .records import WorkerRecord
    from .backends import Store

#: Two create times closer than this are the same process.
CREATE_TIME_TOLERANCE = 0.05
#: A heartbeat older than this many TTLs is stale (`durable workers` marks it); a heartbeat is due every ttl / 3.
STALE_HEARTBEAT_TTLS = 1.0
#: A worker whose heartbeat is older than this many TTLs (plus any stall grace) is frozen: its supervisor kills it.
FROZEN_HEARTBEAT_TTLS = 2.0
#: A worker of another host whose heartbeat is older than this many of its TTLs is dead: reaped by TTL.
DEAD_HEARTBEAT_TTLS = 3.0
#: A running (not stopped) worker past the frozen limit gets this many more TTLs, counted while the
#: database is writable, for a heartbeat that waited for the write lock to land (well before DEAD).
FROZEN_PROOF_TTLS = 0.5
#: A probe that waited this long for the write lock met a stall (it may have just ended).
STALL_SEEN_S = 0.1


def hostname() -> str:
    """The host name recorded in worker rows (for display only)."""
    return socket.gethostname()


@functools.lru_cache(maxsize=None)
def _kernel_host_identity() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot = handle.read().strip()
    except OSError:
        boot = f"{socket.gethostname()}@{psutil.boot_time():.0f}"
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = "pid:[?]"
    return f"{boot}/{pidns}"


def host_identity() -> str:
    """This host's identity: ``DURABLE_HOST_ID`` if set, else boot id + PID namespace."""
    return os.environ.get("DURABLE_HOST_ID") or _kernel_host_identity()


def _boot_relative_start(pid: int) -> float | None:
    """Seconds from boot to the start of ``pid`` (Linux ``/proc/PID/stat``), or None elsewhere.

    The kernel counts it in clock ticks since boot, so unlike psutil's
    ``create_time()`` (those ticks plus the boot time, re-derived from the wall
    clock) it does not move when the wall clock jumps.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat(5): starttime


def process_start_time(pid: int | None = None) -> float:
    """When a process (this one by default) started, as recorded in ``workers.proc_started_at``.

    On Linux: seconds since boot, from the kernel's start ticks (immune to wall
    clock jumps; comparable only within one boot, which the host identity
    guarantees). Elsewhere: psutil's create time. Raises
    ``psutil.NoSuchProcess`` when the process does not exist.
    """
    pid = os.getpid() if pid is None else pid
    started = _boot_relative_start(pid)
    return started if started is not None else psutil.Process(pid).create_time()


def process_alive(pid: int, proc_started_at: float) -> bool:
    """True while ``pid`` runs and is the process that was started at ``proc_started_at``.

    A reused PID (different start time) and a zombie count as dead.
    """
    try:
        if abs(process_start_time(pid) - proc_started_at) > CREATE_TIME_TOLERANCE:
            return False
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def process_stopped(pid: int) -> bool:
    """True when ``pid`` is stopped by a signal (SIGSTOP, SIGTSTP): frozen for certain."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def on_this_host(worker: "WorkerRecord") -> bool:
    """True when the worker row was written by a process of this host identity."""
    return worker.host_id == host_identity()


def worker_alive(worker: "WorkerRecord", *, stale_after: float, now: float | None = None) -> bool:
    """Liveness of a worker row: by PID on this host, by heartbeat elsewhere.

    A row of another host identity is never judged by a local PID (that PID
    names some other process here, or none): it lives while its heartbeat is
    younger than ``stale_after`` or ``DEAD_HEARTBEAT_TTLS`` of the row's own
    TTL, whichever is longer (a host with a long TTL heartbeats seldom).
    ``now`` is the clock the heartbeats were written on: pass ``store.now()``
    (the database's clock on PostgreSQL); the local wall clock by default.
    """
    if on_this_host(worker):
        return process_alive(worker.pid, worker.proc_started_at)
    now = time.time() if now is None else now
    return worker.heartbeat_at >= now - max(stale_after, DEAD_HEARTBEAT_TTLS * (worker.ttl or 0.0))


def heartbeat_age(worker: "WorkerRecord", *, now: float | None = None) -> float:
    """Seconds since the worker's last heartbeat.

    For a row of this host identity, from its ``heartbeat_mono`` and this
    host's monotonic clock (immune to wall-clock jumps); otherwise, or for a
    row written before ``heartbeat_mono`` existed, from ``heartbeat_at`` and
    the wall clock ``now``.
    """
    if worker.heartbeat_mono is not None and on_this_host(worker):
        return max(time.monotonic() - worker.heartbeat_mono, 0.0)
    return max((time.time() if now is None else now) - worker.heartbeat_at, 0.0)


def heartbeat_stale(worker: "WorkerRecord", *, default_ttl: float, now: float | None = None) -> bool:
    """True when a running or draining worker's heartbeat is more than ``STALE_HEARTBEAT_TTLS`` TTLs old.

    Uses the row's own ``ttl``, or ``default_ttl`` for rows that stored none.
    """
    if worker.state not in ("running", "draining"):
        return False
    ttl = worker.ttl or default_ttl
    return heartbeat_age(worker, now=now) > STALE_HEARTBEAT_TTLS * ttl


def reap_dead_workers(
    store: "Store", *, stale_after: float, now: float | None = None, exclude: "set[str] | frozenset[str]" = frozenset()
) -> list[tuple["WorkerRecord", list[str]]]:
    """Mark dead every live-looking worker whose process is gone; expire its leases.

    Workers in ``exclude`` (a supervisor's own children, which it reaps
    itself) are left alone; rows of this host are judged by PID, rows of
    other hosts by heartbeat age on the store's clock (``now``, by default
    ``store.now()``), see :func:`worker_alive`. Returns each reaped worker
    with the workflow ids it held.
    """
    now = store.now() if now is None else now
    reaped = []
    for worker in store.list_workers(alive_only=True):
        if worker.id not in exclude and not worker_alive(worker, stale_after=stale_after, now=now):
            reaped.append((worker, store.expire_worker(worker.id)))
    return reaped
