"""A visible, idempotent side effect for the examples.

Each call appends one line to ``effects.log`` beside the database (for a PostgreSQL database,
in the working directory of the process running the step), keyed by
the step's idempotency key. Like a real downstream API that honours
idempotency keys, a second delivery with the same key is not appended again.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

from durable_workers import Context
from durable_workers.testing import effect


def effects_log(ctx: Context) -> Path:
    """The side-effect file of the database this workflow runs on: beside a SQLite file, or in
    the working directory when the database is a server's (a ``postgresql://`` URL)."""
    db = ctx.database_path
    folder = Path.cwd() if "://" in db else Path(db).resolve().parent
    return folder / "effects.log"


def deliver(ctx: Context, action: str, **details: Any) -> dict[str, Any]:
    """Perform ``action`` once per idempotency key; return a receipt."""
    key = ctx.idempotency_key
    path = effects_log(ctx)
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        if not any(line.split("\t", 1)[0] == key for line in handle):
            extra = " ".join(f"{k}={v}" for k, v in sorted(details.items()))
            handle.write(f"{key}\t{action}\t{extra}\n")
    effect(action, key=key)  # counted by `durable verify`; harmless twice: same key
    return {"action": action, "key": key, **details}
