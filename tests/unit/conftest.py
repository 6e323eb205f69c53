"""Fixtures of the in-process tests."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from durable_workers import Client, default_registry


@pytest.fixture
def client(db_path: Path) -> Iterator[Client]:
    """A client on this test's SQLite file that runs the workflows registered by tests/apps."""
    opened = Client(db=str(db_path), registry=default_registry)
    yield opened
    opened.close()
