"""`KeyOrders` (each row's key order as a code into a few distinct orders) behaves as the list
of per-row key orders it stands for."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from remediation.core.keyorders import KeyOrder, KeyOrders, concat_orders

_ORDERS = st.sampled_from(
    [(("value", "stripe_customer_id"), ()), (("stripe_customer_id", "value"), ()), ((), ("x",))]
)
_LISTS = st.lists(_ORDERS, max_size=12)


@given(_LISTS, st.data())
def test_take_and_read_as_the_list(orders: list[KeyOrder], data: st.DataObject) -> None:
    held = KeyOrders.of(orders)
    assert list(held) == orders and len(held) == len(orders)
    assert [held[i] for i in range(len(orders))] == orders
    assert len(held.distinct) == len(set(orders))
    picks = data.draw(st.lists(st.integers(0, max(len(orders) - 1, 0)), max_size=8))
    picks = picks if orders else []
    assert list(held.take(np.asarray(picks, np.int64))) == [orders[i] for i in picks]


@given(st.lists(_LISTS, max_size=4))
def test_concatenated_as_the_lists_one_after_the_other(parts: list[list[KeyOrder]]) -> None:
    joined = concat_orders([KeyOrders.of(part) for part in parts])
    assert list(joined) == [order for part in parts for order in part]
    assert len(joined.distinct) == len(set(joined.distinct))


@given(_LISTS, st.data())
def test_replaced_rows_take_the_new_orders(orders: list[KeyOrder], data: st.DataObject) -> None:
    at = data.draw(st.lists(st.integers(0, max(len(orders) - 1, 0)), unique=True, max_size=5))
    at = at if orders else []
    new = data.draw(st.lists(_ORDERS, min_size=len(at), max_size=len(at)))
    replaced = KeyOrders.of(orders).replaced(np.asarray(at, np.int64), KeyOrders.of(new))
    expected = list(orders)
    for i, order in zip(at, new, strict=True):
        expected[i] = order
    assert list(replaced) == expected
    assert (replaced == KeyOrders.of(expected)) and (replaced != KeyOrders.of(orders)) == (
        expected != orders
    )


@given(_LISTS, _LISTS)
def test_equal_as_the_lists(first: list[KeyOrder], second: list[KeyOrder]) -> None:
    """Equal when the rows' orders are, whether or not the distinct orders were listed alike."""
    a, b = KeyOrders.of(first), KeyOrders.of(second)
    assert (a == b) == (first == second)
    joined = KeyOrders.of(first + second)  # one list of distinct orders for both
    picks_a = np.arange(len(first), dtype=np.int64)
    picks_b = np.arange(len(first), len(first) + len(second), dtype=np.int64)
    assert (joined.take(picks_a) == joined.take(picks_b)) == (first == second)
