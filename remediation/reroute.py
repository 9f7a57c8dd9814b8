"""Correctors that change which meter a record goes to, or which payload keys it carries.

Rerouting (event-name match, successor meter) also renames the customer and value payload
keys to the new meter's keys.
"""

from __future__ import annotations

import difflib

from remediation.changes import Change, Context, meter_of
from remediation.errors import Uncorrectable
from remediation.meters import Meter
from remediation.records import UsageRecord

MAX_SUCCESSOR_HOPS = 5


def normalized(name: str) -> str:
    """`API-Calls ` and `api_calls` are the same event name to a human."""
    return "".join(ch for ch in name.lower() if ch not in " -_\t")


def fix_event_name(record: UsageRecord, ctx: Context) -> list[Change]:
    """Alias map, then a unique normalized match, then a clearly-best fuzzy match."""
    name = record.event_name or ""
    target = _pick_meter(name, ctx)
    if target is None:
        raise Uncorrectable(f"no single active meter matches event_name {name!r}")
    rule, meter = target
    record.event_name = meter.event_name
    changes = [Change(rule, "event_name", name, meter.event_name)]
    return changes + align_keys(record, None, meter, ctx)


def _pick_meter(name: str, ctx: Context) -> tuple[str, Meter] | None:
    aliased = ctx.index.get(ctx.rules.event_names.get(name))
    if aliased is not None and ctx.rules.enabled("alias_event_name"):
        return "alias_event_name", aliased
    active = ctx.index.active()
    same = [m for m in active if normalized(m.event_name) == normalized(name)]
    if len(same) == 1 and ctx.rules.enabled("match_event_name"):
        return "match_event_name", same[0]
    if ctx.rules.policy.fuzzy_event_names and ctx.rules.enabled("fuzzy_event_name") and name:
        best = _fuzzy(name, active, ctx)
        if best is not None:
            return "fuzzy_event_name", best
    return None


def _fuzzy(name: str, active: list[Meter], ctx: Context) -> Meter | None:
    key = normalized(name)
    scored = sorted(
        (
            (difflib.SequenceMatcher(None, key, normalized(m.event_name)).ratio(), m.event_name, m)
            for m in active
        ),
        key=lambda item: (-item[0], item[1]),
    )
    if not scored or scored[0][0] < ctx.rules.policy.fuzzy_cutoff:
        return None
    if len(scored) > 1 and scored[0][0] - scored[1][0] < ctx.rules.policy.fuzzy_margin:
        return None  # two candidates about as close: a human decides
    return scored[0][2]


def reroute_to_successor(record: UsageRecord, ctx: Context) -> list[Change]:
    """An archived meter's usage goes to its configured successor, if that one is active."""
    old = meter_of(record, ctx)
    name, hops = old.event_name, 0
    while hops < MAX_SUCCESSOR_HOPS and ctx.rules.enabled("successor_meter"):
        successor = ctx.index.get(ctx.rules.meter_successors.get(name))
        if successor is None:
            break
        if successor.active:
            record.event_name = successor.event_name
            changes = [Change("successor_meter", "event_name", old.event_name, name)]
            changes[0] = Change(
                "successor_meter", "event_name", old.event_name, successor.event_name
            )
            return changes + align_keys(record, old, successor, ctx)
        name, hops = successor.event_name, hops + 1
    raise Uncorrectable(f"meter {old.event_name!r} is archived and has no active successor")


def align_keys(record: UsageRecord, old: Meter | None, new: Meter, ctx: Context) -> list[Change]:
    """Rename the customer and value keys to the new meter's (from the old meter's or aliases)."""
    changes = []
    for role, target, aliases in (
        ("customer", new.customer_key, ctx.rules.customer_keys),
        ("value", new.value_key, ctx.rules.value_keys),
    ):
        if target in record.payload:
            continue
        source = (old.customer_key if role == "customer" else old.value_key) if old else None
        if source is None or source not in record.payload:
            found = [k for k in record.payload if k.lower() in aliases and k != target]
            source = found[0] if len(found) == 1 else None
        if source is not None:
            record.payload[target] = record.payload.pop(source)
            changes.append(Change("rename_key", f"payload.{source}", source, target))
    return changes


def drop_unused_keys(record: UsageRecord, ctx: Context) -> list[Change]:
    meter = meter_of(record, ctx)
    if not ctx.rules.enabled("drop_unused_keys"):
        raise Uncorrectable("too many payload keys and rule drop_unused_keys is disabled")
    used = {meter.customer_key, meter.value_key, *meter.dimension_keys}
    unused = [key for key in record.payload if key not in used]
    if not unused:
        raise Uncorrectable("every payload key is used by the meter; nothing to drop")
    return [
        Change("drop_unused_keys", f"payload.{key}", record.payload.pop(key), None)
        for key in unused
    ]


def fill_dimensions(record: UsageRecord, ctx: Context) -> list[Change]:
    meter = meter_of(record, ctx)
    changes = []
    for key in meter.dimension_keys:
        if key in record.payload:
            continue
        aliases = ctx.rules.dimension_aliases.get(key, ())
        found = [a for a in aliases if a in record.payload or record.extra.get(a) not in (None, "")]
        if len(found) != 1 or not ctx.rules.enabled("fill_dimension"):
            raise Uncorrectable(f"dimension key {key!r} missing and no single alias holds it")
        alias = found[0]
        value = record.payload.pop(alias) if alias in record.payload else record.extra[alias]
        record.payload[key] = value
        changes.append(Change("fill_dimension", f"payload.{key}", None, value))
    return changes
