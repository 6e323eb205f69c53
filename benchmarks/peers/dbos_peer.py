"""DBOS Transact beside durable_workers: the no-op onboarding workflow, 4 workers, on the same PostgreSQL server.

    python -m benchmarks.peers.dbos_peer --db postgresql://user@host:port/dbname [--workflows 1000]
    python -m benchmarks --db postgresql://… --peer dbos      # ours and DBOS in one run, with the ratio

``dbos`` is installed into a virtualenv of its own (``--venv``, default
``$TMPDIR/durable-bench-dbos-venv``, created on first use with ``pip install
dbos``), never into the project's. Each repetition gets a new database on the
server. The peer's processes run :mod:`.dbos_app` with that virtualenv's Python.

How it is made comparable: ours runs 4 worker processes (``--concurrency 1``)
under a supervisor; DBOS runs 4 processes (executors) serving one queue with
``worker_concurrency=1`` each, polling it every 10 ms (DBOS's default of 1 s
would cap it at 4 workflows/s). Both get all N workflows submitted up front
(ours in one transaction, DBOS through ``DBOSClient.enqueue``) and are timed
from the first submit to the last completion the database recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..databases import Databases
from ..measure import Figure

APP = Path(__file__).with_name("dbos_app.py")
DEFAULT_VENV = Path(tempfile.gettempdir()) / "durable-bench-dbos-venv"


class PeerError(RuntimeError):
    """The peer could not be installed or did not finish."""


def ensure_venv(venv: str | Path | None) -> Path:
    """The virtualenv's Python, with ``dbos`` installed (creating the venv when missing)."""
    folder = Path(venv) if venv else DEFAULT_VENV
    python = folder / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, capture_output=True)
    if subprocess.run([str(python), "-c", "import dbos"], capture_output=True).returncode != 0:
        pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "dbos"], capture_output=True, text=True)
        if pip.returncode != 0:
            raise PeerError(f"pip install dbos failed: {pip.stderr.strip().splitlines()[-1:]}")
    return python


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("DURABLE_", "PYTHONPATH", "DBOS_"))}


def _start_worker(python: Path, url: str, n: int, log: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [str(python), str(APP), "worker", url, f"bench-executor-{n}"],
        stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True, env=_env(), start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "ready" once DBOS has launched (and migrated the schema)
    if line.strip() != "ready":
        proc.kill()
        raise PeerError(f"DBOS worker {n} did not start: {log.read_text(errors='replace')[-2000:]}")
    return proc


def run_once(python: Path, url: str, *, workers: int, count: int, log: Path, timeout: float) -> float:
    """Seconds for ``count`` workflows through ``workers`` DBOS processes on the database ``url``."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for n in range(workers):  # one at a time: the first launch creates the system tables
            procs.append(_start_worker(python, url, n, log))
        done = subprocess.run(
            [str(python), str(APP), "submit", url, str(count), "bench-"],
            capture_output=True, text=True, env=_env(), timeout=timeout,
        )  # fmt: skip
        if done.returncode != 0:
            raise PeerError(f"DBOS submit failed: {done.stderr.strip()[-2000:]}")
        return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def bench_dbos(dbs: Databases, *, workers: int, count: int, repeat: int, venv: str | None, mode: str) -> list[Figure]:
    """DBOS's workflows/s (no-op onboarding, ``workers`` processes), one fresh database per repetition."""
    if not dbs.server:
        raise PeerError("the DBOS peer needs a PostgreSQL server (--db or --pg)")
    python = ensure_venv(venv)
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('dbos'))"], capture_output=True, text=True
    ).stdout.strip()
    params = {"workers": workers, "workflows": count, "dbos": version}
    figure = Figure("peer", f"DBOS noop w={workers} workflows/s", "wf/s", mode, params=params, higher_is_better=True)
    figure.note = f"dbos {version}, {workers} processes × worker_concurrency 1"
    for rep in range(repeat):
        url = dbs.new(f"dbos-r{rep}")
        seconds = run_once(python, url, workers=workers, count=count, log=dbs.workdir / f"dbos-r{rep}.log",
                           timeout=120.0 + count * 0.5)  # fmt: skip
        figure.samples.append(count / seconds)
    return [figure]


def ratio(figures: list[Figure]) -> list[Figure]:
    """Ours / DBOS (no-op onboarding, same worker count, same run), when both were measured."""
    peers = [f for f in figures if f.bench == "peer" and f.metric.startswith("DBOS noop")]
    out = []
    for peer in peers:
        workers = peer.params["workers"]
        ours = next((f for f in figures if f.bench == "throughput" and f.metric == f"noop w={workers} workflows/s"), None)
        if ours is None or not peer.samples:
            continue
        out.append(Figure("peer", f"ours / DBOS noop w={workers}", "×", peer.sync, samples=[ours.median / peer.median],
                          params={"ours": ours.median, "dbos": peer.median}, higher_is_better=True,
                          note="target ≥ 5×; medians of the same run"))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.dbos_peer", description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, help="PostgreSQL server URL (a new database per repetition)")
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--venv", help=f"the peer's virtualenv [{DEFAULT_VENV}]")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="durable-bench-dbos-") as work:
        dbs = Databases(Path(work), args.db)
        try:
            started = time.monotonic()
            figure = bench_dbos(dbs, workers=args.workers, count=args.workflows, repeat=args.repeat,
                                venv=args.venv, mode="PG")[0]  # fmt: skip
        except PeerError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
        finally:
            dbs.drop_all()
    print(f"{figure.metric}: {figure.render()} ({figure.note}; {time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
