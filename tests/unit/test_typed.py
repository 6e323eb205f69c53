"""Typed results: step results and workflow inputs decoded into their annotated types.

Real engine runs on a SQLite file: the first run and the replay after a crash must give equal
typed objects, and the stored rows stay plain JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Optional, Sequence

import pytest

from durable_workers import Client, InputError, Registry, TypedValueError
from durable_workers.typed import decode_as, to_json
from tests.apps.core_flows import SimulatedCrash
from tests.apps.typed_flows import SEEN, Item, Order

pytestmark = [pytest.mark.timeout(60)]

ORDER = Order("o-1", [Item("a", 2), Item("b", 1)])


def test_step_results_and_inputs_are_typed_the_same_on_first_run_and_replay(client: Client, tmp_path: Path) -> None:
    halt = tmp_path / "halt"
    halt.touch()
    SEEN.clear()
    extra = [Item("c", 3)]
    with pytest.raises(SimulatedCrash):
        client.run_here("typed_order", "t-1", {"order": ORDER, "extra": extra, "halt_file": str(halt)})
    halt.unlink()
    record, _ = client.run_here("typed_order", "t-1")
    assert record.status == "COMPLETED", record.error
    first, replay = SEEN
    assert first == replay
    order, seen_extra, priced, amount, untyped = replay
    assert order == ORDER and seen_extra == extra
    assert isinstance(priced, Order) and isinstance(priced.items[0], Item)
    assert priced.tags == ("priced", "v1") and isinstance(priced.gift, Item)
    assert priced.by_sku["a"] == Item("a", 2, Decimal("5.00"))
    assert amount == Decimal("7.50") and isinstance(amount, Decimal)
    assert untyped == {"n": 1}
    stored = {r.step_key: json.loads(r.output) for r in client.store.load_steps("t-1") if r.output}
    assert stored["total#1"] == "7.50"
    assert stored["price#1"]["items"][0] == {"sku": "a", "qty": 2, "price": "5.00"}
    assert record.result["id"] == "o-1"  # the workflow's own result is stored (and read back) as JSON


def test_an_input_that_does_not_fit_its_annotation_is_refused_at_submit(client: Client) -> None:
    with pytest.raises(InputError, match="does not fit workflow 'typed_order'.*not a JSON array"):
        client.submit("typed_order", "bad", {"order": {"id": "o", "items": 3}})
    assert not Path(client.config.db).exists()  # refused before the database was opened


@dataclass
class Point:
    x: int
    y: Optional[int] = None


def test_decode_as_rejects_a_value_that_does_not_fit() -> None:
    assert decode_as(list[Point], [{"x": 1}, {"x": 2, "y": 3}]) == [Point(1), Point(2, 3)]
    assert decode_as(dict[str, Optional[Point]], {"a": None}) == {"a": None}
    assert decode_as(Sequence[Point], [{"x": 1}]) == [Point(1)]
    assert decode_as(frozenset[int], [1, 1]) == frozenset({1})
    with pytest.raises(TypedValueError, match="does not declare"):
        decode_as(Point, {"x": 1, "z": 2})
    with pytest.raises(TypedValueError, match="not a JSON object"):
        decode_as(Point, [1])
    with pytest.raises(TypeError):
        to_json(object())


def test_pydantic_models_round_trip_when_pydantic_is_installed(db_path: Path) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Account(pydantic.BaseModel):
        name: str
        points: list[int]

    seen: list[object] = []

    def flow(ctx, account):  # annotated below: a class local to this test is not resolvable by name
        def grow():
            return Account(name=account.name, points=[*account.points, 3])

        grow.__annotations__ = {"return": Account}
        seen.append(ctx.step("grow", grow))
        return seen[-1]

    flow.__annotations__ = {"account": Account}
    registry = Registry()
    registry.register(flow, "typed_pydantic")
    client = Client(db=str(db_path), registry=registry)
    try:
        record, _ = client.run_here("typed_pydantic", "p-1", {"account": Account(name="x", points=[1])})
        assert record.status == "COMPLETED", record.error
        assert record.result == {"name": "x", "points": [1, 3]}
        ctx_value = seen[0]  # the first run hands back the JSON round-trip, as a replay would
        assert isinstance(ctx_value, Account) and ctx_value == Account(name="x", points=[1, 3])
    finally:
        client.close()
    assert decode_as(Account, json.loads(json.dumps(ctx_value, default=to_json))) == ctx_value


@dataclass
class Priced:
    qty: int
    total: int = field(init=False)

    def __post_init__(self) -> None:
        self.total = self.qty * 10


def test_a_derived_field_is_not_stored_and_is_rebuilt_on_decoding() -> None:
    stored = json.loads(json.dumps(Priced(3), default=to_json))
    assert stored == {"qty": 3}
    rebuilt = decode_as(Priced, stored)
    assert (rebuilt.qty, rebuilt.total) == (3, 30)
