"""What a rule gets (Context) and, for one row, returns (Change)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from remediation.errors import Uncorrectable
from remediation.meters import Meter
from remediation.ports import CustomerDirectory
from remediation.records import UsageRecord
from remediation.rules import Rules
from remediation.validation import MeterIndex


@dataclass(frozen=True, slots=True)
class Change:
    rule: str
    field: str
    before: object
    after: object


class CustomerPicks(dict[str, tuple[str, str] | None]):
    """The customer picked for each customer text met in a run, in the order met (None: no
    match; picks are never dropped). `columns`: where the customer rule keeps the same picks
    as Arrow columns, to look a batch's texts up at once (`core.rules.customers`)."""

    columns: object = None
    asked = 0  # Stripe calls the customer rule made in this run (`Policy.customer_lookups`)


class MeterPicks(dict[str, tuple[str, Meter] | None]):
    """The meter matched to each event name met in a run, and by which rule (None: none).
    `scored`: the names the fuzzy match compared in full this run, which it bounds
    (`core.rules.meters.FUZZY_SCORES`); `unscored`: the names it did not compare, the bound
    reached."""

    def __init__(self) -> None:
        super().__init__()
        self.scored = 0
        self.unscored: set[str] = set()


@dataclass(frozen=True, slots=True)
class Context:
    index: MeterIndex
    rules: Rules
    now: int
    customers: CustomerDirectory | None = None
    # The customer picked for each customer text met in this run (None: no match), so that
    # every batch does not ask the directory again (`rules.customers.customer_for`).
    customer_picks: CustomerPicks = field(default_factory=CustomerPicks)
    # The meter matched to each event name met in this run, and by which rule (None: none),
    # so that a fuzzy match is made once per name, not once per batch or per row
    # (`rules.meters.pick_meter`).
    meter_picks: MeterPicks = field(default_factory=MeterPicks)
    # Payload keys a CSV header alias was renamed to, each to its alias (`stripe_customer_id`:
    # `customer_id`): Stripe read the file's rows without them (`repair.plan_input`).
    header_aliases: dict[str, str] = field(default_factory=dict)
    # What a whole-file repair changed in every row it read (`core.filerepairs`): recorded
    # in the audit of each row that goes out.
    file_repairs: FileRepairs = field(default_factory=lambda: FileRepairs())


@dataclass(frozen=True, slots=True)
class FileRepairs:
    """What a whole-file repair of a CSV changed in the values of its rows as they were
    read: the event name every row got (its header had no event_name column; "" none). The
    file's other repairs change no value (a delimiter, a column read under an alias): the
    run records them once (`repair.InputPlan.repairs`)."""

    event_name: str = ""

    def __bool__(self) -> bool:
        return bool(self.event_name)


Corrector = Callable[[UsageRecord, Context], list[Change]]


def meter_of(record: UsageRecord, ctx: Context) -> Meter:
    meter = ctx.index.get(record.event_name)
    if meter is None:
        raise Uncorrectable(f"no meter matches event_name {record.event_name!r}")
    return meter
