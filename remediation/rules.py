"""Remediation rules: built-in defaults merged with an operator's TOML file (MFX_RULES).

Mapping tables (customers, event_names, meter_successors) are empty by default: nothing is
remapped unless configured. Alias lists and policies have defaults; every rule can be turned
off by name in `[policy] disabled_rules`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from remediation.errors import BadRules
from remediation.limits import (
    DEFAULT_LIMITS,
    LIMIT_NAMES,
    FieldLimits,
    control_character,
    shown,
)

# Header alias -> canonical column (whole-file repair; applied only when the canonical is absent).
DEFAULT_COLUMNS: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(
            ("customer_id", "customer", "stripe_customer_id", "customer_stripe_id"),
            "payload_stripe_customer_id",
        ),
        **dict.fromkeys(("value", "quantity", "qty", "amount", "usage", "units"), "payload_value"),
        **dict.fromkeys(("event", "name", "event_type", "meter", "meter_event_name"), "event_name"),
        **dict.fromkeys(("time", "ts", "date", "datetime", "event_time", "created"), "timestamp"),
        **dict.fromkeys(("id", "idempotency_key", "event_id"), "identifier"),
    }
)
DEFAULT_CUSTOMER_KEYS = ("stripe_customer_id", "customer_id", "customer", "customer_stripe_id")
DEFAULT_VALUE_KEYS = ("value", "tokens", "quantity", "qty", "amount", "count", "usage", "units")
# The names `[policy] disabled_rules` takes: each one a switch the engine asks (`Rules.enabled`).
# Any other name is refused: a misspelt one turned nothing off, and the rule went on correcting.
RULE_NAMES = frozenset(
    {
        *("clamp_skew", "iso_timestamp", "timestamp_units"),
        *("normalize_value", "round_value", "rename_value_key"),
        *("fill_customer_key", "map_customer", "trim_customer", "search_customer"),
        *("alias_event_name", "match_event_name", "fuzzy_event_name", "successor_meter"),
        *("drop_unused_keys", "fill_dimension"),
    }
)
# Policies that are ratios (difflib scores): NaN passed every comparison and made any
# candidate a "clear winner"; a percentage (80) or a negative margin meant nothing.
_RATIOS = frozenset({"fuzzy_cutoff", "fuzzy_margin"})
_COUNTS = frozenset({"future_skew_seconds", "customer_lookups"})  # no negative count
# A clamp to now moves usage up to this far back: further, and it may land in another period.
MAX_FUTURE_SKEW = 86_400
# Where a header alias may lead: a column Stripe reads (never an error or mfx_ column: a
# usage file would be read as failed records, and its billed rows sent again).
_COLUMN_TARGET = re.compile(r"identifier|timestamp|event_name|payload_.+", re.DOTALL)
# The field limits Stripe publishes; the others' defaults are what Stripe is taken to accept.
_STRIPE_PUBLISHED = frozenset({"max_identifier_chars", "max_event_name_chars"})
# The keys `[aliases]` takes (any other was ignored: a misspelt `customers` added no alias).
ALIAS_LISTS = ("customer", "value")
# What no Stripe customer id holds (they are `cus_` and letters, digits, underscores); only
# this is refused, so a map to a stand-in's own ids still loads.
_NOT_IN_AN_ID = re.compile(r"\s|[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Policy:
    future_skew_seconds: int = 3600
    fuzzy_event_names: bool = True
    fuzzy_cutoff: float = 0.8  # difflib ratio the best candidate needs
    fuzzy_margin: float = 0.1  # ...and how far ahead of the runner-up it must be
    round_too_many_digits: bool = False
    value_precision: int = 12  # the meter's decimal places (rounding target); negative = none
    default_event_name: str = ""  # fills a missing event_name column (whole-file repair)
    customer_metadata_key: str = ""  # search customers on metadata[key] (needs the directory)
    # Stripe calls the customer rule may make in one run (an existence check, a search):
    # past it, rows that need one are quarantined, to be re-run (a file of a million
    # distinct unknown customers would otherwise take days of Stripe's rate limits)
    customer_lookups: int = 10_000
    disabled_rules: tuple[str, ...] = ()
    limits: FieldLimits = DEFAULT_LIMITS  # set by their own names under [policy]


@dataclass(frozen=True, slots=True)
class Rules:
    customers: Mapping[str, str] = field(default_factory=dict)
    event_names: Mapping[str, str] = field(default_factory=dict)
    meter_successors: Mapping[str, str] = field(default_factory=dict)
    columns: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    customer_keys: tuple[str, ...] = DEFAULT_CUSTOMER_KEYS
    value_keys: tuple[str, ...] = DEFAULT_VALUE_KEYS
    dimension_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    # A fact of the input, not a rules table: its `,` may be the decimal mark (a `;`-delimited
    # CSV, the European convention), so a `1,500` is refused, never read as thousands
    # (`engine.remediate` sets it; `core.rules.values`).
    decimal_comma: bool = False
    # A fact of the input too: its error codes are our own validation's (the bundled poller's
    # failed-records file), not Stripe's: a reason never says "Stripe found it" of them.
    codes_ours: bool = False

    def enabled(self, rule: str) -> bool:
        return rule not in self.policy.disabled_rules

    @property
    def value_precision(self) -> int | None:
        return self.policy.value_precision if self.policy.value_precision >= 0 else None


def load_rules(text: str | bytes | None) -> Rules:
    """Parse a rules TOML document (None or empty: the defaults); bytes are a file as read,
    UTF-8 with or without a byte order mark."""
    if isinstance(text, bytes):
        text = _decoded(text)
    text = text.removeprefix("\ufeff") if text else text  # Notepad's BOM is no TOML statement
    if not text:
        return Rules()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadRules(f"rules are not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tables or arrays within each other past the parser's stack
        raise BadRules("rules are not valid TOML: nested too deep to read") from exc
    unknown = set(doc) - _TABLES
    if unknown:
        raise BadRules(f"unknown rules table(s): {', '.join(sorted(unknown))}")
    aliases = _known_keys(_table(doc, "aliases"), "aliases", ALIAS_LISTS)
    return Rules(
        customers=_customer_map(doc),
        event_names=_str_map(doc, "event_names"),
        meter_successors=_str_map(doc, "meter_successors"),
        columns={**DEFAULT_COLUMNS, **{k.lower(): v for k, v in _columns(doc).items()}},
        # matched ignoring case, as the rules compare a key's lower case (`UserID` never did)
        customer_keys=_lowered(_str_list(aliases, "customer", DEFAULT_CUSTOMER_KEYS)),
        value_keys=_lowered(_str_list(aliases, "value", DEFAULT_VALUE_KEYS)),
        dimension_aliases={
            k: _str_list(_table(doc, "dimension_aliases"), k, ())
            for k in _table(doc, "dimension_aliases")
        },
        policy=_policy(_table(doc, "policy")),
    )


_TABLES = frozenset(
    {
        "customers",
        "event_names",
        "meter_successors",
        "columns",
        "aliases",
        "dimension_aliases",
        "policy",
    }
)


def _table(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise BadRules(f"[{name}] must be a table")
    return value


def _known_keys(table: dict[str, Any], name: str, known: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise BadRules(f"[{name}] {unknown[0]!r} is not a key it takes (keys: {', '.join(known)})")
    return table


def _str_map(doc: Mapping[str, Any], name: str, what: str = "name") -> dict[str, str]:
    table = _table(doc, name)
    for key, value in table.items():
        if not key.strip():  # `"" = "cus_1"` gave every blank customer (or name) to cus_1
            raise BadRules(f"[{name}] maps an empty key {key!r}: name what it maps")
        if not isinstance(value, str):
            raise BadRules(f"[{name}] {key!r} must map to a string, not {type(value).__name__}")
        if not value:  # a name not filled in yet: its rows failed again and were quarantined
            raise BadRules(f"[{name}] {key!r} maps to an empty {what}: fill it in")
    return dict(table)


def _columns(doc: Mapping[str, Any]) -> dict[str, str]:
    columns = _str_map(doc, "columns", "column")
    for key, value in columns.items():
        if not _COLUMN_TARGET.fullmatch(value):
            raise BadRules(
                f"[columns] {key!r} must map to identifier, timestamp, event_name or "
                f"payload_<key>, not {value!r}"
            )
    return columns


def _lowered(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name.lower() for name in names)


def _decoded(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BadRules(
            f"rules are not UTF-8: byte 0x{data[exc.start]:02x} on line {line} "
            "(save the file as UTF-8)"
        ) from exc


def _customer_map(doc: Mapping[str, Any]) -> dict[str, str]:
    customers = _str_map(doc, "customers", "customer id")
    for key, value in customers.items():
        if _NOT_IN_AN_ID.search(value):
            raise BadRules(
                f"[customers] {key!r} must map to a Stripe customer id, not {value!r} "
                "(no Stripe id holds a space or a control character)"
            )
    return customers


def _str_list(table: Mapping[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = table.get(key, default)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise BadRules(f"alias list {key!r} must be a list of strings")
    return tuple(value)


def _policy(table: Mapping[str, Any]) -> Policy:
    known = {f.name: f for f in fields(Policy) if f.name != "limits"}
    policy = Policy()
    for key, value in table.items():
        if key in LIMIT_NAMES:
            policy = replace(policy, limits=_limit(policy.limits, key, value))
            continue
        if key not in known:
            raise BadRules(f"unknown policy {key!r}")
        default = getattr(policy, key)
        if key == "disabled_rules":
            value = _rule_names(_str_list(table, key, ()))
        elif isinstance(default, bool) != isinstance(value, bool) or not isinstance(
            value, type(default) if not isinstance(default, float) else (int, float)
        ):
            raise BadRules(f"policy {key!r} must be a {type(default).__name__}")
        if key in _RATIOS and not 0 <= value <= 1:  # NaN too: it compares False
            raise BadRules(f"policy {key!r} must be between 0 and 1 (a ratio), not {value}")
        if key in _COUNTS and value < 0:
            raise BadRules(f"policy {key!r} must be 0 or more, not {value}")
        if key == "future_skew_seconds" and value > MAX_FUTURE_SKEW:
            raise BadRules(
                f"policy 'future_skew_seconds' must be at most {MAX_FUTURE_SKEW} (a day), not "
                f"{value}: clamping usage further ahead to now may move it into another period"
            )
        policy = replace(policy, **{key: value})
    _check_default_event_name(policy)
    return policy


def _check_default_event_name(policy: Policy) -> None:
    """The name a missing event_name column is filled with is sent to Stripe on every row."""
    name, most = policy.default_event_name, policy.limits.max_event_name_chars
    bad = control_character(name)
    if len(name) > most or bad is not None:
        why = f"holds a control character ({bad})" if bad else f"is longer than {most} characters"
        raise BadRules(f"policy 'default_event_name' {shown(name)} {why}")


def _rule_names(names: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [name for name in names if name not in RULE_NAMES]
    if unknown:
        raise BadRules(
            f"policy 'disabled_rules' names no rule {unknown[0]!r}; "
            f"rules: {', '.join(sorted(RULE_NAMES))}"
        )
    return names


def _limit(limits: FieldLimits, key: str, value: object) -> FieldLimits:
    """A limit may be tightened, never loosened: its default is the most Stripe accepts
    (published for the identifier and event name, assumed for the others), and a row past
    it passed validation only for Stripe to refuse it."""
    # a Stripe-shaped JSON row is two levels deep (the row, its payload)
    lowest = {"max_value_decimal_places": 0, "max_json_depth": 2}.get(key, 1)
    most = getattr(DEFAULT_LIMITS, key)
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= most:
        whose = "Stripe's limit" if key in _STRIPE_PUBLISHED else "what Stripe is taken to accept"
        raise BadRules(
            f"policy {key!r} must be an integer of at least {lowest} and at most {most} "
            f"({whose}), not {shown(value)}"
        )
    return replace(limits, **{key: value})
