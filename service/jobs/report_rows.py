"""The rows of one object version an error report's run takes (`Reported`), a batch at a time
in columns, and the rows no earlier version held (`HeldFirst`).

Apart from the orchestration (`error_reports`): the run calls these per batch
(`ports.SelectsRows`); they hold the hot path over every row of the object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine

from remediation.codes import ErrorCode
from remediation.core.checks import problem_ids
from remediation.core.columns import Batch, Column, Indexes
from remediation.ports import CustomerRecords
from remediation.records import UsageRecord
from remediation.reported import (
    STRIPE_CUSTOMER_PREFIX,
    ReportScope,
    Selection,
    Taken,
    customer_of,
    reported_code,
    select_reported,
)
from remediation.rowdigest import record_digests
from remediation.rownames import RowNames
from service.jobs.report_job import WINDOW_BEFORE, Report
from service.jobs.store.taken_again import marked_among, marked_anywhere
from service.poller.store import (
    FirstVersion,
    first_versions,
    recordable,
    sent_by_version,
    sent_moments,
)


class HeldFirst:
    """The rows of this object version that no earlier version (of this object or another)
    held: a row the poller recorded first with another version (the day's file rewritten
    with the rows so far, a copy under another name) was taken with that one, maybe billed,
    before a customer was deleted or a meter archived. Stripe's S3 connector dedupes it
    within a day and takes it as a new event after; the bundled poller leaves it out. What
    this version's report and times prove says nothing of it: such a row is the report's
    only when Stripe sampled it. Unless the connector took that version long before the
    report (`TakenLongBefore`): then the report counts the row when the report's code fits it
    (`reported`), as it counts the row of this version Stripe refused, but the row was taken
    from that version (`billed`: counted as found, never sent). Not a row a run over the
    object quarantined, even one a later version sent again since (marked `taken_again`, one
    of `runs`): that version refused it, it was not billed then.

    Unless the bundled poller sent the row from an earlier version of this object, overwritten
    in place since, after a sampled row and by the window's end (`SentInWindow`): the report
    is about that send, and that version is gone, so the row is read from this one (kept: the
    report's code decides, as for this version's rows, so a row Stripe billed is passed over).
    It was lost: a day's file written again with the same rows and more before the report
    came had only its sampled rows corrected."""

    def __init__(
        self,
        engine: Engine,
        job: Report,
        version: tuple[str, str],
        runs: list[int],
        customers: CustomerRecords | None = None,
    ) -> None:
        self.engine, self.job, self.version, self.runs = engine, job, version, runs
        self.reported: Callable[[UsageRecord], bool] = lambda _: False
        self.billed = 0
        self.sent_in_window = SentInWindow(engine, job)
        self.sent_again = SentAgain(engine, job, customers)

    def kept(self, batch: Batch, identifiers: list[str]) -> npt.NDArray[np.bool_]:
        """Which rows of the batch are kept (`identifiers`: theirs, every row named)."""
        samples, long_before = self.job.scope.samples, self.job.long_before
        first = _first_versions(self.engine, {i for i in identifiers if i and recordable(i)})
        keep = np.ones(len(identifiers), bool)
        maybe: list[int] = []  # taken from a version long before, by the look of them
        overwritten: list[int] = []  # sent from an earlier version of this object
        copied: list[int] = []  # sent from another object first
        for i, identifier in enumerate(identifiers):
            held = first.get(identifier)
            if identifier in samples or held is None or held.version == self.version:
                continue
            keep[i] = False
            if held.sent and held.key == self.version[0]:
                overwritten.append(i)
            elif held.sent:
                copied.append(i)
            elif long_before(held):
                maybe.append(i)
        if overwritten or copied:
            sent: set[str] = set()
            as_sent: set[str] = set()
            if overwritten:
                records = batch.take(np.asarray(overwritten, np.int64)).records()
                index, named = self.job.index, zip(overwritten, records, strict=True)
                customers = {identifiers[i]: customer_of(r, index) for i, r in named}
                sent = self.sent_in_window(customers)
                as_sent = _held_as_sent([identifiers[i] for i in overwritten], records, first)
            # only when this version sent it (first, or again after an earlier version of
            # the object did), or holds it as the object's latest send held it (that version
            # is gone: the report about the send reads this one): one the poller left out
            # changed (sent already) is not what Stripe refused (it billed the earlier send)
            again = {identifiers[i] for i in [*overwritten, *copied]}
            mine = set(sent_by_version(self.engine, *self.version, again))
            sent |= self.sent_again(mine | as_sent)
            keep[[i for i in [*overwritten, *copied] if identifiers[i] in sent]] = True
        if maybe:
            records = batch.take(np.asarray(maybe, np.int64)).records()
            taken = [
                identifiers[i] for i, r in zip(maybe, records, strict=True) if self.reported(r)
            ]
            refused: set[str] = set()
            for start in range(0, len(taken) if self.runs else 0, LOOKUP_ROWS):
                chunk = taken[start : start + LOOKUP_ROWS]
                refused |= marked_among(self.engine, self.runs, chunk)
            self.billed += sum(1 for identifier in taken if identifier not in refused)
        return keep


# Identifiers looked up at a time (each a query's IN list)
LOOKUP_ROWS = 1000


class SentInWindow:
    """Which rows the bundled poller sent within the report's reach: their batch first sent
    by the end of its window (every row it counts was taken by then), and, for a row of a
    `cus_…` customer Stripe did not find for a sampled row, no earlier than the latest such
    sampled row's (the customer was deleted by then, and stays unknown; a row sent before may
    have been billed: a day's file written again with a new row first, that row refused and
    sampled, the rows of its customer the first version sent before the deletion were
    re-sent to the rules' customer, billed twice). Likewise for every row, no earlier than the
    latest sampled row reported for a meter archived or a timestamp too old: true then, maybe
    not before. Any other customer id never named a Stripe customer, and the other codes were
    so whenever the row was sent: one bound for the whole report left the rows the first
    version sent before a sampled row of the next (8 of 11 refused rows lost). None without a
    sampled row the poller sent."""

    def __init__(self, engine: Engine, job: Report) -> None:
        self.engine, self.job = engine, job
        # to the microsecond (a batch apart is before): for every row, and by customer
        self.bounds: tuple[datetime, dict[str, datetime]] | None = None

    def __call__(self, customers: Mapping[str, str]) -> set[str]:
        """Of the rows (identifier -> its customer, "" for none), those sent in reach."""
        if self.bounds is None:
            self.bounds = self._bounds()
        every, by_customer = self.bounds
        ordered = sorted(customers)
        found: set[str] = set()
        for start in range(0, len(ordered), LOOKUP_ROWS):
            moments = sent_moments(self.engine, set(ordered[start : start + LOOKUP_ROWS]))
            found |= {
                identifier
                for identifier, moment in moments.items()
                if max(every, by_customer.get(customers[identifier], every)) <= moment
                and int(moment.timestamp()) <= self.job.now
            }
        return found

    def _bounds(self) -> tuple[datetime, dict[str, datetime]]:
        samples = self.job.scope.samples
        sent = sent_moments(self.engine, {i for i in samples if recordable(i)})
        if not sent:
            return datetime.max.replace(tzinfo=UTC), {}
        timed = [moment for i, moment in sent.items() if samples[i] in CHANGED_SINCE_TAKEN]
        named = {i: c for one in self.job.sampled.values() for i, c in one.named.items()}
        by_customer: dict[str, datetime] = {}
        for identifier, moment in sent.items():
            customer = named.get(identifier, "")
            if customer.startswith(STRIPE_CUSTOMER_PREFIX):
                by_customer[customer] = max(by_customer.get(customer, moment), moment)
        return max(timed, default=datetime.min.replace(tzinfo=UTC)), by_customer


# Codes a row sent earlier may not have had then (a meter archived, a timestamp aged since)
CHANGED_SINCE_TAKEN = frozenset({ErrorCode.ARCHIVED_METER, ErrorCode.TIMESTAMP_TOO_FAR_IN_PAST})


class SentAgain:
    """Rows of this object version a run quarantined (Stripe refused them from an earlier
    version of the object, or from another object) that the poller sent again since, changed
    by hand, last by the report's window's end (`_within`): marked `taken_again` once Stripe's
    stream acknowledged the batch, but that 200 is no acceptance (Stripe validates later, and
    its report samples a few rows a code). The report may be about them though it named none:
    our validation decides, as for any row, and one naming a customer Stripe never made
    (`CustomerRecords.never_existed`) was refused again whenever it was taken: the report's
    under `meter_event_customer_not_found` (`refused_again`). Left, such a row was neither
    billed nor waiting: its entry marked, nothing quarantined anew."""

    def __init__(self, engine: Engine, job: Report, customers: CustomerRecords | None) -> None:
        self.engine, self.job, self.customers = engine, job, customers
        self.found: set[str] = set()  # every such row of the object read so far
        self.never: dict[str, bool] = {}  # customer -> never made: one look-up each

    def __call__(self, identifiers: set[str]) -> set[str]:
        """Those of `identifiers` (rows another version sent first, this one since or held as
        the latest send held them) that are such rows, by their latest send (`sent_moments`:
        a fix in the day's file rewritten in place sent days after the first send is judged
        by its own)."""
        ordered = sorted(identifiers)
        found: set[str] = set()
        for start in range(0, len(ordered), LOOKUP_ROWS):
            moments = sent_moments(self.engine, set(ordered[start : start + LOOKUP_ROWS]))
            within = [i for i, moment in moments.items() if self._within(moment)]
            found |= marked_anywhere(self.engine, within)
        self.found |= found
        return found

    def _within(self, moment: datetime) -> bool:
        """Sent by the window's end, and no more than `WINDOW_BEFORE` before its start:
        Stripe validates a while after it takes an event (under load the send of a row it
        reported came before a window of ten seconds)."""
        at, start = int(moment.timestamp()), self.job.start
        since = None if start is None else start - int(WINDOW_BEFORE.total_seconds())
        return (since is None or since <= at) and at <= self.job.now

    def refused_again(self, record: UsageRecord, scope: ReportScope) -> bool:
        """Whether the report counts `record`, one of these rows its samples and our
        validation say nothing of, as refused for a customer Stripe never made."""
        if self.customers is None or ErrorCode.CUSTOMER_NOT_FOUND not in scope.codes:
            return False
        if scope.event_name is not None and record.event_name != scope.event_name:
            return False
        meter = self.job.index.get(record.event_name)
        value = record.payload.get(meter.customer_key) if meter else None
        if value is None:
            return False
        customer = str(value)
        if customer not in self.never:  # once a customer: a file of its rows is one GET
            self.never[customer] = self.customers.never_existed(customer)
        return self.never[customer]


# Why a row the report did not sample is taken as refused again (`SentAgain`)
REFUSED_AGAIN = (
    "sent again changed since Stripe refused it, refused again: the report's samples did not "
    "name it, but Stripe never had its customer"
)


def _first_versions(engine: Engine, identifiers: set[str]) -> dict[str, FirstVersion]:
    found: dict[str, FirstVersion] = {}
    ordered = sorted(identifiers)
    for start in range(0, len(ordered), LOOKUP_ROWS):
        found |= first_versions(engine, set(ordered[start : start + LOOKUP_ROWS]))
    return found


def _held_as_sent(
    identifiers: list[str], records: list[UsageRecord], first: Mapping[str, FirstVersion]
) -> set[str]:
    """Those of the rows (`identifiers`, their records) this version holds as the latest send
    of them from the object held them (`FirstVersion.latest`, `remediation.rowdigest`): the
    poller left them out (sent already), so the send a report is about is that one."""
    digests = record_digests(records)
    named = zip(identifiers, digests, strict=True)
    return {identifier for identifier, digest in named if first[identifier].latest == digest}


def _identifiers(batch: Batch) -> list[str]:
    """Each row's identifier as its record holds it ("" for none)."""
    return ["" if v is None else str(v) for v in batch.identifier.values()]


def among(batch: Batch, samples: Mapping[str, str]) -> npt.NDArray[np.int64]:
    """The rows (indexes) of the batch whose identifier is a sample's."""
    identifiers = _identifiers(batch)
    sampled = np.fromiter((i in samples for i in identifiers), bool, len(identifiers))
    return np.flatnonzero(sampled)


class Reported:
    """The rows of one object version a report's run takes, a batch at a time as the run
    reads them in columns (`ports.SelectsRows`): every row without an identifier named as the
    poller named it (`RowNames`), the rows no earlier version held (`HeldFirst`), those the
    report is about (`select_reported`), each with its code. Only the rows that may be the
    report's are made records: the sampled ones, those a check finds a problem with
    (`problem_ids`, against the latest time Stripe took them), those holding a customer
    Stripe did not find. (Selected as records, a run read every row of a day's object as a
    record: 8x slower.)"""

    def __init__(
        self,
        names: RowNames,
        held: HeldFirst,
        job: Report,
        scope: ReportScope,
        taken: Taken,
        selection: Selection,
    ) -> None:
        self.names, self.held, self.job = names, held, job
        self.scope, self.taken, self.selection = scope, taken, selection
        self._passed: tuple[Batch, Indexes] | None = None

        def billed(record: UsageRecord) -> bool:
            # not a row another run over the object handled: it may have been refused for
            # another reason (in an import set's failed records), not counted in this report
            if (record.identifier or "") in scope.handled:
                return False
            return reported_code(record, scope, job.index, taken, job.customers) is not None

        held.reported = billed

    def excluded(self, identifiers: set[str]) -> set[str]:
        return set()  # never asked: `selected` is

    def count_left(self, rows: int) -> None:
        pass

    def selected(self, batch: Batch) -> Batch:
        batch = self.names.batch(batch)  # every row: the next rows alike are numbered on
        identifiers = _identifiers(batch)
        at = np.flatnonzero(self.held.kept(batch, identifiers) & self._maybe(batch, identifiers))
        records = batch.take(at).records()
        where = {id(record): i for i, record in zip(at.tolist(), records, strict=True)}
        rows, codes, messages = [], [], []
        job = self.job
        reported = list(
            select_reported(
                records, self.scope, job.index, self.taken, job.customers, self.selection
            )
        )
        reported += self._refused_again(records, {id(record) for record in reported})
        for record in reported:
            rows.append(where[id(record)])
            codes.append(record.error_code)
            messages.append(record.error_message)
        chosen = batch.take(np.asarray(rows, np.int64))
        passed = np.ones(len(batch), bool)
        passed[rows] = False
        self._passed = (batch, np.flatnonzero(passed))
        return chosen.with_fields(
            code_column=Column(pa.array(codes, pa.string())),
            message_column=Column(pa.array(messages, pa.string())),
        )

    def passed_over(self) -> tuple[Batch, Indexes]:
        """The rows of the last batch not selected: Stripe took them when it imported the
        object (or another version did: `HeldFirst`), a reported row sharing one's
        identifier is quarantined, not sent again under `<id>-mfx1` (`sameids`)."""
        assert self._passed is not None, "asked after `selected`"
        passed, self._passed = self._passed, None
        return passed

    def _refused_again(self, records: list[UsageRecord], taken: set[int]) -> list[UsageRecord]:
        """The rows sent again changed (`SentAgain`) that `select_reported` did not take
        (`taken`: theirs) and Stripe refused again, each with its code."""
        again, handled = self.held.sent_again, self.scope.handled
        found = []
        for record in records:
            identifier = record.identifier or ""
            if id(record) in taken or identifier not in again.found or identifier in handled:
                continue
            if again.refused_again(record, self.scope):
                record.error_code = ErrorCode.CUSTOMER_NOT_FOUND.value
                record.error_message = REFUSED_AGAIN
                found.append(record)
        return found

    def _maybe(self, batch: Batch, identifiers: list[str]) -> npt.NDArray[np.bool_]:
        """The rows `select_reported` may take or count (the others it passes over): sampled,
        changed since sent (`scope.changed`), sent again changed (`SentAgain`), failing a
        check, or holding a customer Stripe did not find."""
        samples, changed = self.scope.samples, self.scope.changed
        again = self.held.sent_again.found
        rows = np.fromiter(
            (i in samples or i in changed or i in again for i in identifiers),
            bool,
            len(identifiers),
        )
        rows |= problem_ids(batch, self.job.index, self.taken.latest) != 0
        customers = self.job.customers
        if customers and ErrorCode.CUSTOMER_NOT_FOUND in self.scope.codes:
            known = pa.array(sorted(customers), pa.string())
            for column in batch.payload.values():
                found = pc.fill_null(pc.is_in(column.text, value_set=known), False)
                rows |= found.to_numpy(zero_copy_only=False)
        return rows
