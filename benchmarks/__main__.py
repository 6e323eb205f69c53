"""``python -m benchmarks``: run the benchmark suite, print a table, write JSON (and a plot).

    python -m benchmarks                          # full sizes, NORMAL and FULL
    python -m benchmarks --quick                  # tiny sizes, 1 repetition (smoke test)
    python -m benchmarks --only floor,step --sync NORMAL --out step.json
    python -m benchmarks --only throughput --plot docs/benchmarks-throughput.png
    python -m benchmarks --only batch --sync NORMAL  # Client.submit_many of 1,000 against raw executemany
    python -m benchmarks --only queues --pg          # claim cost with queue limits on; a limited queue's throughput
    python -m benchmarks --db postgresql://user@host:port/dbname   # the suite on PostgreSQL
    python -m benchmarks --pg --peer dbos          # a throwaway PostgreSQL cluster, and DBOS beside us

Exit status 0 when every selected benchmark ran, 1 when one of them failed
(the others still run and are reported).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from durable_workers.progress import progress

from .databases import Databases, is_postgres, throwaway_server
from .measure import Figure, machine
from .report import plot_throughput, table, write_json

BENCHMARKS = ("floor", "step", "throughput", "latency", "recovery", "wake", "scale", "batch", "queues")
#: What runs on PostgreSQL (scale measures SQLite's claim query plans, batch compares with raw sqlite3).
PG_BENCHMARKS = ("floor", "step", "throughput", "latency", "recovery", "wake", "queues")
#: The column label of PostgreSQL figures (SQLite's are its synchronous modes).
PG_MODE = "PG"
PEERS = ("dbos",)


@dataclass(frozen=True)
class Sizes:
    """Every size the suite uses; ``FULL`` is what the issue asks for, ``QUICK`` a smoke run."""

    repeat: int = 3
    steps: int = 500
    step_repeat: int = 5
    workers: tuple[int, ...] = (1, 2, 4, 8)
    hosts: tuple[int, ...] = (4,)  # PostgreSQL: worker totals also run over two supervisors
    workflows: int = 1000
    io_workflows: int = 1000
    io_concurrency: int = 8
    sleep_ms: float = 10.0
    latency_workers: int = 4
    latency_samples: int = 30
    idle_s: float = 10.0
    settle_s: float = 3.0
    gap: tuple[float, float] = (0.2, 1.0)
    recovery_workers: int = 2
    recovery_samples: int = 10
    restart_samples: int = 5
    wake_workers: int = 4
    wake_workflows: tuple[int, ...] = (100, 1000)
    wake_sleep_s: tuple[float, float] = (1.0, 3.0)
    scale_sizes: tuple[int, ...] = (1_000, 100_000, 1_000_000)
    backlog: int = 100_000  # unrunnable PENDING rows in the scale benchmark's backlog part
    claims: int = 100
    empty_claims: int = 50
    batch: int = 1000  # workflows per batch submit
    queue_sizes: tuple[int, ...] = (1_000, 1_000_000)  # PENDING rows under the queue claim benchmark
    queue_limits: tuple[int, ...] = (1, 2, 4)  # concurrency limits of the queue throughput benchmark
    queue_step_ms: float = 100.0  # the fixed duration of its one step
    queue_per_slot: int = 25  # workflows per unit of the limit
    extra: dict[str, Any] = field(default_factory=dict)


FULL = Sizes()
QUICK = Sizes(
    repeat=1,
    steps=50,
    step_repeat=1,
    workers=(1, 2),
    hosts=(2,),
    workflows=20,
    io_workflows=20,
    io_concurrency=2,
    latency_workers=2,
    latency_samples=3,
    idle_s=1.0,
    settle_s=0.5,
    gap=(0.05, 0.1),
    recovery_samples=1,
    restart_samples=1,
    wake_workers=2,
    wake_workflows=(20,),
    wake_sleep_s=(0.2, 0.5),
    scale_sizes=(1_000,),
    backlog=2_000,
    claims=10,
    empty_claims=5,
    batch=100,
    queue_sizes=(1_000,),
    queue_limits=(1, 2),
    queue_step_ms=20.0,
    queue_per_slot=5,
)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one repetition (smoke run)")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {','.join(BENCHMARKS)}"
    )
    parser.add_argument("--sync", default="NORMAL,FULL", help="synchronous modes, e.g. NORMAL,FULL")
    parser.add_argument("--out", default="bench-results.json", help="JSON results file [bench-results.json]")
    parser.add_argument("--plot", help="PNG of throughput vs workers (needs matplotlib: the [bench] extra)")
    parser.add_argument("--repeat", type=int, help="repetitions per figure (overrides the mode's default)")
    parser.add_argument("--workers", type=_ints, help="worker counts for throughput, e.g. 1,2,4,8")
    parser.add_argument("--workflows", type=int, help="workflows per throughput run (no-op and I/O)")
    parser.add_argument("--steps", type=int, help="steps of the step-overhead workflow")
    parser.add_argument("--io-concurrency", type=int, help="--concurrency of each worker in the I/O-bound run")
    parser.add_argument("--scale-sizes", type=_ints, help="rows in workflows for the scale benchmark")
    parser.add_argument("--workdir", help="where databases go (default: a new temporary folder, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the databases and fleet logs")
    parser.add_argument("--log-level", default="WARNING", help="log level of the benchmark fleets [WARNING]")
    parser.add_argument(
        "--db", help="a PostgreSQL server URL (postgresql://user@host:port/dbname): each benchmark gets a new database on it"
    )
    parser.add_argument("--pg", action="store_true", help="start a throwaway PostgreSQL cluster and run on it")
    parser.add_argument("--peer", choices=PEERS, help="also measure this peer on the same PostgreSQL server")
    parser.add_argument("--peer-venv", help="the peer's own virtualenv [a folder in the temporary directory]")
    args = parser.parse_args(argv)
    if args.db and not is_postgres(args.db):
        parser.error("--db takes a postgresql:// URL (SQLite runs use --workdir)")
    if args.db and args.pg:
        parser.error("--db and --pg exclude each other")
    if args.peer and not (args.db or args.pg):
        parser.error("--peer needs PostgreSQL: add --db postgresql://… or --pg")
    postgres = bool(args.db or args.pg)
    available = PG_BENCHMARKS if postgres else BENCHMARKS
    only = args.only if args.only != ",".join(BENCHMARKS) else ",".join(available)
    args.only = [b.strip() for b in only.split(",") if b.strip()]
    unknown = [b for b in args.only if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if postgres and "scale" in args.only:
        parser.error(f"scale runs on SQLite only; choose from {', '.join(PG_BENCHMARKS)}")
    if postgres and "batch" in args.only:
        parser.error(f"batch runs on SQLite only; choose from {', '.join(PG_BENCHMARKS)}")
    args.sync = [s.strip().upper() for s in args.sync.split(",") if s.strip()]
    bad = [s for s in args.sync if s not in ("OFF", "NORMAL", "FULL", "EXTRA")]
    if bad:
        parser.error(f"unknown synchronous mode(s) {', '.join(bad)}")
    if postgres:
        args.sync = [PG_MODE]  # synchronous modes are SQLite's
    return args


def sizes_for(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else FULL
    overrides: dict[str, Any] = {}
    if args.repeat:
        overrides.update(repeat=args.repeat, step_repeat=args.repeat)
    if args.workers:
        overrides["workers"] = args.workers
    if args.workflows:
        overrides.update(workflows=args.workflows, io_workflows=args.workflows)
    if args.steps:
        overrides["steps"] = args.steps
    if args.io_concurrency:
        overrides["io_concurrency"] = args.io_concurrency
    if args.scale_sizes:
        overrides["scale_sizes"] = args.scale_sizes
    return replace(sizes, **overrides)


def plan(args: argparse.Namespace, sizes: Sizes, dbs: Databases) -> list[tuple[str, Callable[[], list[Figure]]]]:
    """(label, thunk) for each selected benchmark and sync mode, in run order."""
    from .batch import bench_batch
    from .floor import bench_floor
    from .latency import bench_latency
    from .queues import bench_queue_claims, bench_queue_throughput
    from .recovery import bench_recovery
    from .scale import bench_backlog, bench_scale
    from .step import bench_step
    from .throughput import bench_throughput
    from .wake import bench_wake

    jobs: list[tuple[str, Callable[[], list[Figure]]]] = []
    for sync in args.sync:
        if "step" in args.only:  # measures the floor too, back to back, for the ratio
            jobs.append((f"step {sync}", lambda s=sync: bench_step(dbs, s, steps=sizes.steps, repeat=sizes.step_repeat)))
        elif "floor" in args.only:
            jobs.append((f"floor {sync}", lambda s=sync: bench_floor(dbs, s, steps=sizes.steps, repeat=sizes.step_repeat)))
    for sync in args.sync:
        if "throughput" in args.only:
            jobs.append(
                (
                    f"throughput {sync}",
                    lambda s=sync: bench_throughput(
                        dbs,
                        s,
                        workers=list(sizes.workers),
                        hosts=sizes.hosts if dbs.server else (),
                        count=sizes.workflows,
                        io_count=sizes.io_workflows,
                        io_concurrency=sizes.io_concurrency,
                        sleep_ms=sizes.sleep_ms,
                        repeat=sizes.repeat,
                        log_level=args.log_level,
                    ),
                )
            )
    listens: list[bool | None] = [True, False] if dbs.server else [None]
    for sync in args.sync:
        for listen in listens if "latency" in args.only else []:
            jobs.append(
                (
                    f"latency {sync}" + ("" if listen is None else " NOTIFY" if listen else " polling"),
                    lambda s=sync, listen=listen: bench_latency(
                        dbs,
                        s,
                        listen=listen,
                        workers=sizes.latency_workers,
                        samples=sizes.latency_samples,
                        idle_s=sizes.idle_s,
                        settle_s=sizes.settle_s,
                        gap=sizes.gap,
                        repeat=sizes.repeat,
                        log_level=args.log_level,
                    ),
                )
            )
    for sync in args.sync:
        if "recovery" in args.only:
            jobs.append(
                (
                    f"recovery {sync}",
                    lambda s=sync: bench_recovery(
                        dbs,
                        s,
                        workers=sizes.recovery_workers,
                        samples=sizes.recovery_samples,
                        restart_samples=sizes.restart_samples,
                        log_level=args.log_level,
                    ),
                )
            )
    for sync in args.sync:
        if "wake" in args.only:
            jobs.append((f"wake {sync}", lambda s=sync: bench_wake(
                dbs, s, workers=sizes.wake_workers, counts=sizes.wake_workflows, sleep_s=sizes.wake_sleep_s,
                repeat=sizes.repeat, log_level=args.log_level)))  # fmt: skip
    for sync in args.sync if "batch" in args.only else []:
        jobs.append((f"batch {sync}", lambda s=sync: bench_batch(dbs, s, count=sizes.batch, repeat=sizes.step_repeat)))
    for sync in args.sync if "queues" in args.only else []:
        jobs.append((f"queues claims {sync}", lambda s=sync: bench_queue_claims(
            dbs, s, sizes=list(sizes.queue_sizes), claims=sizes.claims, empty_claims=sizes.empty_claims,
            repeat=sizes.repeat)))  # fmt: skip
        jobs.append((f"queues throughput {sync}", lambda s=sync: bench_queue_throughput(
            dbs, s, queue_limits=sizes.queue_limits, step_ms=sizes.queue_step_ms, per_slot=sizes.queue_per_slot,
            repeat=sizes.repeat, log_level=args.log_level)))  # fmt: skip
    if "scale" in args.only:
        jobs.append(
            (
                f"scale {','.join(args.sync)}",
                lambda: bench_scale(
                    dbs.workdir,
                    args.sync,
                    sizes=list(sizes.scale_sizes),
                    claims=sizes.claims,
                    empty_claims=sizes.empty_claims,
                    repeat=sizes.repeat,
                )
                + bench_backlog(
                    dbs.workdir,
                    args.sync,
                    backlog=sizes.backlog,
                    claims=sizes.claims,
                    empty_claims=sizes.empty_claims,
                    repeat=sizes.repeat,
                ),
            )
        )
    return jobs


def git_state() -> dict[str, Any]:
    """Commit and locally modified files of the checkout being measured (empty outside git)."""
    root = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(
                ["git", *cmd], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD"), "modified": git("status", "--short").splitlines()}


def run_jobs(jobs: list[tuple[str, Callable[[], list[Figure]]]], dbs: Databases, meta: dict[str, Any]) -> list[Figure]:
    """Run each job (errors are recorded, the rest still run); each job's databases are dropped after it."""
    figures: list[Figure] = []
    started = time.monotonic()
    with progress("benchmarks", total=len(jobs)) as bar:  # a bar on a terminal, a line per section otherwise
        for label, job in jobs:
            bar.log(f"[{time.monotonic() - started:7.1f}s] {label} ...")
            bar.update(note=label)
            try:
                produced = job()
            except Exception as exc:  # report it, run the rest
                bar.log(traceback.format_exc().rstrip())
                meta["errors"][label] = f"{type(exc).__name__}: {exc}"
                continue
            finally:
                bar.advance(1)
                if not meta["keep"]:
                    dbs.drop_all()
            figures += produced
            for f in produced:
                bar.log(f"           {f.sync:6} {f.bench}: {f.metric} = {f.render()}")
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    return figures


def peer_jobs(args: argparse.Namespace, sizes: Sizes, dbs: Databases) -> list[tuple[str, Callable[[], list[Figure]]]]:
    """The peer's throughput run and its ratio to ours (``--peer``), measured after our suite."""
    if not args.peer:
        return []
    from .peers.dbos_peer import bench_dbos

    workers = 4 if 4 in sizes.workers else max(sizes.workers)
    return [(f"peer {args.peer}", lambda: bench_dbos(dbs, workers=workers, count=sizes.workflows, repeat=sizes.repeat,
                                                   venv=args.peer_venv, mode=args.sync[0]))]  # fmt: skip


def run_suite(args: argparse.Namespace, sizes: Sizes, workdir: Path, server: str | None) -> int:
    """Run the selected benchmarks on ``workdir`` (SQLite) or ``server`` (PostgreSQL), print and write results."""
    dbs = Databases(workdir, server)
    meta: dict[str, Any] = {
        "machine": machine(),
        "mode": "quick" if args.quick else "full",
        "dialect": dbs.dialect,
        "sizes": {k: v for k, v in sizes.__dict__.items() if k != "extra"},
        "selected": args.only,
        "synchronous": args.sync,
        "workdir": str(workdir),
        "errors": {},
        "keep": args.keep,
        "git": git_state(),
    }
    where = f"PostgreSQL server {server.split('@')[-1]}" if server else f"SQLite {meta['machine']['sqlite']}"
    print(
        f"durable_workers benchmarks ({meta['mode']}): {', '.join(args.only)}; synchronous {', '.join(args.sync)}\n"
        f"machine: {meta['machine']['nproc']} × {meta['machine']['cpu_model']}, Python {meta['machine']['python']}, "
        f"{where}; work folder {workdir}",
        file=sys.stderr,
    )
    figures = run_jobs(plan(args, sizes, dbs) + peer_jobs(args, sizes, dbs), dbs, meta)
    if args.peer:
        from .peers.dbos_peer import ratio

        figures += ratio(figures)
    print(table(figures, args.sync))
    if args.out:
        write_json(args.out, figures, meta)
        print(f"\nresults written to {args.out}", file=sys.stderr)
    if args.plot:
        if plot_throughput(args.plot, figures):
            print(f"plot written to {args.plot}", file=sys.stderr)
    if meta["errors"]:
        print(f"failed: {', '.join(meta['errors'])}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sizes_for(args)
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="durable-bench-"))
    try:
        if not args.pg:
            return run_suite(args, sizes, workdir, args.db)
        with throwaway_server() as server:
            return run_suite(args, sizes, workdir, server)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
