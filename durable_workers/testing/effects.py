"""The effects hook: steps declare their side effects so the crash-test kit can count them.

Call :func:`effect` inside a step function, right where the side effect
happens (the charge, the email, the provisioning call)::

    def charge() -> dict:
        receipt = provider.charge(amount, idempotency_key=ctx.idempotency_key)
        effect("charge card", key=ctx.idempotency_key)
        return receipt

Pass ``key`` when the downstream system deduplicates by it: a second delivery
with the same key is then harmless. Outside a crash test (the environment
variable :data:`EFFECTS_ENV` unset) the call does nothing and costs one
dictionary lookup.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import keys

#: The variable naming the file a crash test collects effects in (set by the kit for its runs).
EFFECTS_ENV = "DURABLE_EFFECTS_FILE"


@dataclass(frozen=True)
class Effect:
    """One declared side effect: what, under which idempotency key, in which step and process."""

    name: str
    key: str | None
    workflow_id: str
    step_key: str
    pid: int


def effect(name: str, *, key: str | None = None) -> None:
    """Declare that the running step just performed the side effect ``name``.

    ``key``: the idempotency key the downstream system deduplicates by (usually
    ``ctx.idempotency_key``), or None when it does not deduplicate. Under a crash
    test, an effect that runs twice for one step call is flagged unless both runs
    gave the same ``key``. Does nothing outside a crash test.
    """
    path = os.environ.get(EFFECTS_ENV)
    if not path:
        return
    ctx = keys.active_context()
    line = {
        "name": str(name),
        "key": None if key is None else str(key),
        "workflow_id": ctx.workflow_id if ctx is not None else "",
        "step_key": keys.running_step() or "",
        "pid": os.getpid(),
    }
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line, sort_keys=True) + "\n").encode())  # one write: lines never interleave
    finally:
        os.close(fd)


def read_effects(path: str | Path) -> list[Effect]:
    """The effects recorded in ``path`` (none when it does not exist); a torn last line is skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        try:
            data: dict[str, Any] = json.loads(line)
        except ValueError:
            continue  # the process was killed in the middle of its write
        found.append(Effect(data["name"], data.get("key"), data["workflow_id"], data["step_key"], int(data["pid"])))
    return found
