"""When Stripe refused the rows a run took: an import set's event, an error report's window
end (whole seconds). Which runs came before an object version is told by it (the jobs'
`object_runs`, the poller's `again`)."""

from __future__ import annotations

from sqlalchemy import Engine

from service.jobs.store import reports
from service.jobs.store.reports import event_time
from service.jobs.store.runs import import_set_of, report_of, run_keys


def refusal_moments(engine: Engine, run_ids: list[int]) -> dict[int, int]:
    """run id -> when Stripe refused the rows the run took (whole seconds), for the runs of an
    import set (its event) and of an error report (the end of its window); other runs (the
    poller's, re-runs) are left out: their time is their own."""
    keys = run_keys(engine, run_ids)
    impsets = {r: i for r, k in keys.items() if (i := import_set_of(k)) is not None}
    events = {r: e for r, k in keys.items() if (e := report_of(k)) is not None}
    found = reports.import_sets(engine, sorted(set(impsets.values())))
    taken = {row.import_set_id: event_time(row) for row in found}
    ended = reports.report_ends(engine, sorted(set(events.values())))
    moments = {r: when for r, i in impsets.items() if (when := taken.get(i)) is not None}
    moments |= {r: int(end.timestamp()) for r, e in events.items() if (end := ended.get(e))}
    return moments
