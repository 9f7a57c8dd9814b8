"""Import sets (Stripe's and the poller's) and error reports as they are looked up: the
dashboard's lists of both (`ReportFilter`, `left_at`), the import sets the handlers, the jobs
and the poller find, record and mark, the names and Stripe files of an object the runs over it
read (`object_sources`), and when a report's window ended (`report_ends`). What the handlers
record and the jobs and the poller mark of an error report, and its retention, are
`report_records.py`; the reports the digests count as left unremediated are `reports_left.py`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, case, func, literal, select
from sqlmodel import Session, col
from sqlmodel import select as select_model

from handlers.records import RemediationStatus
from service.db import session_scope
from service.db.locks import Fence, unfenced
from service.db.pages import Listing, Page, keyset
from service.models import ErrorReportStatus
from service.models._types import as_utc, table_of, utcnow
from service.models.alerts import Alert
from service.models.reports import ErrorReport, ImportSet

IMPORT_SETS = table_of(ImportSet)
FAILED = "failed"  # an import set's status: the whole file failed, none of its rows taken
REPORTS = table_of(ErrorReport)
ALERTS = table_of(Alert)


def list_import_sets(connection: Connection, page: Page) -> Listing:
    return keyset(connection, select(IMPORT_SETS), IMPORT_SETS.c.id, page)


def get_import_set(connection: Connection, import_set_id: str) -> dict[str, Any] | None:
    row = connection.execute(
        select(IMPORT_SETS).where(IMPORT_SETS.c.import_set_id == import_set_id)
    ).first()
    return None if row is None else dict(row._mapping)


@dataclass(frozen=True)
class ReportFilter:
    """Which error reports the dashboard lists: of any of these statuses (none: every status),
    of one meter or, with `no_meter`, of none (no) or of any (yes), and left between `since`
    and `until` (both included), as the digest dates them (`left_at`)."""

    status: tuple[ErrorReportStatus, ...] = ()
    meter: str | None = None
    no_meter: bool | None = None
    since: datetime | None = None
    until: datetime | None = None

    def as_query(self) -> dict[str, str]:
        """The filter as query parameters (for the next page's link): statuses as `a,b`."""
        values = {
            "status": ",".join(self.status) or None,
            "meter": self.meter,
            "no_meter": None if self.no_meter is None else ("yes" if self.no_meter else "no"),
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
        }
        return {key: value for key, value in values.items() if value is not None}


def list_reports(connection: Connection, page: Page, found: ReportFilter) -> Listing:
    """The reports `found` picks, newest first, each with when its task last found it short
    (`found_short_at`: its partial warning's last sighting, None without one)."""
    query = select(REPORTS, ALERTS.c.last_seen_at.label("found_short_at"))
    query = query.select_from(REPORTS.outerjoin(ALERTS, partial_warning()))
    return keyset(connection, query.where(*_report_conditions(found)), REPORTS.c.id, page)


def _report_conditions(found: ReportFilter) -> list[ColumnElement[bool]]:
    reports = REPORTS.c
    where: list[ColumnElement[bool]] = []
    if found.status:
        where.append(reports.status.in_(found.status))
    if found.meter is not None:
        where.append(reports.meter_id == found.meter)
    if found.no_meter is not None:
        where.append(
            reports.meter_id.is_(None) if found.no_meter else reports.meter_id.is_not(None)
        )
    if found.since is not None:
        where.append(left_at() >= found.since)
    if found.until is not None:
        where.append(left_at() <= found.until)
    return where


def get_report(connection: Connection, event_id: str) -> dict[str, Any] | None:
    row = connection.execute(select(REPORTS).where(REPORTS.c.event_id == event_id)).first()
    return None if row is None else dict(row._mapping)


# --- import sets ---------------------------------------------------------------------------


def find_import_set(session: Session, import_set_id: str) -> ImportSet | None:
    return session.exec(
        select_model(ImportSet).where(ImportSet.import_set_id == import_set_id)
    ).first()


def import_set(engine: Engine, import_set_id: str) -> ImportSet | None:
    with Session(engine) as session:
        return find_import_set(session, import_set_id)


def import_sets(engine: Engine, import_set_ids: Sequence[str]) -> list[ImportSet]:
    """The recorded import sets of these ids (one query; an id not recorded is left out)."""
    if not import_set_ids:
        return []
    wanted = col(ImportSet.import_set_id).in_(list(import_set_ids))
    with Session(engine) as session:
        return list(session.exec(select_model(ImportSet).where(wanted)).all())


def object_names(prefix: str, key: str | None) -> list[str]:
    """The names the object `key` goes by: as the poller records it (under the bucket's
    `prefix`) and as Stripe's connector may name it (relative to the prefix)."""
    if not key:
        return []
    if not prefix:
        return [key]
    other = key.removeprefix(prefix) if key.startswith(prefix) else prefix + key
    return [key] if not other else [key, other]


def object_sources(engine: Engine, prefix: str, key: str | None) -> list[str]:
    """The sources of the runs over the rows of the object `key` (in a bucket under
    `prefix`): its names, and the files Stripe kept of the import sets that name it
    (`stripe_files_of`)."""
    names = object_names(prefix, key)
    return [*names, *stripe_files_of(engine, names)]


def stripe_files_of(engine: Engine, names: list[str]) -> list[str]:
    """The files Stripe kept of the import sets of the object known by `names` (its key, and
    the key without the bucket's prefix, as Stripe's connector may name it) that name the
    file, not the object, as their runs' source: the failed-records files (`import_set_errors`)
    and the copies of files that failed whole (`import_set_failed` reads Stripe's copy when
    the object holds other bytes since). One look-up on `ix_import_sets_source_object`."""
    if not names:
        return []
    query = select(
        IMPORT_SETS.c.errors_file_id, IMPORT_SETS.c.source_file_id, IMPORT_SETS.c.status
    ).where(IMPORT_SETS.c.source_object.in_(names))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    found = {row.errors_file_id for row in rows}
    found |= {row.source_file_id for row in rows if row.status == FAILED}
    return sorted(str(file_id) for file_id in found if file_id)


def import_sets_of_object(engine: Engine, names: list[str]) -> list[ImportSet]:
    """The import sets of the object known by `names` (see `stripe_files_of`), in the
    order they were recorded (one look-up on `ix_import_sets_source_object`)."""
    if not names:
        return []
    query = select_model(ImportSet).where(col(ImportSet.source_object).in_(names))
    with Session(engine) as session:
        return list(session.exec(query.order_by(col(ImportSet.id))).all())


def report_ends(engine: Engine, event_ids: Sequence[str]) -> dict[str, datetime]:
    """event id -> the end of the report's window (when it was stored, without one), for
    the recorded reports of these ids (one query)."""
    if not event_ids:
        return {}
    query = select(REPORTS.c.event_id, REPORTS.c.validation_end, REPORTS.c.created_at).where(
        REPORTS.c.event_id.in_(list(event_ids))
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    ends = (
        (str(row.event_id), as_utc(row.validation_end) or as_utc(row.created_at)) for row in rows
    )
    return {event_id: end for event_id, end in ends if end is not None}


def mark_import_set_remediated(engine: Engine, import_set_id: str, run_key: str) -> None:
    """The import set's remediation is done, by the run `run_key`."""
    _mark_import_set_done(engine, import_set_id, {"run_key": run_key})


def mark_import_set_dropped(engine: Engine, import_set_id: str, why: str) -> None:
    """The import set's source held nothing to import: done, with no run (`why` in detail)."""
    _mark_import_set_done(engine, import_set_id, {"dropped": why})


def _mark_import_set_done(engine: Engine, import_set_id: str, detail: dict[str, str]) -> None:
    with session_scope(engine) as session:
        row = session.exec(
            select_model(ImportSet).where(ImportSet.import_set_id == import_set_id)
        ).one()
        row.remediation_status = RemediationStatus.DONE
        row.detail = {**row.detail, **detail}
        row.updated_at = utcnow()
        session.add(row)


# --- error reports -------------------------------------------------------------------------

# The key prefix of the warning a `partial` report raises, `<prefix>:<event id>`, when its
# task finds it short (`jobs.report_outcome.conclude`): raised again each time it is.
PARTIAL_ALERT = "error_report.partial"


def partial_warning() -> ColumnElement[bool]:
    """A report's partial warning (`PARTIAL_ALERT`), to outer-join the alerts on."""
    return ALERTS.c.alert_key == literal(f"{PARTIAL_ALERT}:") + REPORTS.c.event_id


def left_at() -> ColumnElement[datetime]:
    """When a report (outer-joined to its partial warning) was left as it is: when it was
    recorded (an unmatched one is found so then); a partial one, when its task last found it
    short (the warning's last sighting; when it was recorded, without one). The digest counts
    a report in the window holding this moment, and the dashboard's since/until filter by it."""
    reports = REPORTS.c
    found_short = func.coalesce(ALERTS.c.last_seen_at, reports.created_at)
    partial = reports.status == ErrorReportStatus.PARTIAL
    return case((partial, found_short), else_=reports.created_at)


# --- the bundled poller's own import sets (written when it imports an object) --------------

POLLER_ORIGIN = "poller"


def save_poller_import_set(
    engine: Engine,
    import_set_id: str,
    source_object: str,
    *,
    fence: Fence = unfenced,
    **values: Any,
) -> ImportSet:
    """Create or update the import set the poller records for one object version. `fence`:
    a pass's `HeldLock.fence`, so that a pass whose lock dropped does not record its
    failed-records file and counts over those of the pass that holds the lock now."""
    with session_scope(engine) as session:
        fence(session.connection())
        query = select_model(ImportSet).where(ImportSet.import_set_id == import_set_id)
        row = session.exec(query).first() or ImportSet(import_set_id=import_set_id, status="")
        row.origin, row.source_object, row.updated_at = POLLER_ORIGIN, source_object, utcnow()
        for name, value in values.items():
            setattr(row, name, value)
        session.add(row)
    return row


def pending_poller_import_sets(connection: Connection) -> list[tuple[str, bool]]:
    """(id, whether the whole file failed) of the poller's import sets whose failed rows, or
    failed file, still wait for remediation."""
    query = select(IMPORT_SETS.c.import_set_id, IMPORT_SETS.c.status).where(
        IMPORT_SETS.c.origin == POLLER_ORIGIN,
        IMPORT_SETS.c.remediation_status == RemediationStatus.PENDING,
    )
    return [(str(i), status == FAILED) for i, status in connection.execute(query)]
