"""When Stripe took the rows of an object version a report may be about, and which sampled
rows a version holds that are not the rows Stripe refused.

Apart from the orchestration (`error_reports`): these read only the report's state and the
poller's times, and decide which rows the report's runs may count.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from sqlalchemy import Engine

from remediation.records import UsageRecord
from remediation.reported import Taken
from remediation.rowdigest import record_digests
from service.config import PollerMode
from service.jobs.object_runs import object_sources
from service.jobs.report_job import TAKEN_LATEST_MARGIN, WINDOW_AFTER, Report, seconds
from service.jobs.run_context import RunContext
from service.jobs.store.lineage import runs_correcting
from service.jobs.store.taken_again import marked_among
from service.poller.store import FirstVersion, ObjectTimes, object_times


def when_taken(engine: Engine, job: Report, key: str, etag: str, *, linked: bool) -> Taken:
    """When Stripe may have taken the object's rows (remediation.reported).

    Stripe's S3 connector takes an object holding sampled rows (`linked`) at once, as one
    import set, within the report's window and after the upload: what its sampled rows say
    holds for its other rows of the meter. The bundled poller sends an object's rows batch by
    batch, from its first send on, maybe hours apart; an object found by the search beyond the
    samples may have been taken at any time after its upload (TAKEN_LATEST_MARGIN)."""
    times = object_times(engine, key, etag) or ObjectTimes(None, None)
    uploaded, first_sent = seconds(times.uploaded), seconds(times.first_sent)
    margin = int(TAKEN_LATEST_MARGIN.total_seconds())
    sampled = job.sampled.get(key) if linked else None
    if first_sent is not None:  # the poller sent it (import mode), in row order
        gone_from = sampled.first_row if sampled is not None else {}
        return Taken(max(job.now, first_sent) + margin, first_sent, gone_from=gone_from)
    if not linked:
        latest = job.now + int(WINDOW_AFTER.total_seconds()) + margin
        return Taken(latest=latest, earliest=uploaded)
    known = [bound for bound in (job.start, uploaded) if bound is not None]
    return Taken(
        latest=job.now,
        earliest=max(known) if known else None,
        sampled=frozenset(sampled.codes) if sampled is not None else frozenset(),
        at_once=True,
    )


class SentSince:
    """Which sampled rows an object version holds that are not the rows Stripe refused.

    Import mode: a customer may fix a row by hand and upload the file again after the
    poller sent it and before Stripe's report about it comes. The poller left the row out of
    the new version (another version sent it); when it changed since it was sent (its digest,
    `remediation.rowdigest`), what the report says of the row Stripe refused (its code, its
    customer) is not said of it: it is taken as it is now. Index mode: Stripe's connector
    takes every version whole; a version uploaded after the report's window holds rows the
    connector took again, changed or not (billed, or refused again and reported again): they
    are left to it (a version uploaded within the window may be the one the report is about).
    So are the rows first held by a version uploaded more than `WINDOW_BEFORE` before the
    report's window (`earlier`): the report is not about that version (no more than it is
    about an object first seen then, `other_objects`), so it is about a later one that held
    the row again, after Stripe's dedupe of a day; the connector took the row from the first
    version then (billed, or refused and reported then). Re-routed (an archived meter's rows)
    or corrected, it would be billed twice. A row some version sent again since a run
    quarantined it (marked `taken_again`) is neither: the report may be about that send."""

    def __init__(
        self,
        ctx: RunContext,
        job: Report,
        firsts: Mapping[str, FirstVersion],
        key: str,
        version: str,
    ) -> None:
        self.firsts, self.here = firsts, (key, version)
        self.samples = job.scope.samples
        runs = runs_correcting(ctx.engine, object_sources(ctx.engine, ctx.bucket, key))
        self.again = marked_among(ctx.engine, runs, sorted(job.scope.samples))
        times = object_times(ctx.engine, key, version)
        uploaded = seconds(times.uploaded) if times is not None else None
        # Stripe's connector takes the bucket's versions (index mode), not the bundled poller
        connector = ctx.settings.mfx_poller != PollerMode.ON
        self.taken_again = connector and uploaded is not None and uploaded > job.now
        self.long_before = job.long_before
        self.earlier: set[str] = set()  # the rows first held long before the report

    def changed(self, record: UsageRecord) -> bool | None:
        """None: the report's row; True: changed since the bundled poller sent it (import
        mode); False: taken again by Stripe's connector from this version (index mode)."""
        identifier = record.identifier or ""
        first = self.firsts.get(identifier) if identifier in self.samples else None
        if first is None or first.version == self.here or identifier in self.again:
            return None
        if not first.sent:
            if self.taken_again:
                return False
            if self.long_before(first):
                self.earlier.add(identifier)
                return False
            return None
        if first.content is None or [first.content] == record_digests([record]):
            return None
        return True

    def unchanged(
        self, records: Iterator[UsageRecord], altered: dict[str, bool]
    ) -> Iterator[UsageRecord]:
        """The records but the changed sampled rows (noted in `altered`)."""
        for record in records:
            changed = self.changed(record)
            if changed is None:
                yield record
            else:
                altered[record.identifier or ""] = changed
