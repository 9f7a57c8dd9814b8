"""Customer rule: the rules' customer map, then trim/case fixes (checked with the directory
when there is one), then one unique metadata search hit. Decided once per distinct customer
text, never per row (a file names few customers many times)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.changes import Change, Context, meter_of
from remediation.core.checks import meter_of_rows
from remediation.core.columns import Batch, Column, Indexes, Mask
from remediation.core.rules.base import Changes, Fix, one_by_one, set_column
from remediation.errors import Uncorrectable
from remediation.limits import shown
from remediation.records import UsageRecord

PICKS_KEPT = 20_000  # customer texts whose pick a run keeps (a few MB at most)


def fix_customer(batch: Batch, ctx: Context) -> Fix:
    meters, positions = meter_of_rows(batch, ctx.index)
    lanes: dict[str, Mask] = {}  # by customer key: the meters that share one, at once
    rest = np.ones(len(batch), bool)
    for at, meter in enumerate(meters):
        column = batch.payload.get(meter.customer_key) if meter is not None else None
        if meter is None or column is None:
            continue
        rows = (positions == at) & column.is_text()
        lane = lanes.setdefault(meter.customer_key, np.zeros(len(batch), bool))
        lane |= rows
        rest &= ~rows
    fix = one_by_one(batch, ctx, fix_customer_row, np.flatnonzero(rest))
    for key, lane in lanes.items():
        if lane.any():
            _by_distinct(fix, key, np.flatnonzero(lane), ctx)
    return fix


def _by_distinct(fix: Fix, key: str, rows: Indexes, ctx: Context) -> None:
    """The customer picked for each distinct text (and the reason when none is), handed to
    its rows by index."""
    raw = fix.batch.payload[key].text.take(pa.array(rows))
    encoded = pc.dictionary_encode(raw)
    texts = encoded.dictionary.to_pylist()
    picks = _picks(texts, ctx)
    index = encoded.indices.to_numpy(zero_copy_only=False)
    none = np.asarray([p is None for p in picks], bool)
    failed = none[index]
    if failed.any():
        reasons = {at: no_match(str(texts[at])) for at in np.flatnonzero(none).tolist()}
        fix.fail(rows[failed], [reasons[i] for i in index[failed].tolist()])
    ok = np.flatnonzero(~failed)
    if not len(ok):
        return
    picked = pa.array(index[ok])
    after = Column(pa.array([p[1] if p else None for p in picks], pa.string()).take(picked))
    at = rows[ok]
    payload = dict(fix.batch.payload)
    payload[key] = set_column(payload[key], at, after)
    fix.batch = fix.batch.with_fields(payload=payload)
    used = {pick[0] for i in set(index[ok].tolist()) if (pick := picks[i])}
    rule: str | list[str] = next(iter(used))
    if len(used) > 1:
        rule = [p[0] if p else "" for p in picks]
        rule = [rule[i] for i in index[ok].tolist()]
    before = Column(raw.take(pa.array(ok)))
    fix.changes.append(Changes(at, rule, f"payload.{key}", before, after))


def _picks(texts: list[str], ctx: Context) -> list[tuple[str, str] | None]:
    """`customer_for` of each text: the run's kept picks read in one pass (a batch names
    thousands of customers, nearly all met before), the others decided one by one."""
    kept = ctx.customer_picks
    picks = list(map(kept.get, texts, repeat(_UNKNOWN)))
    for at, pick in enumerate(picks):
        if pick is _UNKNOWN:
            picks[at] = customer_for(texts[at], ctx)
    return picks


_UNKNOWN: Any = object()


def fix_customer_row(record: UsageRecord, ctx: Context) -> list[Change]:
    key = meter_of(record, ctx).customer_key
    raw = str(record.payload.get(key, ""))
    pick = customer_for(raw, ctx)
    if pick is None:
        raise Uncorrectable(no_match(raw))
    record.payload[key] = pick[1]
    return [Change(pick[0], f"payload.{key}", raw, pick[1])]


def no_match(raw: str) -> str:
    return f"customer {shown(raw)} is not in the customer map and has no unique match"


def customer_for(raw: str, ctx: Context) -> tuple[str, str] | None:
    """(rule, customer) for a customer text, or None when nothing matches: decided once per
    run for the first `PICKS_KEPT` texts (a file names the same customers in every batch, and
    each answer may have cost a Stripe search)."""
    picks = ctx.customer_picks
    if raw in picks:
        return picks[raw]
    pick = _pick(raw, ctx)
    if len(picks) < PICKS_KEPT:
        picks[raw] = pick
    return pick


def _pick(raw: str, ctx: Context) -> tuple[str, str] | None:
    for rule, candidate in _customer_candidates(raw, ctx):
        if candidate and candidate != raw and ctx.rules.enabled(rule):
            return rule, candidate
    return None


def _customer_candidates(raw: str, ctx: Context) -> Iterator[tuple[str, str | None]]:
    """Candidates in order; lazily, so the directory is asked only when the map has no answer."""
    trimmed = raw.strip()
    yield "map_customer", ctx.rules.customers.get(raw) or ctx.rules.customers.get(trimmed)
    cased = "cus_" + trimmed[4:] if trimmed.lower().startswith("cus_") else trimmed
    directory = ctx.customers
    if directory is None or directory.exists(cased):
        yield "trim_customer", cased
    key = ctx.rules.policy.customer_metadata_key
    if directory is not None and key and ctx.rules.enabled("search_customer"):
        hits = directory.search_by_metadata(key, trimmed)
        yield "search_customer", hits[0] if len(hits) == 1 else None
