"""Lineage: the look-ups of identifiers other runs handled, corrected, wrote or refused (the
correction audit, the quarantined rows, the runs' outputs and what the poller imported of
them), read by the jobs and the poller."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, case, func, or_
from sqlmodel import Session, col
from sqlmodel import select as select_model

from remediation.codes import ErrorCode
from remediation.identifiers import hashed_identifier, plain_suffix
from remediation.records import MFX_PREFIX
from remediation.reported import REFUSED_TOO
from service.db.statements import in_listed
from service.models import RunTrigger
from service.models._types import as_utc, latest
from service.models.poller import ImportedRow
from service.models.remediation import (
    CorrectionAudit,
    OutputKind,
    OutputObject,
    QuarantinedRow,
    RemediationRun,
)


def corrections_writing(
    engine: Engine, identifiers: Sequence[str]
) -> list[tuple[CorrectionAudit, int]]:
    """The corrections that wrote these identifiers (oldest first), with their run's
    generation. One query and one parameter however many identifiers (`db.statements.in_listed`)."""
    wrote = in_listed(col(CorrectionAudit.new_identifier), identifiers, engine, "identifiers")
    with Session(engine) as session:
        rows = session.exec(
            select_model(CorrectionAudit, RemediationRun.generation)
            .join(RemediationRun, col(RemediationRun.id) == col(CorrectionAudit.run_id))
            .where(wrote)
            .order_by(col(CorrectionAudit.id))
        ).all()
    return [(audit, generation) for audit, generation in rows]


def handled_identifiers(
    engine: Engine, source: str | Sequence[str], other_than: str | None = None
) -> frozenset[str]:
    """The identifiers of the rows of `source` some run (other than the run of key
    `other_than`: a crashed try of it is done again, its rows deleted) already corrected or
    quarantined. By identifier, wherever the row stood: an object
    overwritten under its key may hold the same row at another number, and correcting it
    again sends the same derived identifier again (Stripe dedupes for 24 hours only). A row
    of a new version is never taken for one of the old by its number: rows without an
    identifier are named by what they hold, or, without a timestamp, by the object's version
    and row (`remediation.rownames.RowNames`). Several sources: the runs of each (an object's
    key and the failed-records files of its import sets, `jobs.object_runs`)."""
    with Session(engine) as session:
        queries = handled_queries(source, other_than)
        return frozenset(str(i) for query in queries for i in session.exec(query).all())


def handled_under(
    engine: Engine,
    sources: Sequence[str],
    identifiers: Sequence[str],
    other_than: str | None = None,
) -> set[str]:
    """Those of `identifiers` a run of `sources` (other than the run of key `other_than`)
    corrected or quarantined, as `handled_identifiers` says, asked for a batch of identifiers
    (one query each of the audit and the quarantined rows, not every identifier the runs of
    a large object handled)."""
    if not sources or not identifiers:
        return set()
    audit, held = handled_queries(sources, other_than)
    listed = list(identifiers)
    queries = (
        audit.where(in_listed(col(CorrectionAudit.identifier), listed, engine)),
        held.where(in_listed(col(QuarantinedRow.identifier), listed, engine)),
    )
    with Session(engine) as session:
        return {str(i) for query in queries for i in session.exec(query).all()}


def runs_of_sources(
    engine: Engine, sources: Sequence[str], other_than: str | None = None
) -> list[int]:
    """The ids of the runs whose source is one of `sources`, but the run of key
    `other_than`."""
    if not sources:
        return []
    query = select_model(RemediationRun.id).where(col(RemediationRun.source).in_(list(sources)))
    if other_than is not None:
        query = query.where(RemediationRun.run_key != other_than)
    with Session(engine) as session:
        return sorted(int(i) for i in session.exec(query).all() if i is not None)


def handled_among(engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]) -> set[str]:
    """Which of `identifiers` one of these runs corrected or quarantined (a quarantined row
    sent again since, `taken_again`, is a new refusal: not counted), as `handled_identifiers`
    says, looked up for a batch of identifiers (two queries, each on an index led by
    `run_id`; none without runs)."""
    if not run_ids or not identifiers:
        return set()
    runs = list(run_ids)
    audit, held = col(CorrectionAudit.identifier), col(QuarantinedRow.identifier)
    corrected = (
        select_model(CorrectionAudit.identifier)
        .where(col(CorrectionAudit.run_id).in_(runs))
        .where(in_listed(audit, identifiers, engine))
        .distinct()
    )
    quarantined = (
        select_model(QuarantinedRow.identifier)
        .where(col(QuarantinedRow.run_id).in_(runs))
        .where(in_listed(held, identifiers, engine))
        .where(col(QuarantinedRow.taken_again).is_(None))
        .distinct()
    )
    with Session(engine) as session:
        found = [*session.exec(corrected).all(), *session.exec(quarantined).all()]
    return {str(identifier) for identifier in found}


def corrected_among(engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]) -> set[str]:
    """Which of `identifiers` one of these runs corrected (one query on an index led by
    `run_id`; none without runs)."""
    if not run_ids or not identifiers:
        return set()
    audit = col(CorrectionAudit.identifier)
    query = (
        select_model(CorrectionAudit.identifier)
        .where(col(CorrectionAudit.run_id).in_(list(run_ids)))
        .where(in_listed(audit, identifiers, engine))
        .distinct()
    )
    with Session(engine) as session:
        return {str(identifier) for identifier in session.exec(query).all()}


def runs_correcting(engine: Engine, source: str | Sequence[str]) -> list[int]:
    """The ids of the runs whose corrections are of rows of `source` (one, or several: an
    object's key and the failed-records files of its import sets, `reports.object_sources`):
    its own runs, and the quarantine re-runs that took its quarantined rows (a re-run's source
    is the re-run), and the re-runs that took the rows those re-runs quarantined again, to the
    end of the chain."""
    own, taken = correcting_queries(source)
    with Session(engine) as session:
        found = {int(i) for i in session.exec(own).all() if i is not None}
        later = {int(i) for i in session.exec(taken).all() if i is not None}
        while later - found:
            found |= later
            later = {int(i) for i in session.exec(reruns_of(sorted(later))).all()}
    return sorted(found | later)


def own_runs(engine: Engine, source: str | Sequence[str]) -> list[int]:
    """The ids of `source`'s own runs (one source or several: an object's key and the
    failed-records files of its import sets), not the re-runs that took their rows."""
    own, _taken = correcting_queries(source)
    with Session(engine) as session:
        return sorted(int(i) for i in session.exec(own).all() if i is not None)


def correcting_queries(source: str | Sequence[str]) -> tuple[Any, Any]:
    """The ids of `source`'s runs (one source or several), and of the re-runs that took the
    rows they quarantined (found by the runs' ids, which lead an index of quarantined_rows:
    filtered by `source` alone, a scan of every quarantined row at every import)."""
    sources = [source] if isinstance(source, str) else list(source)
    runs = select_model(RemediationRun.id).where(col(RemediationRun.source).in_(sources))
    rerun = col(QuarantinedRow.rerun_id)
    taken = (
        select_model(rerun)
        .where(col(QuarantinedRow.run_id).in_(runs.scalar_subquery()))
        .where(col(QuarantinedRow.source).in_(sources), rerun.is_not(None))
        .distinct()
    )
    return runs, taken


def reruns_of(run_ids: Sequence[int]) -> Any:
    """The ids of the re-runs that took rows these runs quarantined (by run id: indexed)."""
    rerun = col(QuarantinedRow.rerun_id)
    return (
        select_model(rerun)
        .where(col(QuarantinedRow.run_id).in_(list(run_ids)), rerun.is_not(None))
        .distinct()
    )


def written_among(engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]) -> set[str]:
    """Which of `identifiers` one of these runs wrote to a corrected output, so that it went
    out, or will, under a derived identifier: corrected (the audit: `run_id` leads its index
    with the identifier), or taken from quarantine by a re-run among them that did not
    quarantine it again (a re-run sends unchanged a row that passes now: its meter was
    created, its time is no longer ahead; no correction, and before `core.resent` no audit
    row)."""
    if not run_ids or not identifiers:
        return set()
    runs = list(run_ids)
    audit = col(CorrectionAudit.identifier)
    corrected = (
        select_model(CorrectionAudit.identifier)
        .where(col(CorrectionAudit.run_id).in_(runs))
        .where(in_listed(audit, identifiers, engine))
        .distinct()
    )
    held = col(QuarantinedRow.identifier)
    still_held = func.max(case((col(QuarantinedRow.rerun_id).is_(None), 1), else_=0))
    taken = (
        select_model(held)
        .where(col(QuarantinedRow.run_id).in_(runs))
        .where(in_listed(held, identifiers, engine))
        .group_by(held)
        .having(still_held == 0)  # every quarantined entry of it taken by a re-run
    )
    with Session(engine) as session:
        found = [*session.exec(corrected).all(), *session.exec(taken).all()]
        written = {str(identifier) for identifier in found}
        rest = [identifier for identifier in identifiers if identifier not in written]
        return written | _resent_unchanged(session, engine, runs, rest)


def _resent_unchanged(
    session: Session, engine: Engine, runs: list[int], identifiers: Sequence[str]
) -> set[str]:
    """Which of `identifiers` these runs wrote unchanged to a corrected output that the
    poller has imported or indexed since: a rejected row our validation passes (a whole-file
    failure's rows, a failed-records row without an error) goes out as `<id>-mfx<n>`
    counted valid, with no audit row. Its derived identifiers (either form: plain, or the first
    hashed one; a later hashed one only when two originals of an input were crafted to share
    it) are looked up among the poller's records of those outputs."""
    if not identifiers:
        return set()
    outputs = session.exec(
        select_model(OutputObject.key, OutputObject.generation)
        .where(col(OutputObject.run_id).in_(runs))
        .where(OutputObject.kind == OutputKind.CORRECTED)
    ).all()
    if not outputs:
        return set()
    keys, generations = sorted({key for key, _ in outputs}), {g for _, g in outputs}
    derived: dict[str, str] = {}
    for identifier in identifiers:
        for generation in generations:
            derived[identifier + plain_suffix(generation)] = identifier
            derived[hashed_identifier(identifier, generation)] = identifier
    held = col(ImportedRow.identifier)
    query = (
        select_model(held)
        .where(col(ImportedRow.object_key).in_(keys))
        .where(in_listed(held, list(derived), engine))
    )
    return {derived[str(identifier)] for identifier in session.exec(query).all()}


def refused_among(
    engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]
) -> dict[str, datetime]:
    """identifier -> when it was last quarantined, for those of `identifiers` these runs hold
    in quarantine (not taken by a later re-run, not marked sent again since) after an error
    report's run or a re-run quarantined them. Quarantined after it was sent, such a row is
    one Stripe refused: never billed, so a new version of the file that holds it fixed sends
    it (the caller compares with when it was sent)."""
    if not run_ids or not identifiers:
        return {}
    held = col(QuarantinedRow.identifier)
    refused = (RunTrigger.ERROR_REPORT, RunTrigger.QUARANTINE_RERUN)
    query = (
        select_model(held, col(QuarantinedRow.created_at))
        .join(RemediationRun, col(RemediationRun.id) == col(QuarantinedRow.run_id))
        .where(col(QuarantinedRow.run_id).in_(list(run_ids)))
        .where(col(RemediationRun.trigger).in_([str(t) for t in refused]))
        .where(col(QuarantinedRow.rerun_id).is_(None), col(QuarantinedRow.taken_again).is_(None))
        .where(in_listed(held, identifiers, engine))
    )
    with Session(engine) as session:
        found = session.exec(query).all()
    return latest((str(identifier), as_utc(moment)) for identifier, moment in found)


def deferring_among(
    engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]
) -> dict[str, datetime]:
    """identifier -> when it was last quarantined, for those of `identifiers` these runs hold
    (not taken by a re-run, not marked taken again) under `identifier_taken` as an error
    report's run holds a row Stripe refused beside another row under its identifier Stripe
    refused too (`reported.REFUSED_TOO`): never billed, never sent by a re-run, the other
    row going out in its place."""
    if not run_ids or not identifiers:
        return {}
    held = col(QuarantinedRow.identifier)
    query = (
        select_model(held, col(QuarantinedRow.created_at))
        .join(RemediationRun, col(RemediationRun.id) == col(QuarantinedRow.run_id))
        .where(col(QuarantinedRow.run_id).in_(list(run_ids)))
        .where(col(RemediationRun.trigger) == str(RunTrigger.ERROR_REPORT))
        .where(col(QuarantinedRow.rerun_id).is_(None), col(QuarantinedRow.taken_again).is_(None))
        .where(col(QuarantinedRow.reason).contains(REFUSED_TOO))
        .where(in_listed(held, identifiers, engine))
    )
    with Session(engine) as session:
        found = session.exec(query).all()
    return latest((str(identifier), as_utc(moment)) for identifier, moment in found)


def handled_queries(source: str | Sequence[str], other_than: str | None = None) -> tuple[Any, Any]:
    """The identifiers of `source` (one, or several) in the audit and among the quarantined
    rows, found by the ids of the runs of that source (`run_id` leads an index of each table;
    neither indexes `source`, which a run's rows all share: the audit's loader refuses any
    other). Filtered by `source` alone, each was a scan of its whole table, at every error
    report (the audit holds a row per correction of every run kept). A row quarantined under
    `identifier_taken` is not counted (`_not_taken_elsewhere`): it is never the row Stripe
    took under its identifier, so a report about that identifier is about another row."""
    sources = [source] if isinstance(source, str) else list(source)
    runs = select_model(RemediationRun.id).where(col(RemediationRun.source).in_(sources))
    if other_than is not None:
        runs = runs.where(RemediationRun.run_key != other_than)
    audit_run = col(CorrectionAudit.run_id).in_(runs.scalar_subquery())
    held_run = col(QuarantinedRow.run_id).in_(runs.scalar_subquery())
    audit_identifier, held_identifier = (
        col(CorrectionAudit.identifier),
        col(QuarantinedRow.identifier),
    )
    return (
        select_model(CorrectionAudit.identifier)
        .where(audit_run, col(CorrectionAudit.source).in_(sources))
        .where(audit_identifier.is_not(None))
        .distinct(),
        select_model(QuarantinedRow.identifier)
        .where(held_run, col(QuarantinedRow.source).in_(sources))
        .where(held_identifier.is_not(None))
        .where(col(QuarantinedRow.taken_again).is_(None))  # sent again since: a new refusal
        .where(_not_taken_elsewhere())
        .distinct(),
    )


def _not_taken_elsewhere() -> ColumnElement[bool]:
    """Quarantined rows not held because Stripe took their identifier from another row
    (`identifier_taken`: the code they came with, or their record's `mfx_code` when they came
    with another). Such a row was never sent: Stripe refusing its identifier since refused
    the row it took it from (`k1` for `cus_ghost` sent, `k1` in milliseconds quarantined so,
    then Stripe's report: no such customer). Counted as handled, that report selected
    nothing, and the sent row's usage was in no quarantine entry, never billed."""
    taken = ErrorCode.IDENTIFIER_TAKEN.value
    noted = col(QuarantinedRow.record)[f"{MFX_PREFIX}code"].as_string()
    return and_(col(QuarantinedRow.code) != taken, or_(noted.is_(None), noted != taken))
