"""``DURABLE_LOCK_PATIENCE`` and ``[tool.durable] lock_patience``: read in one place, checked, overridable."""

from __future__ import annotations

from pathlib import Path

import pytest

from durable_workers.config import Config, load_config
from durable_workers.errors import ConfigError


def test_the_default_leaves_the_patience_to_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DURABLE_LOCK_PATIENCE", raising=False)
    assert load_config(cwd=tmp_path).lock_patience is None
    assert Config().lock_patience is None


def test_env_beats_pyproject_and_an_argument_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.durable]\nlock_patience = 7\n")
    monkeypatch.delenv("DURABLE_LOCK_PATIENCE", raising=False)
    assert load_config(cwd=tmp_path).lock_patience == 7.0
    monkeypatch.setenv("DURABLE_LOCK_PATIENCE", "1.5")
    assert load_config(cwd=tmp_path).lock_patience == 1.5
    assert load_config(cwd=tmp_path, lock_patience=3.0).lock_patience == 3.0


@pytest.mark.parametrize("text", ["soon", "0", "-2", "nan"])
def test_a_lock_patience_that_is_not_positive_seconds_is_one_clear_error(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURABLE_LOCK_PATIENCE", text)
    with pytest.raises(ConfigError, match="DURABLE_LOCK_PATIENCE must be a number of seconds above 0"):
        load_config(cwd=tmp_path)
