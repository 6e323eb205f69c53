"""Workflows for the typed-results tests (tests/unit/test_typed.py).

Each run appends what the workflow saw to :data:`SEEN`, so a test can compare the values of
the first run with those of the replay. Every name here starts with ``typed_``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Optional

from durable_workers import Context, register_type, workflow
from tests.apps.core_flows import halt

register_type(Decimal, str, Decimal)


@dataclass(frozen=True)
class Item:
    """A line of an order."""

    sku: str
    qty: int
    price: Decimal = Decimal("0")


@dataclass(frozen=True)
class Order:
    """An order with nested dataclasses in a list, a dict and an Optional."""

    id: str
    items: list[Item]
    tags: tuple[str, ...] = ()
    gift: Optional[Item] = None
    by_sku: dict[str, Item] = field(default_factory=dict)


#: What each run of a typed workflow saw: (the typed input, the step results).
SEEN: list[tuple[Any, ...]] = []


@workflow
def typed_order(ctx: Context, order: Order, extra: Optional[list[Item]] = None, halt_file: str | None = None) -> Order:
    """Price an order in a step that returns an ``Order``; crash after it while ``halt_file`` exists."""

    def price() -> Order:
        items = [Item(i.sku, i.qty, Decimal("2.50") * i.qty) for i in order.items]
        return Order(order.id, items, ("priced", "v1"), gift=items[0], by_sku={i.sku: i for i in items})

    def total() -> Decimal:
        return sum((i.price for i in priced.items), Decimal("0"))

    priced = ctx.step("price", price)
    amount = ctx.step("total", total)
    untyped = ctx.step("plain", lambda: {"n": 1})
    SEEN.append((order, extra, priced, amount, untyped))
    ctx.step("halt", lambda: halt(halt_file))
    return priced
