"""Meter rules: an event name is matched to an active meter (alias map, then a unique
normalized match, then a clearly-best fuzzy match); an archived meter's usage goes to its
configured successor. Both rename the customer and value keys to the new meter's keys.

The match is made once per distinct event name and kept for the run (`Context.meter_picks`);
the rows of a name nothing matches are refused with the reason the row rule gives one of them;
only rows whose keys must be renamed are taken one at a time (the rows moved on the column:
`moving`).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from functools import lru_cache

from remediation.changes import Change, Context, meter_of
from remediation.core.columns import Batch
from remediation.core.rules.base import Fix
from remediation.core.rules.keys import clash, holds
from remediation.core.rules.moving import moved
from remediation.errors import Uncorrectable
from remediation.limits import shown
from remediation.meters import Meter
from remediation.records import UsageRecord
from remediation.validation import MeterIndex

MAX_SUCCESSOR_HOPS = 5
# Meter names a run's fuzzy match compares in full (difflib, ~5 µs each): past it, names are
# left unmatched, to be re-run (20,000 meters of alike names cost 70-100 ms a distinct name;
# a file of 10,000 such names outlasted the worker's time limit, retried until dead)
FUZZY_SCORES = 5_000_000


def normalized(name: str) -> str:
    """`API-Calls ` and `api_calls` are the same event name to a human; so are `café` with
    its accent composed and with a combining one (NFC: the same text, other code points)."""
    return "".join(ch for ch in unicodedata.normalize("NFC", name).lower() if ch not in " -_\t")


def fix_event_name(batch: Batch, ctx: Context) -> Fix:
    """Each distinct name is matched once; rows keeping their keys are renamed on the column."""
    return moved(batch, ctx, lambda name: pick_meter(name or "", ctx), fix_event_name_row)


def fix_event_name_row(record: UsageRecord, ctx: Context) -> list[Change]:
    name = record.event_name or ""
    target = pick_meter(name, ctx)
    if target is None:
        moving = _archived_successor(name, ctx)
        if moving is not None:  # `TOKENS_V1`, Stripe finding no meter of that spelling
            old, successor = moving
            record.event_name = successor.event_name
            change = Change("successor_meter", "event_name", name, successor.event_name)
            return [change, *align_keys(record, old, successor, ctx)]
        if name in ctx.meter_picks.unscored:
            raise Uncorrectable(
                f"no active meter matches event_name {shown(name)} without a fuzzy match, and "
                f"none was tried: this run made the {FUZZY_SCORES} fuzzy comparisons it may; "
                "re-run the quarantined rows to match the rest"
            )
        raise Uncorrectable(
            f"no single active meter matches event_name {name!r}" + _why_no_meter(name, ctx)
        )
    rule, meter = target
    record.event_name = meter.event_name
    changes = [Change(rule, "event_name", name, meter.event_name)]
    return changes + align_keys(record, None, meter, ctx)


def pick_meter(name: str, ctx: Context) -> tuple[str, Meter] | None:
    """The active meter an event name means, and the rule that says so; once per name and
    run (`Context.meter_picks`)."""
    if name in ctx.meter_picks:
        return ctx.meter_picks[name]
    pick = ctx.meter_picks[name] = _pick_meter(name, ctx)
    return pick


def _pick_meter(name: str, ctx: Context) -> tuple[str, Meter] | None:
    aliased = ctx.index.get(_alias(name, ctx))
    if aliased is not None and ctx.rules.enabled("alias_event_name"):
        return "alias_event_name", aliased
    same = _same_names(name, ctx)
    if same:  # the name is a meter's but for case, spaces, `-`/`_`: the match rule's alone
        # (a fuzzy match scored it 1.0 with the rule turned off; a name an active meter has
        # exactly is that meter's, however many others it is alike: it was quarantined
        # beside an active `api-requests`, a tie)
        if len(same) == 1 and ctx.rules.enabled("match_event_name"):
            return "match_event_name", same[0]
        return None
    if _archived(name, ctx):  # its usage goes to a configured successor only
        return None
    if ctx.rules.policy.fuzzy_event_names and ctx.rules.enabled("fuzzy_event_name") and name:
        best = _fuzzy(name, ctx)
        if best is not None:
            return "fuzzy_event_name", best
    return None


def _alias(name: str, ctx: Context) -> str | None:
    """The meter name `[event_names]` maps `name` to: as spelt, else by its normalized form
    when one alias alone has it (`API-CALL` is the alias `api-call`)."""
    aliases = ctx.rules.event_names
    found = aliases.get(name)
    if found is not None or not aliases:
        return found
    key = normalized(name)
    targets = {target for alias, target in aliases.items() if normalized(alias) == key}
    return targets.pop() if len(targets) == 1 else None


def _same_names(name: str, ctx: Context) -> list[Meter]:
    """The active meters `name` names: the one named so exactly, else those whose names are
    it but for case, spaces, `-` and `_`."""
    exact = ctx.index.get(name)
    if exact is not None and exact.active:
        return [exact]
    key = normalized(name)
    return [meter for meter, other, _ in _profiles(ctx.index) if other == key]


def _archived(name: str, ctx: Context) -> list[Meter]:
    """The archived meters `name` names but for case, spaces, `-` and `_` (none active)."""
    key = normalized(name)
    return [m for m in ctx.index.meters if not m.active and normalized(m.event_name) == key]


def _why_no_meter(name: str, ctx: Context) -> str:
    """What a row's event name met instead of one active meter, for its reason."""
    target = _alias(name, ctx)
    if target is not None:
        if not ctx.rules.enabled("alias_event_name"):
            return " (rule alias_event_name is turned off)"
        meter = ctx.index.get(target)
        if meter is None or not meter.active:
            what = "which no meter is" if meter is None else "an archived meter"
            return f": [event_names] maps it to {target!r}, {what}"
    same = _same_names(name, ctx)
    if len(same) > 1:
        names = ", ".join(repr(m.event_name) for m in same)
        return f": it is {names} but for case, spaces, '-' or '_'; which is meant is not guessed"
    if same:
        return " (rule match_event_name is turned off)"
    archived = _archived(name, ctx)
    if archived:  # its usage goes to a configured successor only, never by a fuzzy match
        old = archived[0].event_name
        return f": it is the archived meter {old!r}, which has no active successor" + (
            _why_no_successor(old, ctx)
        )
    return ""


def _archived_successor(name: str, ctx: Context) -> tuple[Meter, Meter] | None:
    """(the archived meter `name` is but for case, spaces, `-` and `_`, its first active
    successor), when there is one of each."""
    archived = _archived(name, ctx)
    return _successor(archived[0].event_name, ctx) if len(archived) == 1 else None


def _fuzzy(name: str, ctx: Context) -> Meter | None:
    """The meter whose name is closest to `name` (difflib's ratio), when it is at least
    `fuzzy_cutoff` and every other is `fuzzy_margin` further off, of the meters whose names
    have the words `name` has (`_words_agree`: a typo, never another unit, region or
    version: `storage_tb` was billed as `storage_gb`, `gpu_hours_h100` as `gpu_hours_a100`,
    `tokens_v1` as `tokens`). A meter whose ratio's upper
    bounds (difflib's `real_quick_ratio` and `quick_ratio`: their lengths, their letters) are
    below `cutoff - margin` is neither: it is not scored (1,000 meters: 17 ms a distinct
    unknown name when each was scored in full)."""
    policy = ctx.rules.policy
    least = policy.fuzzy_cutoff - policy.fuzzy_margin
    key = normalized(name)
    letters = Counter(key)
    near = []
    for meter, other, counts in _profiles(ctx.index):
        length = len(key) + len(other)
        if length and (
            2.0 * min(len(key), len(other)) / length < least
            or 2.0 * sum((letters & counts).values()) / length < least
        ):
            continue  # at most its bound: neither the best nor near it
        near.append((meter, other))
    picks = ctx.meter_picks
    if picks.scored + len(near) > FUZZY_SCORES:
        picks.unscored.add(name)
        return None
    picks.scored += len(near)
    ratio = difflib.SequenceMatcher
    scored = [(ratio(None, key, other).ratio(), meter.event_name, meter) for meter, other in near]
    cutoff = policy.fuzzy_cutoff
    scored = [item for item in scored if _words_agree(name, item[1], cutoff)]
    scored.sort(key=lambda item: (-item[0], item[1]))
    if not scored or scored[0][0] < policy.fuzzy_cutoff:
        return None
    if len(scored) > 1 and (
        scored[0][0] - scored[1][0] < policy.fuzzy_margin or scored[0][0] == scored[1][0]
    ):
        return None  # two candidates about as close (a tie, whatever the margin): a human decides
    return scored[0][2]


_SEPARATORS = re.compile(r"[\W_]+")  # spaces, `-`, `_`, `.`, invisible characters
_DIGITS = re.compile(r"\d+")


def _words_agree(name: str, other: str, cutoff: float) -> bool:
    """Whether `name` may be a misspelling of the meter name `other`: as many words
    (between spaces, `-` and `_`), each the same or alike (difflib's ratio at least
    `cutoff`) with the same digits. A word that differs as a whole is another meter's
    (`tb`/`gb`, `eu`, `v1`, `h100`/`a100`, `llama3`/`llama2`), whatever the whole name's
    ratio."""
    mine = _words(name)
    theirs = _words(other)
    if len(mine) != len(theirs):
        return False
    for word, their in zip(mine, theirs, strict=True):
        if word == their:
            continue
        if _DIGITS.findall(word) != _DIGITS.findall(their):
            return False
        if difflib.SequenceMatcher(None, word, their).ratio() < cutoff:
            return False
    return True


def _words(name: str) -> list[str]:
    """A name's words, compared without case (`STRASSE` is `straße`) or their accents' code
    points."""
    text = unicodedata.normalize("NFC", name).casefold()
    return [word for word in _SEPARATORS.split(text) if word]


@lru_cache(maxsize=8)
def _profiles(index: MeterIndex) -> tuple[tuple[Meter, str, Counter[str]], ...]:
    """Each active meter with its normalized name and that name's letters (once an index:
    a run's)."""
    active = index.active()
    return tuple((m, name, Counter(name)) for m in active for name in (normalized(m.event_name),))


def reroute_to_successor(batch: Batch, ctx: Context) -> Fix:
    """Each distinct archived meter's successor is looked up once; rows keeping their keys
    (the successor uses the same ones) move on the column, the others one by one."""

    def successor(name: str | None) -> tuple[str, Meter] | None:
        pick = _successor(name, ctx)
        return ("successor_meter", pick[1]) if pick is not None else None

    return moved(batch, ctx, successor, reroute_to_successor_row, moving=True)


def _successor(name: str | None, ctx: Context) -> tuple[Meter, Meter] | None:
    """(the archived meter, its first active successor) for an event name, or None."""
    old = ctx.index.get(name)
    if old is None:
        return None
    current, hops = old.event_name, 0  # hops: the archived successors passed
    while hops <= MAX_SUCCESSOR_HOPS and ctx.rules.enabled("successor_meter"):
        successor = ctx.index.get(ctx.rules.meter_successors.get(current))
        if successor is None:
            return None
        if successor.active:
            return old, successor
        current, hops = successor.event_name, hops + 1
    return None


def _why_no_successor(name: str, ctx: Context) -> str:
    """What the chain of `[meter_successors]` from `name` meets instead of an active meter."""
    if not ctx.rules.enabled("successor_meter"):
        return " (rule successor_meter is turned off)"
    chain = [name]
    while (nxt := ctx.rules.meter_successors.get(chain[-1])) is not None:
        if nxt in chain:
            return f": [meter_successors] loop ({' -> '.join(map(repr, [*chain, nxt]))})"
        chain.append(nxt)
        if ctx.index.get(nxt) is None:
            return f": [meter_successors] names {nxt!r}, which no meter is"
        if len(chain) > MAX_SUCCESSOR_HOPS + 1:
            return f": more than {MAX_SUCCESSOR_HOPS} archived successors in a row"
    if len(chain) == 1:
        return " ([meter_successors] names none)"
    return f": {chain[-1]!r}, the last successor named, is archived too"


def reroute_to_successor_row(record: UsageRecord, ctx: Context) -> list[Change]:
    """An archived meter's usage goes to its configured successor, if that one is active."""
    old = meter_of(record, ctx)
    pick = _successor(old.event_name, ctx)
    if pick is None and old.active:  # reactivated since, or Stripe's code was not this row's
        raise Uncorrectable(
            f"meter {old.event_name!r} is active in the meters read for this run, not "
            "archived: nothing to reroute; quarantined for review (Stripe found it archived)"
        )
    if pick is None:
        raise Uncorrectable(
            f"meter {old.event_name!r} is archived and has no active successor"
            + _why_no_successor(old.event_name, ctx)
        )
    successor = pick[1]
    record.event_name = successor.event_name
    change = Change("successor_meter", "event_name", old.event_name, successor.event_name)
    return [change, *align_keys(record, old, successor, ctx)]


def align_keys(record: UsageRecord, old: Meter | None, new: Meter, ctx: Context) -> list[Change]:
    """Rename the customer and value keys to the new meter's: from the old meter's keys (what
    the row was sent with, which wins over anything the row holds under the new keys; a
    different customer or amount there refuses the row: which one it means is not ours to
    guess), else, where the row lacks a new key, from its single alias."""
    moves = _moves(record, old, new)
    sent = {source: record.payload.pop(source) for source in moves}
    changes = []
    keys = {new.customer_key, new.value_key, *new.dimension_keys}
    for target, aliases in (
        (new.customer_key, ctx.rules.customer_keys),
        (new.value_key, ctx.rules.value_keys),
    ):
        source = next((s for s, t in moves.items() if t == target), None)
        if source is None:
            _refuse_second(record, target, aliases, keys)
        if source is not None:
            held = record.payload.get(target)
            if target in record.payload and held != sent[source]:  # a blank it replaces
                changes.append(Change("rename_key", f"payload.{target}", held, sent[source]))
            record.payload[target] = sent[source]
        elif not holds(record.payload.get(target)):  # missing, or a JSON blank (a CSV's empty)
            found = [
                k
                for k, v in record.payload.items()
                if k.lower() in aliases and k != target and holds(v)
            ]
            source = found[0] if len(found) == 1 else None
            if source is not None:
                record.payload[target] = record.payload.pop(source)
        if source is not None:
            changes.append(Change("rename_key", f"payload.{source}", source, target))
    return changes


def _refuse_second(
    record: UsageRecord, target: str, aliases: tuple[str, ...], keys: set[str]
) -> None:
    """Refuses a row that holds a customer or amount under the new meter's key and another
    one under an alias of it (`tokens: 9` beside `value: 5`: 9 was billed, 5 went out
    beside it unsaid). Which one is meant is not guessed."""
    held = record.payload.get(target)
    if not holds(held):
        return
    for key, value in record.payload.items():
        if key in keys or key.lower() not in aliases or not holds(value):
            continue
        if str(value).strip() != str(held).strip():
            raise Uncorrectable(clash(target, held, f"alias {key!r}", value))


def _moves(record: UsageRecord, old: Meter | None, new: Meter) -> dict[str, str]:
    """The old meter's keys the row holds, each to the new meter's key of the same role;
    refused when a new key already holds another customer or amount than the one it gets."""
    if old is None:
        return {}
    roles = {
        "customer": (old.customer_key, new.customer_key),
        "value": (old.value_key, new.value_key),
    }
    moves = {s: t for s, t in roles.values() if s != t and s in record.payload}
    for role, (source, target) in roles.items():
        if source in moves and target not in moves and _conflict(record, source, target):
            held, sent = record.payload[target], record.payload[source]
            raise Uncorrectable(
                f"meter {old.event_name!r} moves to {new.event_name!r}: its {role} key "
                f"{source!r} holds {shown(sent)} but the row already holds {shown(held)} "
                f"under the successor's {role} key {target!r}"
            )
    return moves


def _conflict(record: UsageRecord, source: str, target: str) -> bool:
    """The row holds under `target` a customer or amount other than `source`'s (a blank one,
    or the same one spelled as text or a number, is none)."""
    if target not in record.payload:
        return False
    held, sent = record.payload[target], record.payload[source]
    if held is None or (isinstance(held, str) and not held.strip()):
        return False
    return held != sent and str(held).strip() != str(sent).strip()
