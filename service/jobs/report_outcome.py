"""How an error report's task concludes: the report's status, the partial alert and the
outcome's words on the rows found, left or changed.

Apart from the orchestration (`error_reports`): it reads only the report's state.
"""

from __future__ import annotations

from sqlalchemy import Engine

from service.jobs.report_job import Report
from service.jobs.store.report_records import set_report_status
from service.jobs.store.reports import PARTIAL_ALERT
from service.models import ErrorReportStatus
from service.notify.alerts import raise_alert, resolve_alert


def conclude(engine: Engine, job: Report, found: int) -> str:
    changed = _changed_rows(job)
    alert = f"{PARTIAL_ALERT}:{job.event_id}"
    if found >= job.expected:
        set_report_status(engine, job.event_id, ErrorReportStatus.REMEDIATED)
        resolve_alert(engine, alert)  # taken up again (`poller.handover`), and found now
        return f"remediated {found} row(s) for {job.expected} reported error(s){changed}"
    set_report_status(engine, job.event_id, ErrorReportStatus.PARTIAL, job.unrecorded)
    raise_alert(
        engine,
        key=alert,
        severity="warning",
        kind=PARTIAL_ALERT,
        subject=f"report {job.event_id}: found {found} of {job.expected} reported rows",
        message=_shortfall(job),
        detail={
            "event_id": job.event_id,
            "found": found,
            "expected": job.expected,
            **({"changed": sorted(job.changed)} if job.changed else {}),
        },
    )
    return f"partial: remediated {found} row(s) of {job.expected} reported{changed}"


def _changed_rows(job: Report) -> str:
    """What became of the sampled rows changed since they were sent, for the outcome."""
    parts = []
    if job.resent:
        parts.append(
            f"{job.resent} changed in the file since sent: taken as they are now, not for the "
            "report's code"
        )
    if job.left:
        parts.append(
            f"{job.left} read from a version uploaded after the report: taken again by "
            "Stripe's connector, left to it"
        )
    if job.billed:
        parts.append(
            f"{job.billed} first held by a version uploaded more than a day before the "
            "report's window: Stripe's connector took them from it then, left out"
        )
    return "".join(f"; {part}" for part in parts)


def _shortfall(job: Report) -> str:
    # not "they are in no object": a row of a customer Stripe does not know (one no sample
    # names) sits in the object the poller sent, and only Stripe can tell it from the rest
    message = (
        "the other rows cannot be told: no other row of the objects meterfix saw around the "
        "report's window is one it can show Stripe refused for these codes (a customer Stripe "
        "does not know is known only from a sampled row naming it), or they are in none of them"
    )
    if job.changed:
        changed = ", ".join(sorted(job.changed))
        message += (
            "; overwritten since Stripe took them (the version the report is about is "
            f"gone): {changed}"
        )
    if job.unrecorded:
        message += (
            "; the poller has not recorded the version there now of "
            f"{', '.join(sorted(job.unrecorded))}: the report is taken up again when it does"
        )
    if job.gone:
        message += (
            f"; deleted from the bucket since Stripe took them: {', '.join(sorted(job.gone))}"
        )
    if job.unreadable:
        unreadable = ", ".join(f"{key} ({why})" for key, why in sorted(job.unreadable.items()))
        message += f"; unreadable since Stripe took them: {unreadable}"
    return message
