"""The read-only replay context behind ``durable check-replay`` (real SQLite files).

A history is recorded by one version of a workflow, then checked against other versions
registered in their own :class:`Registry` under the same name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from durable_workers import Client, Context, DurableInterrupt, NonDeterminismError, Registry
from durable_workers.replaycheck import ReplayVerdict
from tests.apps.core_flows import SimulatedCrash, halt

pytestmark = [pytest.mark.timeout(60)]

NAME = "replaycheck_fan"


def v1(ctx: Context, halt_file: str) -> int:
    a, b = ctx.parallel(lambda: ctx.step("x", lambda: 1), lambda: ctx.step("y", lambda: 2))
    ctx.step("halt", lambda: halt(halt_file))
    return a + b


def renamed_branch(ctx: Context, halt_file: str) -> int:
    ctx.parallel(lambda: ctx.step("z", lambda: 1), lambda: ctx.step("y", lambda: 2))
    return 0


def swallowing(ctx: Context, halt_file: str) -> int:
    try:
        ctx.step("renamed", lambda: 1)
    except NonDeterminismError:
        pass
    return 0


def waiting(ctx: Context, halt_file: str) -> int:
    ctx.parallel(lambda: ctx.step("x", lambda: 1), lambda: ctx.step("y", lambda: 2))
    if ctx.read_only:  # the hook a primitive that writes outside ctx.step uses
        raise ctx.stop_replay("recv#1", "would wait for a message on 'approval'")
    raise AssertionError("a real run would wait here")


def renamed_input(ctx: Context, path: str) -> int:
    """v1 with its parameter renamed: the recorded input no longer binds."""
    return 0


def buggy(ctx: Context, halt_file: str) -> int:
    a, b = ctx.parallel(lambda: ctx.step("x", lambda: 1), lambda: ctx.step("y", lambda: 2))
    return a.missing  # type: ignore[attr-defined, no-any-return]



class Suspend(DurableInterrupt):
    """Stands in for another primitive's suspend."""


def suspending(ctx: Context, halt_file: str) -> int:
    ctx.parallel(lambda: ctx.step("x", lambda: 1), lambda: ctx.step("y", lambda: 2))
    raise Suspend("sleeping until later")


def _registry(fn: Callable[..., Any]) -> Registry:
    registry = Registry()
    registry.register(fn, NAME)
    return registry


def _check(db_path: Path, fn: Callable[..., Any]) -> ReplayVerdict:
    client = Client(db=str(db_path), registry=_registry(fn), readonly=True)
    try:
        (verdict,) = client.check_replay()
        return verdict
    finally:
        client.close()


@pytest.fixture
def recorded(db_path: Path, tmp_path: Path) -> Path:
    """``wf`` recorded by v1 up to its ``halt`` step (x and y completed, halt RUNNING)."""
    halt_file = tmp_path / "halt"
    halt_file.touch()
    client = Client(db=str(db_path), registry=_registry(v1))
    with pytest.raises(SimulatedCrash):
        client.run_here(NAME, "wf", {"halt_file": str(halt_file)})
    client.close()
    return db_path


@pytest.mark.parametrize(
    "version, outcome, step",
    [
        (v1, "continues", "halt#1"),
        (renamed_branch, "diverges", "parallel#1/0/z#1"),
        (swallowing, "diverges", "renamed#1"),
        (waiting, "continues", "recv#1"),
        (suspending, "stops", None),
        (renamed_input, "breaks", None),
        (buggy, "breaks", None),
    ],
)
def test_each_version_gets_its_verdict(recorded: Path, version: Callable[..., Any], outcome: str, step: str | None) -> None:
    verdict = _check(recorded, version)
    assert (verdict.outcome, verdict.step) == (outcome, step), verdict.detail
    assert verdict.ok is (outcome not in ("diverges", "breaks"))
