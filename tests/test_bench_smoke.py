"""Smoke test of the benchmark runner: tiny sizes, one repetition, real fleets.

Benchmarks are not tests: nothing here looks at a timing. It only checks that
``python -m benchmarks --quick`` runs every family end to end and writes its
table, its JSON and (when matplotlib is installed) its plot.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli_env

FAMILIES = {"floor", "step", "throughput", "latency", "recovery", "wake", "scale", "batch", "queues"}


def run_bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_quick_run_produces_table_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    plot = tmp_path / "throughput.png"
    result = run_bench(
        "--quick", "--sync", "NORMAL", "--out", str(out), "--plot", str(plot),
        "--workdir", str(tmp_path / "work"), timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

    data = json.loads(out.read_text())
    assert data["mode"] == "quick" and not data["errors"]
    assert data["machine"]["nproc"] >= 1 and data["machine"]["sqlite"]
    results = data["results"]
    assert {r["bench"] for r in results} == FAMILIES
    for r in results:
        assert r["sync"] == "NORMAL"
        assert r["n"] >= 1 and r["median"] is not None and r["min"] <= r["median"] <= r["max"], r
    metrics = {(r["bench"], r["metric"]) for r in results}
    assert ("step", "ratio to floor") in metrics
    assert ("throughput", "noop w=2 workflows/s") in metrics
    assert ("recovery", "supervisor restarted p50") in metrics
    assert ("wake", "sleep storm n=20 lateness p99") in metrics
    assert ("queues", "claim (hit) limits on / default, 1,000 pending") in metrics

    assert "| benchmark | metric |" in result.stdout
    if importlib.util.find_spec("matplotlib") is not None:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not plot.exists() and "skipping the plot" in result.stderr


def test_unknown_benchmark_is_a_usage_error() -> None:
    result = run_bench("--only", "floor,warp", timeout=60)
    assert result.returncode == 2
    assert "unknown benchmark(s) warp" in result.stderr


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_quick_run_on_postgresql_creates_and_drops_a_database_per_benchmark(pg_url: str, tmp_path: Path) -> None:
    import psycopg

    out = tmp_path / "results.json"
    result = run_bench("--quick", "--db", pg_url, "--out", str(out), "--workdir", str(tmp_path / "work"), timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr

    data = json.loads(out.read_text())
    assert data["dialect"] == "postgresql" and not data["errors"]
    results = data["results"]
    assert {r["bench"] for r in results} == FAMILIES - {"scale", "batch"}
    for r in results:
        assert r["sync"] == "PG"
        assert r["n"] >= 1 and r["median"] is not None and r["min"] <= r["median"] <= r["max"], r
    metrics = {(r["bench"], r["metric"]) for r in results}
    assert ("floor", "raw psycopg per step") in metrics
    assert ("step", "ratio to floor") in metrics
    assert ("throughput", "noop w=2 on 2 hosts workflows/s") in metrics
    assert ("latency", "submit-to-start p95 (NOTIFY)") in metrics
    assert ("latency", "submit-to-start p50 (polling)") in metrics
    assert ("recovery", "supervisor alive p50") in metrics
    assert ("wake", "sleep storm n=20 lateness p50") in metrics
    assert ("queues", "limit 2, 20 ms step: completed/s") in metrics
    with psycopg.connect(pg_url, autocommit=True) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dw_bench_%'").fetchall()
    assert left == []


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_quick_queues_run_measures_both_parts_and_never_sees_a_queue_over_its_limit(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    out = tmp_path / "results.json"
    where = ["--db", request.getfixturevalue("pg_url")] if backend == "postgres" else ["--sync", "NORMAL"]
    result = run_bench(
        "--quick", "--only", "queues", *where, "--out", str(out), "--workdir", str(tmp_path / "work"), timeout=110
    )
    assert result.returncode == 0, result.stdout + result.stderr

    data = json.loads(out.read_text())
    assert not data["errors"]
    results = {r["metric"]: r for r in data["results"]}
    assert {r["bench"] for r in data["results"]} == {"queues"}
    claims = ("claim (hit) default queue", "claim (hit) all limits on", "claim (hit) limits on / default",
              "claim refused at the limit")  # fmt: skip
    for metric in (f"{claim}, 1,000 pending" for claim in claims):
        assert results[metric]["n"] == 1 and results[metric]["median"] > 0, metric
    for limit in (1, 2):
        completed = results[f"limit {limit}, 20 ms step: completed/s"]
        assert completed["median"] > 0 and completed["params"]["workflows"] == 5 * limit
        peak = results[f"limit {limit}: peak RUNNING observed"]
        assert 1 <= peak["max"] <= limit, peak  # the queue's concurrency held in the fleet's own records


def test_postgresql_options_are_checked_before_anything_runs() -> None:
    result = run_bench("--db", "/tmp/some.db", timeout=60)
    assert result.returncode == 2 and "--db takes a postgresql:// URL" in result.stderr
    result = run_bench("--pg", "--only", "scale", timeout=60)
    assert result.returncode == 2 and "scale runs on SQLite only" in result.stderr
    result = run_bench("--peer", "dbos", timeout=60)
    assert result.returncode == 2 and "--peer needs PostgreSQL" in result.stderr


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_step_profile_runs_every_section(tmp_path: Path) -> None:
    """``python -m benchmarks.profile`` is not in the suite's run: a small one keeps it working."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.profile", "--steps", "20", "--repeat", "1", "--out", str(tmp_path / "p.json")],
        cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=580,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "== 9." in done.stdout and (tmp_path / "p.json").exists()
