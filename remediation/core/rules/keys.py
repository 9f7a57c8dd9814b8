"""Payload-key rules: a value or customer key under an alias is renamed, keys the meter does
not use are dropped, a missing dimension is filled from its single alias.

These change which keys a row has, so they take rows one at a time (such rows are few).
"""

from __future__ import annotations

from collections.abc import Callable, Set

from remediation.changes import Change, Context, meter_of
from remediation.core.columns import Batch
from remediation.core.rules.base import Fix, one_by_one
from remediation.errors import Uncorrectable
from remediation.limits import shown
from remediation.records import UsageRecord
from remediation.validation import is_customer_id, no_customer_id


def rename_value_key(batch: Batch, ctx: Context) -> Fix:
    return one_by_one(batch, ctx, rename_value_key_row)


def rename_value_key_row(record: UsageRecord, ctx: Context) -> list[Change]:
    meter = meter_of(record, ctx)
    if not ctx.rules.enabled("rename_value_key"):  # before the row is changed
        raise Uncorrectable("rule rename_value_key is disabled")
    # what the row's top-level aliases hold (a CSV's second alias column, `quantity` beside
    # `amount`, is one): one other than the amount renamed is a second amount
    top = top_level(record, ctx.rules.value_keys, holds)
    exclude = {meter.customer_key, *meter.dimension_keys}
    change = rename_alias(record, meter.value_key, ctx.rules.value_keys, exclude, top)
    if change is not None:
        return [change]
    alias = ctx.header_aliases.get(meter.value_key)
    if alias is not None and holds(held := record.payload.get(meter.value_key)):
        # a CSV column under an alias (`amount`) the repaired header renamed to the meter's
        # value key: Stripe read the row without one (as `fill_customer_key_row` does)
        other = sorted(top - {str(held).strip()})
        if other:  # `amount,quantity` columns holding 5 and 7: 5 was billed, 7 never named
            raise Uncorrectable(clash(meter.value_key, held, "a top-level alias", other[0]))
        return [Change("rename_key", f"payload.{alias}", alias, meter.value_key)]
    if holds(held := record.payload.get(meter.value_key)):
        raise Uncorrectable(already_held("value", meter.value_key, held))
    plainly = None if top else nothing_in_payload(record, "value", meter.value_key)
    raise Uncorrectable(plainly or f"no single aliased column for value key {meter.value_key!r}")


def fill_customer_key(batch: Batch, ctx: Context) -> Fix:
    return one_by_one(batch, ctx, fill_customer_key_row)


def fill_customer_key_row(record: UsageRecord, ctx: Context) -> list[Change]:
    changes = _fill_customer_key(record, ctx)
    return changes + _mapped_customer(record, ctx)


def _mapped_customer(record: UsageRecord, ctx: Context) -> list[Change]:
    """The customer just filled, mapped when the `[customers]` map names it: `acme-42` went
    out as it was, Stripe refused it (customer not found), and only the next generation
    mapped it to the `cus_…` the map named all along."""
    key = meter_of(record, ctx).customer_key
    held = record.payload.get(key)
    if held is None or not ctx.rules.enabled("map_customer"):
        return []
    text = str(held)
    mapped = ctx.rules.customers.get(text) or ctx.rules.customers.get(text.strip())
    if not mapped or mapped == text:
        return []
    record.payload[key] = mapped
    return [Change("map_customer", f"payload.{key}", held, mapped)]


def _fill_customer_key(record: UsageRecord, ctx: Context) -> list[Change]:
    meter = meter_of(record, ctx)
    if not ctx.rules.enabled("fill_customer_key"):
        raise Uncorrectable("rule fill_customer_key is disabled")
    held = record.payload.get(meter.customer_key)
    if holds(held) and not is_customer_id(held):  # an object, a list, a boolean, a fraction
        raise Uncorrectable(no_customer_id(meter.customer_key, held))  # not overwritten
    found = top_level(record, ctx.rules.customer_keys, _customer_text)
    exclude = {meter.value_key, *meter.dimension_keys}
    change = rename_alias(record, meter.customer_key, ctx.rules.customer_keys, exclude, found)
    if change is not None:
        return [change]
    if not found and meter.customer_key in ctx.header_aliases and str(held or "").strip():
        # a CSV column under an alias (`customer_id`), which the repaired header renamed to
        # the meter's key: the row holds it there now, but Stripe read it without one, so it
        # is filled as from a top-level alias in JSON (the correction the row is re-sent for)
        return [Change("fill_customer_key", f"payload.{meter.customer_key}", None, held)]
    if not found and holds(held):
        raise Uncorrectable(already_held("customer", meter.customer_key, held))
    if len(found) != 1:
        plainly = None if found else nothing_in_payload(record, "customer", meter.customer_key)
        raise Uncorrectable(
            plainly or f"no single aliased column for customer key {meter.customer_key!r}"
        )
    value = found.pop()
    if holds(held) and str(held).strip() != value:  # which one is meant is not guessed
        raise Uncorrectable(clash(meter.customer_key, held, "a top-level alias", value))
    record.payload[meter.customer_key] = value
    # what the key held, blanks included (`"  "` was audited as null); JSON's `""` is a
    # CSV's empty cell, which is no value
    before = None if held == "" else held
    return [Change("fill_customer_key", f"payload.{meter.customer_key}", before, value)]


def clash(key: str, held: object, alias: str, value: object) -> str:
    return (
        f"payload key {key!r} holds {shown(held)} and {alias} holds {shown(value)}: which one "
        "is meant is not guessed"
    )


def _customer_text(value: object) -> bool:
    """Whether a top-level alias's value can be a customer: text that is not blank, or a
    whole number (an external id a `[customers]` entry may map). `null` is no candidate (it
    was the customer "None"), nor is an object, a list or a boolean (Python's text of it,
    "{'a': 1}" or "False", was sent as the customer)."""
    return is_customer_id(value)


def top_level(
    record: UsageRecord, aliases: tuple[str, ...], candidate: Callable[[object], bool]
) -> set[str]:
    """The text the row's top-level aliases (`record.extra`, named in any case) hold, of the
    values `candidate` takes."""
    return {
        str(v).strip() for k, v in record.extra.items() if k.lower() in aliases and candidate(v)
    }


def rename_alias(
    record: UsageRecord,
    target: str,
    aliases: tuple[str, ...],
    exclude: set[str],
    top_level: Set[str] = frozenset(),
) -> Change | None:
    """Renames the payload's single alias of `target` to it. `top_level` is the text the
    row's top-level aliases hold (the customer's): one that differs is a second customer."""
    candidates = [
        k
        for k, v in record.payload.items()
        if k != target and k not in exclude and k.lower() in aliases and holds(v)
    ]
    if len(candidates) != 1:
        return None
    alias, held = candidates[0], record.payload.get(target)
    if holds(held) and str(held).strip() != str(record.payload[alias]).strip():
        # the row holds an amount (or customer) already: renaming the alias over it replaced
        # it unaudited
        raise Uncorrectable(clash(target, held, f"alias {alias!r}", record.payload[alias]))
    other = sorted(top_level - {str(record.payload[alias]).strip()})
    if other:  # `payload.customer_id: cus_A` beside a top-level `customer: cus_B`: cus_A won
        raise Uncorrectable(clash(alias, record.payload[alias], "a top-level alias", other[0]))
    value = record.payload.pop(alias)
    record.payload[target] = value
    return Change("rename_key", f"payload.{alias}", alias, target)


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
    payload, kept = record.payload, dict[str, str]()
    for key, aliases in (
        (meter.customer_key, ctx.rules.customer_keys),
        (meter.value_key, ctx.rules.value_keys),
    ):
        if not holds(payload.get(key)):  # missing, or a blank JSON `""`/`null` (a CSV's empty)
            kept |= {k: key for k, v in payload.items() if k.lower() in aliases and holds(v)}
    kept.pop(meter.customer_key, None)
    kept.pop(meter.value_key, None)
    return kept


def fill_dimensions(batch: Batch, ctx: Context) -> Fix:
    return one_by_one(batch, ctx, fill_dimensions_row)


def fill_dimensions_row(record: UsageRecord, ctx: Context) -> list[Change]:
    meter = meter_of(record, ctx)
    changes = []
    for key in meter.dimension_keys:
        if holds(record.payload.get(key)):  # a JSON `""` or `null` is a CSV's empty cell
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
        moved = holds(record.payload.get(alias))  # a payload key: it goes (a top-level one stays)
        value = record.payload.pop(alias) if moved else record.extra[alias]
        before = record.payload.get(key)
        record.payload[key] = value
        changes.append(Change("fill_dimension", f"payload.{key}", before, value))
        if moved:  # its going has its line too (the row could not be told back from the audit)
            changes.append(Change("fill_dimension", f"payload.{alias}", value, None))
    return changes


def nothing_in_payload(record: UsageRecord, what: str, key: str) -> str | None:
    """Why a row with nothing in its payload is quarantined without its customer or value,
    said plainly: it has no payload (no key, `{}`, or a CSV's empty payload cells, alike), or a
    null one. It was "no single aliased column", of a row with no column at all. None when
    the payload holds a key."""
    if record.payload:
        return None
    null = "payload" in record.extra and record.extra["payload"] is None
    state = "the row's payload is null" if null else "the row has no payload"
    return f"{state}: no {what} key {key!r}, and no alias holds a {what}"


def already_held(what: str, key: str, held: object) -> str:
    """Why a row Stripe found without its customer or value, which holds one under the
    meter's key and no alias, is quarantined: nothing to fill, nothing to correct."""
    return (
        f"{what} key {key!r} holds {shown(held)} already and no alias holds another: nothing "
        "to correct (sent again unchanged it would be refused again); quarantined for review"
    )
