"""Payload-key rules: a value or customer key under an alias is renamed, keys the meter does
not use are dropped, a missing dimension is filled from its single alias.

These change which keys a row has, so they take rows one at a time (such rows are few).
"""

from __future__ import annotations

from remediation.changes import Change, Context, meter_of
from remediation.core.columns import Batch
from remediation.core.rules.base import Fix, one_by_one
from remediation.errors import Uncorrectable
from remediation.records import UsageRecord
from remediation.validation import is_customer_id, no_customer_id


def rename_value_key(batch: Batch, ctx: Context) -> Fix:
    return one_by_one(batch, ctx, rename_value_key_row)


def rename_value_key_row(record: UsageRecord, ctx: Context) -> list[Change]:
    meter = meter_of(record, ctx)
    if not ctx.rules.enabled("rename_value_key"):  # before the row is changed
        raise Uncorrectable("rule rename_value_key is disabled")
    change = rename_alias(record, meter.value_key, ctx.rules.value_keys, {meter.customer_key})
    if change is None:
        raise Uncorrectable(f"no single aliased column for value key {meter.value_key!r}")
    return [change]


def fill_customer_key(batch: Batch, ctx: Context) -> Fix:
    return one_by_one(batch, ctx, fill_customer_key_row)


def fill_customer_key_row(record: UsageRecord, ctx: Context) -> list[Change]:
    meter = meter_of(record, ctx)
    if not ctx.rules.enabled("fill_customer_key"):
        raise Uncorrectable("rule fill_customer_key is disabled")
    held = record.payload.get(meter.customer_key)
    if holds(held) and not is_customer_id(held):  # an object, a list, a boolean, a fraction
        raise Uncorrectable(no_customer_id(meter.customer_key, held))  # not overwritten
    change = rename_alias(record, meter.customer_key, ctx.rules.customer_keys, {meter.value_key})
    if change is not None:
        return [change]
    found = {
        str(v).strip()
        for k, v in record.extra.items()
        if k.lower() in ctx.rules.customer_keys and _customer_text(v)
    }
    if not found and meter.customer_key in ctx.header_aliases and str(held or "").strip():
        # a CSV column under an alias (`customer_id`), which the repaired header renamed to
        # the meter's key: the row holds it there now, but Stripe read it without one, so it
        # is filled as from a top-level alias in JSON (the correction the row is re-sent for)
        return [Change("fill_customer_key", f"payload.{meter.customer_key}", None, held)]
    if len(found) != 1:
        raise Uncorrectable(f"no single aliased column for customer key {meter.customer_key!r}")
    value = found.pop()
    record.payload[meter.customer_key] = value
    return [Change("fill_customer_key", f"payload.{meter.customer_key}", None, value)]


def _customer_text(value: object) -> bool:
    """Whether a top-level alias's value can be a customer: text that is not blank, or a
    whole number (an external id a `[customers]` entry may map). `null` is no candidate (it
    was the customer "None"), nor is an object, a list or a boolean (Python's text of it,
    "{'a': 1}" or "False", was sent as the customer)."""
    return is_customer_id(value)


def rename_alias(
    record: UsageRecord, target: str, aliases: tuple[str, ...], exclude: set[str]
) -> Change | None:
    candidates = [
        k
        for k, v in record.payload.items()
        if k != target and k not in exclude and k.lower() in aliases and holds(v)
    ]
    if len(candidates) != 1:
        return None
    value = record.payload.pop(candidates[0])
    record.payload[target] = value
    return Change("rename_key", f"payload.{candidates[0]}", candidates[0], target)


def holds(value: object) -> bool:
    """Whether an alias's value is a candidate for the key it aliases: a blank (None, or a
    string of spaces or nothing) holds no customer or amount. JSON spells one `""` or `null`
    where a CSV leaves the cell empty (absent); counted, it made a second candidate beside
    the alias that holds the customer, and the row was quarantined in JSON only."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def drop_unused_keys(batch: Batch, ctx: Context) -> Fix:
    return one_by_one(batch, ctx, drop_unused_keys_row)


def drop_unused_keys_row(record: UsageRecord, ctx: Context) -> list[Change]:
    """Keys the meter does not use are dropped; an alias of a key it needs is not one of them:
    a missing dimension is filled from its alias first (or the row refused, saying which
    dimension no single alias holds), an alias of a missing customer or value key is kept for
    that key's own rule (dropped, the row was quarantined as lacking what it held)."""
    meter = meter_of(record, ctx)
    if not ctx.rules.enabled("drop_unused_keys"):
        raise Uncorrectable("too many payload keys and rule drop_unused_keys is disabled")
    changes = fill_dimensions_row(record, ctx)
    kept = _aliases_kept(record, ctx)
    used = {meter.customer_key, meter.value_key, *meter.dimension_keys, *kept}
    unused = [key for key in record.payload if key not in used]
    if not unused and not changes and kept:
        alias, target = next(iter(kept.items()))
        raise Uncorrectable(
            f"no payload key to drop: {alias!r} is an alias of the meter's key {target!r}, "
            "which the row lacks"
        )
    if not unused and not changes:
        raise Uncorrectable("every payload key is used by the meter; nothing to drop")
    return changes + [
        Change("drop_unused_keys", f"payload.{key}", record.payload.pop(key), None)
        for key in unused
    ]


def _aliases_kept(record: UsageRecord, ctx: Context) -> dict[str, str]:
    """The row's aliases (each to its key) of its meter's customer key (when missing or blank)
    and value key (when missing): the rules for those codes rename them
    (`validation.check_payload` says which code a row has)."""
    meter = meter_of(record, ctx)
    customer = record.payload.get(meter.customer_key)
    kept: dict[str, str] = {}
    if customer is None or (isinstance(customer, str) and not customer.strip()):
        kept |= {
            k: meter.customer_key for k in record.payload if k.lower() in ctx.rules.customer_keys
        }
    if meter.value_key not in record.payload:
        kept |= {k: meter.value_key for k in record.payload if k.lower() in ctx.rules.value_keys}
    kept.pop(meter.customer_key, None)
    kept.pop(meter.value_key, None)
    return kept


def fill_dimensions(batch: Batch, ctx: Context) -> Fix:
    return one_by_one(batch, ctx, fill_dimensions_row)


def fill_dimensions_row(record: UsageRecord, ctx: Context) -> list[Change]:
    meter = meter_of(record, ctx)
    changes = []
    for key in meter.dimension_keys:
        if key in record.payload:
            continue
        aliases = ctx.rules.dimension_aliases.get(key, ())
        found = [a for a in aliases if holds(record.payload.get(a)) or holds(record.extra.get(a))]
        if not ctx.rules.enabled("fill_dimension"):
            raise Uncorrectable(
                f"dimension key {key!r} missing and rule fill_dimension is disabled"
            )
        if len(found) != 1:
            raise Uncorrectable(f"dimension key {key!r} missing and no single alias holds it")
        alias = found[0]
        value = (
            record.payload.pop(alias) if holds(record.payload.get(alias)) else record.extra[alias]
        )
        record.payload[key] = value
        changes.append(Change("fill_dimension", f"payload.{key}", None, value))
    return changes
