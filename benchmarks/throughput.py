"""Throughput: N onboarding-shaped workflows through a real fleet of 1, 2, 4, 8 workers.

For each (workers, variant) a fleet is started with ``durable-supervisor`` on
a fresh database and waited for (every worker registered). Each repetition
then submits N ``bench_onboarding`` workflows up front — one transaction
through the engine's own ``Store.submit`` — and waits until all are terminal.
The elapsed time runs from the first submit to the last completion (the
largest ``updated_at`` the workers recorded). Variants:

- ``noop``: no-op steps, ``--concurrency 1`` per worker (CPU/SQLite bound);
- ``io``: each step sleeps 10 ms, ``--concurrency C`` per worker (I/O bound).

The onboarding shape has 4 steps, so steps/s = 4 × workflows/s. With
``hosts`` (PostgreSQL), the no-op run is repeated for those worker totals
split over two supervisors with distinct ``DURABLE_HOST_ID`` on one database.
"""

from __future__ import annotations

import contextlib
import json
import time

from durable_workers.backends import Store, open_store

from .databases import Databases
from .fleet import Fleet, wait_terminal
from .measure import Figure

STEPS_PER_WORKFLOW = 4


def submit_batch(store: Store, prefix: str, count: int, input_json: str) -> float:
    """Submit ``count`` bench_onboarding workflows in one transaction; return time.time() of the first."""
    first = time.time()

    def body() -> None:
        for i in range(count):
            store.submit(f"{prefix}{i:06d}", "bench_onboarding", input_json)

    store.write(body)
    return first


def run_throughput(
    dbs: Databases,
    synchronous: str,
    *,
    workers: int,
    supervisors: int = 1,
    concurrency: int,
    sleep_ms: float,
    count: int,
    repeat: int,
    log_level: str,
) -> list[tuple[float, float]]:
    """(seconds, failed count) per repetition of ``count`` workflows on one fleet (``workers`` over ``supervisors``)."""
    variant = "io" if sleep_ms else "noop"
    db = dbs.new(f"tp-{variant}-{synchronous.lower()}-w{workers}-s{supervisors}")
    open_store(db, synchronous=synchronous).close()  # the schema exists before workers open it
    input_json = json.dumps({"sleep_ms": sleep_ms}, sort_keys=True)
    runs = []
    with contextlib.ExitStack() as stack:
        fleets = [
            stack.enter_context(
                Fleet(
                    db, workers=workers // supervisors, synchronous=synchronous, concurrency=concurrency,
                    log_level=log_level, host_id=f"bench-host-{n}" if supervisors > 1 else None,
                    log_path=dbs.log_path(db, f"-{n}"),
                )
            )
            for n in range(supervisors)
        ]  # fmt: skip
        fleet = fleets[0]
        store = open_store(db, synchronous=synchronous)
        try:
            for rep in range(repeat):
                prefix = f"tp-r{rep:02d}-"
                first = submit_batch(store, prefix, count, input_json)
                timeout = 60.0 + count * (0.2 + sleep_ms / 1000.0 * STEPS_PER_WORKFLOW)
                last, counts = wait_terminal(db, (prefix, prefix + "~"), count, timeout=timeout, fleet=fleet)
                runs.append((last - first, float(counts.get("FAILED", 0) + counts.get("CANCELLED", 0))))
                time.sleep(0.3)  # let heartbeats and the WAL settle between repetitions
        finally:
            store.close()
    return runs


def bench_throughput(
    dbs: Databases,
    synchronous: str,
    *,
    workers: list[int],
    hosts: tuple[int, ...] = (),
    count: int,
    io_count: int,
    io_concurrency: int,
    sleep_ms: float,
    repeat: int,
    log_level: str,
) -> list[Figure]:
    """workflows/s and steps/s for each worker count, no-op and I/O-bound."""
    figures: list[Figure] = []
    variants = [("noop", 0.0, 1, count, workers, 1), ("io", sleep_ms, io_concurrency, io_count, workers, 1)]
    variants.append(("noop", 0.0, 1, count, list(hosts), 2))
    for variant, sleep, concurrency, n, totals, supervisors in variants:
        if n <= 0:
            continue
        for w in totals:
            params = {"workers": w, "concurrency": concurrency, "workflows": n, "sleep_ms": sleep}
            label = f"{variant} w={w}" + (f" c={concurrency}" if concurrency > 1 else "")
            if supervisors > 1:
                params["supervisors"] = supervisors
                label += f" on {supervisors} hosts"
            wf = Figure("throughput", f"{label} workflows/s", "wf/s", synchronous, params=params, higher_is_better=True)
            st = Figure("throughput", f"{label} steps/s", "steps/s", synchronous, params=params, higher_is_better=True)
            runs = run_throughput(
                dbs,
                synchronous,
                workers=w,
                supervisors=supervisors,
                concurrency=concurrency,
                sleep_ms=sleep,
                count=n,
                repeat=repeat,
                log_level=log_level,
            )
            failed = sum(f for _, f in runs)
            for seconds, _ in runs:
                wf.samples.append(n / seconds)
                st.samples.append(n * STEPS_PER_WORKFLOW / seconds)
            if failed:
                wf.note = st.note = f"{failed:.0f} workflows did not complete"
            figures += [wf, st]
    return figures
