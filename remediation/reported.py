"""Which rows of a file a meter error report is about.

Stripe's report names a meter, the codes it saw and a few sample identifiers, never every
failed row. When the rows are ours, every row of that meter that fails our own validation
with a reported code is selected, not only the samples; rows Stripe sampled are selected
with the code Stripe gave. `meter_event_customer_not_found` cannot be checked offline, so
rows sharing a customer id with a sampled row of that code are selected with it (a `cus_…` id
only for rows Stripe took with or after that row: `Taken`).

A row of an object that was imported may have been billed, so it is selected only when our
validation proves Stripe refused it WHENEVER Stripe took its object (`Taken`: no earlier than
the object was uploaded or first sent, no later than the report's window for an object Stripe
took at once with a sampled row). Checks that depend on that time are held against the bound
that makes them a proof: a timestamp in the future against the latest time, one too far in the
past against the earliest; an archived meter only when it was archived before the earliest
time (or a sampled row of an object Stripe took at once was refused for it). Otherwise a row
Stripe billed before its meter was archived fails our validation today and would be sent
again to the successor meter.

A sampled identifier rows of the objects the report's task reads hold more than once, in one
object or in several (`ReportScope.shared`, counted over them all: `sampled_in`), names no one row:
Stripe dedupes by identifier, so it took at most one event under it, and a row it took
(valid), selected by the sample, went out again as `<id>-mfx1` beside the refused one
corrected: billed twice. Its rows are held to our validation as rows beyond the samples are:
one the report's codes do not fit is passed over (Stripe took it: a refused row under its
identifier is quarantined, `core.sameids`), and of rows all refused the first goes out, the
others quarantined under `identifier_taken` (Stripe would have kept the first of them had
they been valid; a second under `<id>-mfx1` is refused as a duplicate or billed twice). Counted
per object, a `k1` Stripe billed from day.csv was the only one there: selected by the sample, it
went out again as `k1-mfx1` beside day2.csv's refused `k1` corrected, billed twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from remediation.codes import CHANGED_SINCE_SENT, ErrorCode
from remediation.limits import shown
from remediation.records import UsageRecord
from remediation.validation import MeterIndex, check_timestamp, validate_record

# A customer id shaped like Stripe's (`cus_…`) may have existed when Stripe took another
# object (a customer deleted since); any other text never names a Stripe customer.
STRIPE_CUSTOMER_PREFIX = "cus_"


@dataclass(frozen=True)
class ReportScope:
    codes: frozenset[str]  # every code the report counted
    samples: Mapping[str, str]  # sample identifier -> code
    event_name: str | None  # the reported meter's event name (None: no_meter_found)
    # identifiers of rows another run over the object corrected or quarantined: skipped
    # wherever the object holds them now (correcting one again sends its derived identifier
    # again), and counted in `Selection.handled` when the report is about them
    handled: frozenset[str] = field(default_factory=frozenset)
    # sampled rows the object holds that are not the rows Stripe refused. True: changed
    # since the bundled poller sent them (a customer fixed the row by hand and uploaded the
    # file again before the report came; the poller left it out of the new version): selected
    # with no code (CHANGED_SINCE_SENT), our validation decides. False: Stripe's own connector
    # took them again from a version uploaded after the report: left to it (counted in
    # `Selection.left`).
    changed: Mapping[str, bool] = field(default_factory=dict)
    # sampled identifiers more than one row holds, of this object or another the report's
    # task reads (`Sampled.shared`): which of them Stripe refused is our validation's to say,
    # as for rows beyond the samples
    shared: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Taken:
    """When Stripe may have taken (validated) an object's rows: not after `latest`, not
    before `earliest` (None: unknown). `at_once`: Stripe took every row of it at one time, as
    it took its sampled rows (whose codes are `sampled`), so a customer id Stripe did not find
    for a sampled row was unknown for every row; otherwise (rows sent batch by batch, or an
    object found beyond the samples) a `cus_…` customer may have been deleted in between.
    `gone_from`: rows the bundled poller sent in row order (batch by batch), each `cus_…`
    customer Stripe did not find for a sampled row of this object, with that row's number: a
    customer Stripe does not know stays unknown (a deleted one never comes back), so the rows
    sent after that row were refused too; those before it may have been billed."""

    latest: int
    earliest: int | None = None
    sampled: frozenset[str] = frozenset()
    at_once: bool = False
    gone_from: Mapping[str, int] = field(default_factory=dict)


@dataclass
class Sampled:
    """What the sampled rows of one object say: their codes, and the customer ids of those
    Stripe did not find."""

    codes: set[str] = field(default_factory=set)
    customers: set[str] = field(default_factory=set)
    first_row: dict[str, int] = field(default_factory=dict)  # customer -> first sampled row
    shared: set[str] = field(default_factory=set)  # identifiers more than one row holds
    named: dict[str, str] = field(default_factory=dict)  # sampled identifier -> `customers`'


def sampled_rows(records: Iterable[UsageRecord], scope: ReportScope, index: MeterIndex) -> Sampled:
    """What the sampled rows of one object say, when the report's task reads no other
    (`sampled_in`)."""
    return sampled_in({"": records}, scope, index)[""]


def sampled_in(
    objects: Mapping[str, Iterable[UsageRecord]], scope: ReportScope, index: MeterIndex
) -> dict[str, Sampled]:
    """Per object (key -> its records): the codes of its sampled rows, the identifiers of them
    more than one row of all the objects holds (Stripe took at most one event under one,
    from whichever object), and the customer ids of those reported as
    `meter_event_customer_not_found` (of an identifier rows of several customers hold, none:
    which one Stripe did not find is not known)."""
    sampled = {
        key: [r for r in records if (r.identifier or "") in scope.samples]
        for key, records in objects.items()
    }
    rows: dict[str, int] = {}  # identifier -> how many rows hold it
    customers: dict[str, set[str]] = {}  # identifier -> the customers its rows name
    for record in (record for records in sampled.values() for record in records):
        identifier = record.identifier or ""
        rows[identifier] = rows.get(identifier, 0) + 1
        customers.setdefault(identifier, set()).add(customer_of(record, index))
    shared = {identifier for identifier, count in rows.items() if count > 1}
    return {
        key: _sampled(records, scope, index, shared, customers) for key, records in sampled.items()
    }


def _sampled(
    sampled: list[UsageRecord],
    scope: ReportScope,
    index: MeterIndex,
    shared: set[str],
    customers: dict[str, set[str]],
) -> Sampled:
    """What one object's sampled rows say, the rows of every object counted (`sampled_in`)."""
    found = Sampled(shared={r.identifier or "" for r in sampled} & shared)
    for record in sampled:
        identifier = record.identifier or ""
        code = scope.samples[identifier]
        found.codes.add(code)
        value = customer_of(record, index)
        if code != ErrorCode.CUSTOMER_NOT_FOUND or len(customers[identifier]) > 1:
            continue
        if value:
            found.customers.add(value)
            found.named[identifier] = value
            found.first_row[value] = min(
                found.first_row.get(value, record.row_number), record.row_number
            )
    return found


def customer_of(record: UsageRecord, index: MeterIndex) -> str:
    """The row's customer id under its meter's key ("" for none)."""
    meter = index.get(record.event_name)
    value = record.payload.get(meter.customer_key) if meter else None
    return "" if value is None else str(value)


# what the reason of a row held under `identifier_taken` by a report's run says when that row
# is one Stripe refused (`_one_goes_out`: never billed), the other row under its identifier
# refused too (`jobs.later_rows.TakenAgain` asks it of a later version's row)
REFUSED_TOO = "which Stripe refused too"


@dataclass
class Selection:
    """What `select_reported` found beyond the rows it yields: rows the report is about that
    another run already handled (`ReportScope.handled`), so they are not lost but done."""

    handled: int = 0
    left: int = 0  # rows left to Stripe's connector (`ReportScope.changed`)
    resent: int = 0  # changed rows selected to be sent as they are now
    # a shared sampled identifier (`ReportScope.shared`) -> the first row selected under it
    # and its object's key, over every object the report's task reads (`source`: this one's);
    # noted before, one another run took in an object gone since (or rewritten without it):
    # a row under it is held though no other row holds it now
    first: dict[str, tuple[str, int]] = field(default_factory=dict)
    source: str = ""
    # of `first`: the identifiers whose first row another run corrected or quarantined before
    # the report's task (sent, or sent by a re-run, under `<id>-mfx<n>`): none selected goes out
    handled_first: set[str] = field(default_factory=set)
    # of `first`: those whose first row Stripe refused for a problem the report does not count,
    # that no run handled yet (`refused_under`: its own run sends it under `<id>-mfx<n>`)
    refused_first: set[str] = field(default_factory=set)


def select_reported(
    records: Iterable[UsageRecord],
    scope: ReportScope,
    index: MeterIndex,
    taken: Taken,
    customers: set[str],
    selection: Selection | None = None,
) -> Iterator[UsageRecord]:
    """The rows the report is about that no other run handled, each with `error_code` set,
    or no code and CHANGED_SINCE_SENT for a sampled row changed since it was sent (those
    another run handled, and rows left to Stripe's connector, are counted in `selection`)."""
    counts = selection if selection is not None else Selection()
    for record in records:
        identifier = str(record.identifier or "")
        resend = scope.changed.get(identifier)
        code = None
        if resend is None:
            code = reported_code(record, scope, index, taken, customers)
            if code is None:
                continue
        if identifier and identifier in scope.handled:
            counts.handled += 1
        elif resend is False:
            counts.left += 1
        else:
            counts.resent += bool(resend)
            record.error_code = code
            record.error_message = CHANGED_SINCE_SENT if resend else None
            if code is not None and (identifier in scope.shared or identifier in counts.first):
                _one_goes_out(record, counts)
            yield record


def _one_goes_out(record: UsageRecord, selection: Selection) -> None:
    """A row under a shared sampled identifier (or one noted in `Selection.first` before the
    runs) the report's codes fit (Stripe refused it): the first goes out (of the objects the
    report's task reads, in the order it runs over them, but one another run handled, or its
    own run will: `Selection.handled_first`, `Selection.refused_first`); a later one is held
    under `identifier_taken` (never corrected, never sent by a re-run: `core.decide`), naming
    the first. Stripe keeps one event an identifier: under `<id>-mfx1` a second is refused as
    a duplicate, or billed twice past its dedupe."""
    identifier = record.identifier or ""
    source = selection.source
    here = (source, record.row_number)
    key, before = selection.first.setdefault(identifier, here)
    if (key, before) == here:
        return
    record.error_code = ErrorCode.IDENTIFIER_TAKEN.value
    if identifier in selection.handled_first:
        record.error_message = (
            f"identifier {shown(identifier)} is also row {before}'s of {shown(key)}, which "
            "another run corrected or quarantined (sent, or to be sent by a re-run, under a "
            "derived identifier): a second would be refused as a duplicate or billed twice; "
            "not corrected"
        )
        return
    if identifier in selection.refused_first:
        record.error_message = (
            f"identifier {shown(identifier)} is also row {before}'s of {shown(key)}, "
            f"{REFUSED_TOO}, for a problem this report does not count (its own run "
            "corrects or quarantines it, to be sent under a derived identifier): a second "
            "would be refused as a duplicate or billed twice; not corrected"
        )
        return
    which, taking = f"row {before}'s", "this run takes"
    if key != source:
        which, taking = f"row {before}'s of {shown(key)}", "the report's run over it takes"
    record.error_message = (
        f"identifier {shown(identifier)} is also {which}, {REFUSED_TOO} and "
        f"{taking}: Stripe keeps one event an identifier (it would have kept the first "
        "row's), so a second would be refused as a duplicate or billed twice; not corrected"
    )


def taken_under(
    records: Iterable[UsageRecord],
    scope: ReportScope,
    index: MeterIndex,
    taken: Taken,
    customers: set[str],
) -> set[str]:
    """The shared sampled identifiers (`scope.shared`) an object holds a row under that is not
    the report's (no reported code fits it: Stripe took it, billed an event under it). A
    refused row of another object under one is quarantined (`sameids.TakenElsewhere`), as
    `sameids` quarantines one of the same object: sent as `<id>-mfx1`, billed twice. Not a
    row our validation proves Stripe refused (`refused_under`): day.csv's `k1` with a value
    that is text, quarantined, then sent again fixed from day2.csv (its entry marked taken
    again, no longer handled) was said taken, and day2.csv's refused `k1` held, never billed."""
    return {
        record.identifier or ""
        for record in records
        if (record.identifier or "") in scope.shared
        and reported_code(record, scope, index, taken, customers) is None
        and not always_refused(record, index, taken)
    }


def refused_under(
    records: Iterable[UsageRecord],
    scope: ReportScope,
    index: MeterIndex,
    taken: Taken,
    customers: set[str],
) -> dict[str, int]:
    """The shared sampled identifiers an object holds a row under that Stripe refused for a
    problem the report does not count (no reported code fits it, our validation finds one
    Stripe refuses whenever it took the row), each with its first such row: the report's run
    does not select it, its own run (its failed records, its report) corrects or quarantines
    it, so it goes out under `<id>-mfx<n>` unless a run took it up since (the caller asks).
    Not in an object holding a row under it the report is about: that row goes first, and
    the object's own runs hold the other under `identifier_taken` (more rows of the object
    under it than Stripe refused for that problem: `jobs.file_runs.stripe_took`)."""
    refused: dict[str, int] = {}
    reported: set[str] = set()
    for record in sorted(records, key=lambda r: r.row_number):
        identifier = record.identifier or ""
        if identifier not in scope.shared:
            continue
        if reported_code(record, scope, index, taken, customers) is not None:
            reported.add(identifier)
        elif identifier not in refused and always_refused(record, index, taken):
            refused[identifier] = record.row_number
    return {i: row for i, row in refused.items() if i not in reported}


def always_refused(record: UsageRecord, index: MeterIndex, taken: Taken) -> bool:
    """Whether our validation finds the row a problem Stripe refused it for whenever it took
    it (held against the bounds of `Taken`, as `reported_code`), whatever the report's codes."""
    problem = validate_record(record, index, taken.latest)
    return problem is not None and _refused_whenever_taken(problem.code, record, index, taken)


def reported_code(
    record: UsageRecord, scope: ReportScope, index: MeterIndex, taken: Taken, customers: set[str]
) -> str | None:
    """The code of the report's that the row has (its sample's, or one our validation finds
    Stripe refused whenever it took the row), or None: not a row the report is about."""
    identifier = record.identifier or ""
    sampled = scope.samples.get(identifier)
    if sampled is not None and identifier not in scope.shared:
        return sampled
    if scope.event_name is not None and record.event_name != scope.event_name:
        return None
    problem = validate_record(record, index, taken.latest)
    if problem is not None:
        if problem.code in scope.codes and _refused_whenever_taken(
            problem.code, record, index, taken
        ):
            return problem.code
        return None
    if customers and ErrorCode.CUSTOMER_NOT_FOUND in scope.codes:
        meter = index.get(record.event_name)
        value = record.payload.get(meter.customer_key) if meter else None
        if value is not None and str(value) in customers:
            text = str(value)
            if not taken.at_once and text.startswith(STRIPE_CUSTOMER_PREFIX):
                since = taken.gone_from.get(text)
                if since is None or record.row_number < since:
                    return None
            return ErrorCode.CUSTOMER_NOT_FOUND.value
    return None


def _refused_whenever_taken(
    code: str, record: UsageRecord, index: MeterIndex, taken: Taken
) -> bool:
    """Whether a problem our validation found (held against `taken.latest`) was one at any
    time Stripe may have taken the row."""
    if code == ErrorCode.TIMESTAMP_TOO_FAR_IN_PAST:
        if taken.earliest is None:
            return False
        problem = check_timestamp(record.timestamp, taken.earliest)
        return problem is not None and problem.code == code
    if code == ErrorCode.ARCHIVED_METER:
        if taken.at_once and code in taken.sampled:
            return True
        meter = index.get(record.event_name)
        archived = meter.deactivated_at if meter is not None else None
        return archived is not None and taken.earliest is not None and archived < taken.earliest
    return True
