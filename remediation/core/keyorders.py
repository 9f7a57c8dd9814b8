"""Each row's payload and extra keys in file order (`KeyOrders`), held as a code per row into
the few distinct orders a batch has. Apart from the batch (`batch`): orders are taken, joined
and replaced as codes, on their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from remediation.core.column import Indexes
from remediation.jsonrecords import NO_PAYLOAD

KeyOrder = tuple[tuple[str, ...], tuple[str, ...]]  # a row's payload keys and extra keys


def names_payload(order: KeyOrder) -> bool:
    """Whether rows of this order name a payload: all but those marked as naming none and
    holding none (`jsonrecords.names_no_payload`), which a quarantined row is written without."""
    payload_keys, extra_keys = order
    return bool(payload_keys) or NO_PAYLOAD not in extra_keys


class FoldedKey(str):
    """A payload key standing for a run of a row's pairs folded into one value, their JSON
    text (`folding.fold`): written as it is, with no key of its own (`jsonpieces.json_key`)."""

    __slots__ = ()


class KeyOrders:
    """Each row's payload and extra keys in file order (`Batch.order`), held as a code per row
    into the few distinct orders a batch has: taking rows takes codes, not Python tuples."""

    __slots__ = ("codes", "distinct")

    def __init__(self, distinct: Sequence[KeyOrder], codes: npt.NDArray[np.int32]) -> None:
        self.distinct, self.codes = tuple(distinct), codes

    @classmethod
    def of(cls, orders: Iterable[KeyOrder]) -> KeyOrders:
        index: dict[KeyOrder, int] = {}
        codes = [index.setdefault(order, len(index)) for order in orders]
        return cls(list(index), np.asarray(codes, np.int32))

    @classmethod
    def same(cls, order: KeyOrder, length: int) -> KeyOrders:
        return cls([order], np.zeros(length, np.int32))

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> KeyOrder:
        return self.distinct[self.codes[i]]

    def __iter__(self) -> Iterator[KeyOrder]:
        distinct = self.distinct
        return (distinct[code] for code in self.codes.tolist())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyOrders):
            return False
        if self.distinct == other.distinct:  # rows taken from one batch: compare the codes
            return bool(np.array_equal(self.codes, other.codes))
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable codes: compared, never hashed

    def take(self, indexes: Indexes) -> KeyOrders:
        return KeyOrders(self.distinct, self.codes[indexes])

    def replaced(self, at: Indexes, new: KeyOrders) -> KeyOrders:
        """These orders with rows `at` set to `new`'s (row i of `new` to row at[i])."""
        joined = concat_orders([self, new])
        codes = joined.codes[: len(self)].copy()
        codes[at] = joined.codes[len(self) :]
        return KeyOrders(joined.distinct, codes)


def concat_orders(parts: Sequence[KeyOrders]) -> KeyOrders:
    """The rows of `parts`, one after the other (their distinct orders merged)."""
    index: dict[KeyOrder, int] = {}
    codes = []
    for part in parts:
        mapping = np.asarray(
            [index.setdefault(order, len(index)) for order in part.distinct], np.int32
        )
        codes.append(mapping[part.codes] if len(mapping) else part.codes)
    joined = np.concatenate(codes) if codes else np.zeros(0, np.int32)
    return KeyOrders(list(index), joined.astype(np.int32, copy=False))
