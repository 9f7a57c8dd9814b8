"""Customer rule: the rules' customer map, then trim/case fixes (checked with the directory
when there is one), then one unique metadata search hit. Decided once per distinct customer
text, never per row (a file names few customers many times)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.changes import Change, Context, meter_of
from remediation.core.checks import meter_of_rows
from remediation.core.column import Mask
from remediation.core.columns import Batch, Column, Indexes
from remediation.core.rules.base import Changes, Fix, one_by_one, set_column
from remediation.errors import LookupRefused, Uncorrectable
from remediation.limits import shown
from remediation.records import UsageRecord

PICKS_KEPT = 20_000  # customer texts whose pick a run keeps (a few MB at most)
# The pick of a text the run had no Stripe call left to look up (`Policy.customer_lookups`)
NOT_LOOKED_UP = ("not_looked_up", "")
# The pick of a text Stripe refused to look up (`LookupRefused`): one text, not the file
LOOKUP_REFUSED = ("lookup_refused", "")


class _LookupsSpent(Exception):
    """The run made the Stripe calls its policy allows: a text needing one is not decided."""


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
    its rows by index: texts the run has picked for already are looked up for all rows at
    once (`_Kept`), the others decided once each."""
    raw = fix.batch.payload[key].text.take(pa.array(rows))
    kept, found = _looked_up(raw, ctx)
    picked = kept.customers.take(found)
    failed = np.asarray(picked.is_null().to_numpy(zero_copy_only=False), bool)
    if failed.any():
        mask = pa.array(failed)
        refused = raw.filter(mask).to_pylist()
        why = kept.rules.take(found).filter(mask).to_pylist()
        reasons = {text: _refusal(text, rule, ctx) for text, rule in zip(refused, why, strict=True)}
        fix.fail(rows[failed], [reasons[text] for text in refused])
    ok = np.flatnonzero(~failed)
    if len(ok):
        _set_customers(fix, key, rows, raw, ok, picked, kept.rules.take(found.take(pa.array(ok))))


def _looked_up(raw: pa.Array, ctx: Context) -> tuple[_Kept, pa.Array]:
    """The run's kept picks, with those of the texts met for the first time decided and kept,
    and each text's place among them."""
    kept = _kept(ctx)
    found = pc.index_in(raw, value_set=kept.texts)
    if found.null_count:  # texts met for the first time (or not kept: the run's picks full)
        # looked up among themselves, placed after the kept ones: hashing the run's kept texts
        # a second time cost 0.6 ms a batch (a `varied` file: 40 ms of its 170 in this rule)
        missing = np.asarray(found.is_null().to_numpy(zero_copy_only=False), bool)
        unknown = raw.filter(pa.array(missing))
        new = pc.unique(unknown).to_pylist()
        fresh = _Kept.of([(text, customer_for(text, ctx)) for text in new])  # the run keeps
        places = np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), np.int64)
        places[missing] = len(kept.texts) + np.asarray(
            pc.index_in(unknown, value_set=fresh.texts).to_numpy(zero_copy_only=False), np.int64
        )
        kept = kept.then(fresh)
        found = pa.array(places, pa.int64())
    return kept, found


def _set_customers(
    fix: Fix,
    key: str,
    rows: Indexes,
    raw: pa.Array,
    ok: Indexes,
    picked: pa.Array,
    by_rule: pa.Array,
) -> None:
    """The rows `ok` (of `rows`) given their picked customers under `key`, as one change (the
    rule of each pick)."""
    taken = pa.array(ok)
    after = Column(picked.take(taken))
    at = rows[ok]
    payload = dict(fix.batch.payload)
    payload[key] = set_column(payload[key], at, after)
    fix.batch = fix.batch.with_fields(payload=payload)
    used = pc.unique(by_rule)
    rule: str | list[str] = used[0].as_py() if len(used) == 1 else by_rule.to_pylist()
    before = Column(raw.take(taken))
    fix.changes.append(Changes(at, rule, f"payload.{key}", before, after))


@dataclass(slots=True)
class _Kept:
    """The run's kept picks (`Context.customer_picks`, in the order kept) as columns, for a
    batch's texts to be looked up at once: `texts[i]` was picked `customers[i]` by
    `rules[i]` (both null: no match). A `varied` file's 133,000 customer texts (113,000
    distinct within their batches) looked up one by one in Python were 16 % of the deciding
    thread."""

    texts: pa.Array
    customers: pa.Array
    rules: pa.Array

    @classmethod
    def of(cls, picks: Sequence[tuple[str, tuple[str, str] | None]]) -> _Kept:
        texts, chosen = zip(*picks, strict=True) if picks else ((), ())
        return cls(
            pa.array(texts, pa.string()),
            pa.array([pick[1] if pick and pick[1] else None for pick in chosen], pa.string()),
            pa.array([pick[0] if pick else None for pick in chosen], pa.string()),
        )

    def with_picks(self, picks: Mapping[str, tuple[str, str] | None]) -> _Kept:
        if not picks:
            return self
        return self.then(_Kept.of(list(picks.items())))

    def then(self, more: _Kept) -> _Kept:
        """These picks, then `more` (their places after these)."""
        return _Kept(
            pa.concat_arrays([self.texts, more.texts]),
            pa.concat_arrays([self.customers, more.customers]),
            pa.concat_arrays([self.rules, more.rules]),
        )


def _kept(ctx: Context) -> _Kept:
    """The run's kept picks as columns, extended with those kept since last asked (by this
    rule or by the row rule's `customer_for`: the picks keep their order, none is dropped)."""
    picks = ctx.customer_picks
    table = picks.columns if isinstance(picks.columns, _Kept) else _Kept.of([])
    if len(table.texts) < len(picks):
        added = dict(islice(picks.items(), len(table.texts), None))
        table = table.with_picks(added)
    picks.columns = table
    return table


def fix_customer_row(record: UsageRecord, ctx: Context) -> list[Change]:
    key = meter_of(record, ctx).customer_key
    held = record.payload.get(key)
    # looked up as text (a JSON 12345 as "12345"); named and audited as it came, a number as
    # a number (a JSON null is no customer text: not "None")
    raw = "" if held is None else str(held)
    came = raw if held is None else held
    pick = customer_for(raw, ctx)
    if pick is None or not pick[1]:
        raise Uncorrectable(_refusal(came, pick and pick[0], ctx))
    record.payload[key] = pick[1]
    return [Change(pick[0], f"payload.{key}", came, pick[1])]


def no_match(raw: object) -> str:
    return f"customer {shown(raw)} is not in the customer map and has no unique match"


def _refusal(raw: object, rule: str | None, ctx: Context) -> str:
    """Why a customer text has no pick: no match, no Stripe call left to look it up, or
    Stripe refused its look-up."""
    if rule == LOOKUP_REFUSED[0]:
        return (
            f"customer {shown(raw)} is not in the customer map and Stripe refused to look it "
            "up (400: a query it will not run); map it in the rules' customer map and re-run "
            "the quarantined rows"
        )
    if rule != NOT_LOOKED_UP[0]:
        return no_match(raw)
    return (
        f"customer {shown(raw)} is not in the customer map and was not looked up in Stripe: "
        f"this run made the {ctx.rules.policy.customer_lookups} customer look-ups policy "
        "customer_lookups allows; re-run the quarantined rows to look up the rest"
    )


def customer_for(raw: str, ctx: Context) -> tuple[str, str] | None:
    """(rule, customer) for a customer text, or None when nothing matches: decided once per
    run for the first `PICKS_KEPT` texts (a file names the same customers in every batch, and
    each answer may have cost a Stripe search)."""
    picks = ctx.customer_picks
    if raw in picks:
        return picks[raw]
    try:
        pick = _pick(raw, ctx)
    except _LookupsSpent:
        pick = NOT_LOOKED_UP
    except LookupRefused:  # for this text only: the run goes on with the others
        pick = LOOKUP_REFUSED
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
    if directory is None:  # unchecked: only to a Stripe id (` ACME-42 ` went out as `ACME-42`,
        # a text no map or check had taken, while `ACME-42` itself was quarantined)
        yield "trim_customer", cased if cased.startswith("cus_") else None
        return
    if cased != raw and ctx.rules.enabled("trim_customer"):  # else no answer could be used
        _spend_lookup(ctx)
        if directory.exists(cased):
            yield "trim_customer", cased
    key = ctx.rules.policy.customer_metadata_key
    if key and ctx.rules.enabled("search_customer"):
        _spend_lookup(ctx)
        hits = directory.search_by_metadata(key, trimmed)
        yield "search_customer", hits[0] if len(hits) == 1 else None


def _spend_lookup(ctx: Context) -> None:
    """Count one Stripe call of the run's customer look-ups, or refuse it when none is left."""
    picks = ctx.customer_picks
    if picks.asked >= ctx.rules.policy.customer_lookups:
        raise _LookupsSpent
    picks.asked += 1
