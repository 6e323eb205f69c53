"""Durations and the ``retention`` setting: parsed in one place, resolved flag > env > pyproject > default;
the supervisor's sweep runs at most once per interval, on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from durable_workers.backends import open_store
from durable_workers.config import GC_INTERVAL_MAX, GC_INTERVAL_MIN, load_config, parse_duration
from durable_workers.errors import ConfigError
from durable_workers.retention import RetentionSweep


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86_400.0), ("12h", 43_200.0), ("15m", 900.0), ("90s", 90.0), ("2w", 1_209_600.0),
     ("1.5h", 5_400.0), ("45", 45.0), (" 7D ", 7 * 86_400.0)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "--older-than") == seconds


@pytest.mark.parametrize("text", ["", "d", "30 days", "-1d", "0s", "nan", "infd", "3y"])
def test_a_bad_duration_is_one_error_naming_its_source(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--older-than must be a duration such as 30d"):
        parse_duration(text, "--older-than")


def test_retention_resolves_flag_over_env_over_pyproject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DURABLE_RETENTION", raising=False)
    assert load_config(cwd=tmp_path).retention is None
    (tmp_path / "pyproject.toml").write_text('[tool.durable]\nretention = "30d"\n')
    assert load_config(cwd=tmp_path).retention == 30 * 86_400.0
    monkeypatch.setenv("DURABLE_RETENTION", "12h")
    assert load_config(cwd=tmp_path).retention == 43_200.0
    assert load_config(cwd=tmp_path, retention="90s").retention == 90.0
    (tmp_path / "pyproject.toml").write_text('[tool.durable]\nretention = "forever"\n')
    monkeypatch.delenv("DURABLE_RETENTION")
    with pytest.raises(ConfigError, match=r"^\[tool.durable\] retention must be a duration"):
        load_config(cwd=tmp_path)


def test_the_sweep_interval_is_a_quarter_of_the_retention_within_bounds() -> None:
    assert RetentionSweep(None).interval is None
    assert RetentionSweep(1.0).interval == GC_INTERVAL_MIN
    assert RetentionSweep(600.0).interval == 150.0
    assert RetentionSweep(30 * 86_400.0).interval == GC_INTERVAL_MAX


def test_the_sweep_runs_once_per_interval(tmp_path: Path) -> None:
    store = open_store(tmp_path / "durable.db")
    try:
        sweep = RetentionSweep(600.0)
        store.submit("old", "n", "{}", now=1_000.0)
        store.cancel("old", now=1_000.0)
        assert RetentionSweep(None).maybe_run(store, 10_000.0, 0.0) is None
        assert sweep.maybe_run(store, 10_000.0, mono=100.0).workflows == 1  # type: ignore[union-attr]
        store.submit("later", "n", "{}", now=1_000.0)
        store.cancel("later", now=1_000.0)
        assert sweep.maybe_run(store, 10_000.0, mono=100.0 + 149.0) is None  # within the interval: not run
        assert sweep.maybe_run(store, 10_000.0, mono=100.0 + 150.0).workflows == 1  # type: ignore[union-attr]
        assert store.list_workflows() == []
    finally:
        store.close()


def test_a_large_backlog_is_swept_over_several_turns_then_the_sweep_waits(tmp_path: Path) -> None:
    store = open_store(tmp_path / "durable.db")
    try:
        sweep = RetentionSweep(600.0, batch_size=2)
        sweep.SWEEP_BATCHES = 2
        for n in range(5):
            store.submit(f"old-{n}", "n", "{}", now=1_000.0)
            store.cancel(f"old-{n}", now=1_000.0)
        assert sweep.maybe_run(store, 10_000.0, mono=100.0).workflows == 4  # type: ignore[union-attr]
        assert sweep.maybe_run(store, 10_000.0, mono=100.2).workflows == 1  # type: ignore[union-attr]  # goes on
        assert sweep.maybe_run(store, 10_000.0, mono=100.4) is None  # through: waits an interval now
        assert store.list_workflows() == []
    finally:
        store.close()
