"""The bucket objects an error report may be about: those its samples link to, those seen
around its window, and fetching the version of one to read.

Apart from the orchestration (`error_reports`): finding and downloading objects, noting in
the report's state why one cannot be read.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from remediation.errors import UnreadableFile
from remediation.repair import InputPlan, plan_input
from remediation.rownames import source_tag
from service.jobs.inputs import local_name
from service.jobs.report_job import WINDOW_AFTER, WINDOW_BEFORE, Report
from service.jobs.run_context import RunContext
from service.models import ErrorReport, ErrorSample
from service.models._types import as_utc, utcnow
from service.poller.store import object_times, objects_holding, objects_seen_between


def fetch(
    ctx: RunContext, job: Report, key: str, etag: str, folder: Path, *, or_current: bool = False
) -> tuple[str, Path, InputPlan] | None:
    """(ETag, local copy, plan) of the object as Stripe took it, or None when it was
    overwritten since (another ETag): the rows the report is about are gone with that
    version, and the rows there now are another file's, never remediated for this report
    (`job.changed` names it). `or_current`: the version in the bucket now will do if the
    poller listed it too (an identifier is recorded with the first version that held it; the
    caller checks the sampled rows are in it; one the poller has not listed yet is named in
    `job.unrecorded` too)."""
    head = ctx.bucket.head(key)
    if head is None:  # deleted since: its rows are gone, the other objects' are remediated
        job.gone.append(key)
        return None
    if head.etag != etag:
        recorded = object_times(ctx.engine, key, head.etag) is not None
        if not (or_current and recorded):
            job.changed.append(key)
            if or_current:
                job.unrecorded.append(key)
            return None
        etag = head.etag
    path = folder / f"{source_tag(key, etag)}-{local_name(key)}"
    if not path.exists():
        ctx.bucket.download(key, path)
    try:
        return etag, path, plan_input(path, ctx.rules)
    except UnreadableFile as exc:
        # one object that cannot be read (written again empty, say) holds back no other
        # object's rows: they are remediated, and the report is left partial, saying why
        job.unreadable[key] = exc.reason
        return None


def recorded_now(ctx: RunContext, keys: list[str]) -> bool:
    """Whether the poller has recorded the version there now of one of these objects (`fetch`
    found them overwritten by a version it had not recorded)."""
    for key in keys:
        head = ctx.bucket.head(key)
        if head is not None and object_times(ctx.engine, key, head.etag) is not None:
            return True
    return False


def linked_objects(engine: Engine, samples: list[ErrorSample]) -> dict[str, str]:
    """object key -> the ETag we imported it at, for every sample that is one of our rows."""
    identifiers = {s.identifier for s in samples if s.identifier}
    if not identifiers:
        return {}
    return objects_holding(engine, identifiers)


def other_objects(
    engine: Engine, report: ErrorReport, job: Report, exclude: set[str]
) -> list[tuple[str, str]]:
    """Objects first seen around the report's window that hold rows of the reported event
    names, newest first."""
    end = as_utc(report.validation_end) or utcnow()
    start = _shifted(as_utc(report.validation_start) or end, -WINDOW_BEFORE)
    rows = objects_seen_between(engine, start, _shifted(end, WINDOW_AFTER), job.event_names)
    return [(key, etag) for key, etag in rows if key not in exclude]


def _shifted(moment: datetime, by: timedelta) -> datetime:
    """`moment + by`, held at the calendar's edge: a window Stripe's API dates in year 1 or
    9999 failed the task with OverflowError on every attempt, the report never concluded."""
    try:
        return moment + by
    except OverflowError:
        return (datetime.max if by > timedelta(0) else datetime.min).replace(tzinfo=UTC)
