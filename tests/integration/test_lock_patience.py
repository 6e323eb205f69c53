"""The store's lock patience is configurable: past it, a write held off by another process is StoreUnavailable.

A real helper process (``python -m durable_workers.chaos lock``, the chaos
experiment's lock holder) holds the SQLite write lock; the test's write must
give up with :class:`StoreUnavailable` once its (short) patience is spent,
instead of waiting out the default of ~130 s.

SQLite only: the single write lock of a database file is SQLite's (PostgreSQL locks rows, and a
contended row lock is tested in tests/contract/).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from durable_workers.backends import open_store
from durable_workers.client import Client
from durable_workers.errors import StoreUnavailable
from tests.conftest import cli_env
from tests.integration.fleet_support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: Longer than the test could ever need: the helper is killed when the test ends.
HOLD_SECONDS = "50"


@pytest.fixture()
def locked_db(tmp_path: Path) -> Iterator[Path]:
    """A database whose write lock a helper process holds for the whole test."""
    db = tmp_path / "locked.db"
    open_store(db).close()
    out = tmp_path / "holder.out"
    with open(out, "w") as sink:
        holder = subprocess.Popen(
            [sys.executable, "-m", "durable_workers.chaos", "lock", "--db", str(db), "--seconds", HOLD_SECONDS],
            stdout=sink, stderr=subprocess.STDOUT, env=cli_env(),
        )  # fmt: skip
    try:
        wait_for(lambda: "locked" in out.read_text(), 20, "the helper to hold the write lock")
        yield db
    finally:
        holder.kill()
        holder.wait()


def test_a_store_with_a_short_lock_patience_gives_up_with_store_unavailable(locked_db: Path) -> None:
    store = open_store(locked_db, lock_patience=0.5)
    with pytest.raises(StoreUnavailable, match="stayed locked"):
        store.submit("wf-1", "anything", "{}")
    store.close()


def test_durable_lock_patience_reaches_the_clients_store(locked_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLE_LOCK_PATIENCE", "0.5")
    client = Client(db=str(locked_db), app="durable_workers.checkflows", create=False)
    assert client.config.lock_patience == 0.5
    with pytest.raises(StoreUnavailable):
        client.store.submit("wf-1", "chaos_short", "{}")
    client.close()
