"""Replay determinism across 20 randomized crash points, through a real fleet, on both backends.

``every_primitive_flow`` (tests/apps/primitive_flows.py) uses every primitive once, a child workflow included. One
workflow runs uncrashed (the reference); 20 others each get a crash point drawn (seeded)
from every step's ``before``/``after`` and the suspend's (``--crash-at``: the worker
SIGKILLs itself there, once). All run on one fleet. Each crashed workflow must end with
the reference's history (step keys, names, positions, outputs; the values that differ per
run by nature, wake times, recorded now/uuid4/random and consumer ids, are checked against
its own result instead), the same result, one message consumed, and each side effect run
once (twice only for the step killed after it ran, and for its parallel sibling).
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest

from durable_workers import Client
from tests.apps.core_flows import calls_of
from tests.integration.fleet_support import (  # noqa: F401  (fleet: the fixture)
    APP,
    fleet,
    on_both_backends,
    query,
    wait_status,
    workflow_row,
)

pytestmark = [pytest.mark.integration, on_both_backends, pytest.mark.timeout(300)]

SEED = int(os.environ.get("DURABLE_CRASH_SEED", "20"))
POINTS = 20
STEPS = (
    "durable:now", "durable:uuid4", "durable:random", "use", "left", "right", "durable:sleep",
    "durable:recv-wait", "durable:recv", "durable:event:seen", "durable:patch:p", "new",
    "durable:child:child_device", "durable:child-result", "last",
)  # fmt: skip
CANDIDATES = [f"{s}:{p}" for s in (*STEPS, "durable:suspend") for p in ("before", "after")]
#: Recorded values that differ between any two runs: checked against the workflow's own result.
PER_RUN = (
    "durable:now#1", "durable:uuid4#1", "durable:random#1", "use#1",
    "durable:sleep#1", "durable:recv-wait#1", "durable:recv-wait#2",
    "durable:child:child_device#1", "durable:child-result#1",  # they name the child, whose id is the parent's
)  # fmt: skip
SIBLING = {"left": "right", "right": "left"}


def _history(db, workflow_id: str) -> dict[str, tuple]:  # type: ignore[no-untyped-def]
    rows = query(db, "SELECT step_key, name, scope, position, status, output FROM steps WHERE workflow_id = ?", (workflow_id,))
    return {
        r["step_key"]: (r["name"], r["scope"], r["position"], r["status"], None if r["step_key"] in PER_RUN else r["output"])
        for r in rows
    }


def _check(db, tmp_path: Path, workflow_id: str, point: str, reference: dict) -> None:  # type: ignore[no-untyped-def]
    assert _history(db, workflow_id) == reference["history"]
    result = json.loads(workflow_row(db, workflow_id)["result"])
    recorded = {r["step_key"]: json.loads(r["output"]) for r in query(db, "SELECT step_key, output FROM steps WHERE workflow_id = ?", (workflow_id,))}
    assert (result["now"], result["uuid"], result["random"]) == (
        recorded["durable:now#1"], recorded["durable:uuid4#1"], recorded["durable:random#1"],
    )  # fmt: skip
    assert {k: v for k, v in result.items() if k not in ("now", "uuid", "random")} == reference["rest"]
    effects = Counter(calls_of(tmp_path / workflow_id))
    use = f"use {result['now']!r} {result['uuid']} {result['random']!r}"
    assert set(effects) == {use, "left", "right", "new", "last"}, effects  # every execution saw the recorded values
    target, when = point.rsplit(":", 1)
    for label, n in effects.items():
        step = "use" if label == use else label
        rerun_ok = (step == target and when == "after") or step == SIBLING.get(target)
        assert n == 1 or (rerun_ok and n == 2), (label, n)
    consumed = query(db, "SELECT topic FROM messages WHERE workflow_id = ? AND consumed_by_step IS NOT NULL", (workflow_id,))
    assert [r["topic"] for r in consumed] == ["go"]
    children = query(db, "SELECT id, status FROM workflows WHERE parent_id = ?", (workflow_id,))
    assert [(r["id"], r["status"]) for r in children] == [(f"{workflow_id}/child:child_device#1", "COMPLETED")]
    assert calls_of(tmp_path / f"{workflow_id}.child") == ["provision-kid"]


def test_20_randomized_crash_points_replay_to_the_reference_history(fleet, tmp_path: Path) -> None:
    points = random.Random(SEED).sample(CANDIDATES, POINTS)
    client = Client(db=str(fleet.db), app=str(APP))
    try:
        ids = ["reference"] + [f"crash-{i:02d}" for i in range(POINTS)]
        children = [f"{workflow_id}/child:child_device#1" for workflow_id in ids]
        for workflow_id, point in zip(ids, [None, *points]):
            client.submit("every_primitive_flow", workflow_id, {"calls": str(tmp_path / workflow_id)}, crash_at=point)
            client.send(workflow_id, "go", {"n": 1})
    finally:
        client.close()
    supervisor = fleet.start(workers=2)
    wait_status(fleet.db, ids + children, "COMPLETED", 240)
    reference_result = json.loads(workflow_row(fleet.db, "reference")["result"])
    reference = {
        "history": _history(fleet.db, "reference"),
        "rest": {k: v for k, v in reference_result.items() if k not in ("now", "uuid", "random")},
    }
    assert reference["rest"] == {
        "pair": ["left", "right"], "message": {"n": 1}, "late": None, "branch": "new",
        "child": {"device": "kid", "status": "kid-ok"},
    }  # fmt: skip
    _check(fleet.db, tmp_path, "reference", "none:none", reference)
    for workflow_id, point in zip(ids[1:], points):
        try:
            _check(fleet.db, tmp_path, workflow_id, point, reference)
        except AssertionError as exc:
            raise AssertionError(f"{workflow_id} crashed at {point} (DURABLE_CRASH_SEED={SEED}): {exc}") from exc
    # Every crash point is reached once (one workflow at a time per worker): 20 workers were killed.
    assert supervisor.log().count("died (signal 9 (SIGKILL))") == POINTS
