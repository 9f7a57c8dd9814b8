"""Index mode: rows of a new object version that were billed before, taken again by
Stripe's S3 connector.

Stripe's connector takes every object version whole and dedupes an identifier for 24 hours
only: a file rewritten with the rows of the day so far (or copied under another name) more
than a day after the version that first held its rows has them billed again, and a row
meterfix corrected (billed as `<id>-mfx<n>`) is billed again whenever it is taken again.
meterfix cannot keep Stripe from taking them (the bundled poller in import mode leaves such
rows out: `service.poller.other_versions.OtherVersions`), but it sees both versions when it
indexes them, so it says so: one warning alert per object version, with how many rows and
which versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine

from remediation.poller import RowRef
from remediation.ports import ObjectInfo
from service.jobs.store.indexed_rows import UNREADABLE
from service.jobs.store.lineage import own_runs, runs_correcting, written_among
from service.jobs.store.reports import object_sources
from service.jobs.store.taken_again import mark_taken_again
from service.jobs.store.usage_stamps import usage_second
from service.models._types import as_utc
from service.notify.alerts import raise_alert
from service.notify.runs import RunAlertsToSettle
from service.poller.object_progress import RESEND_HORIZON
from service.poller.store import first_etags_in, first_versions, object_times, recordable

SAMPLES = 5  # identifiers named in the alert


class TakenAgain:
    """Counts, while a version is indexed, its rows whose identifier an earlier version held
    when that version was uploaded more than the re-send horizon (23 h) before this one, and
    its rows meterfix corrected before (their correction was billed as `<id>-mfx<n>`, another
    identifier: the row fixed by hand and taken again is billed a second time at any time)."""

    def __init__(self, engine: Engine, obj: ObjectInfo, prefix: str = "") -> None:
        """`prefix`: the bucket's (Stripe's connector names the object's import sets by the
        key relative to it)."""
        self.engine, self.obj, self.prefix = engine, obj, prefix
        self.uploaded = as_utc(obj.last_modified)
        self.rows = 0
        self.samples: list[str] = []
        self.versions: dict[tuple[str, str], datetime | None] = {}
        self.counted: set[tuple[str, str]] = set()
        self.corrected = 0
        self.runs: list[int] | None = None  # the runs correcting this object's rows
        self.own_runs: list[int] = []  # the object's own runs (not the re-runs among them)
        self.corrected_samples: list[str] = []
        self.held = 0  # rows meterfix holds in quarantine, taken again (marked so)
        self.settling = RunAlertsToSettle()  # their runs, whose alerts `alert` settles

    def check(self, refs: Sequence[RowRef]) -> None:
        """Look the rows up before they are recorded (one query per call, one more for the
        rows any run holds in quarantine: `_mark_held`)."""
        if self.uploaded is None:
            return
        identifiers = {r.identifier for r in refs if recordable(r.identifier)}
        if self.runs is None:
            # the object's runs and its import sets' (their failed-records files' runs)
            sources = object_sources(self.engine, self.prefix, self.obj.key)
            self.runs = runs_correcting(self.engine, sources)
            self.own_runs = own_runs(self.engine, sources)
        self._mark_held(refs, identifiers, self.uploaded)
        for identifier, first in first_versions(self.engine, identifiers).items():
            # this version itself counts when uploaded again (the same bytes, a later
            # LastModified): its recorded upload is the earlier one
            version = first.version
            uploaded = self._uploaded(version)
            if uploaded is not None and self.uploaded - uploaded > RESEND_HORIZON:
                self.rows += 1
                self.counted.add(version)
                if len(self.samples) < SAMPLES:
                    self.samples.append(identifier)
                identifiers.discard(identifier)
        if not identifiers:
            return
        for identifier in sorted(written_among(self.engine, self.runs, list(identifiers))):
            self.corrected += 1
            if len(self.corrected_samples) < SAMPLES:
                self.corrected_samples.append(identifier)

    def _mark_held(self, refs: Sequence[RowRef], identifiers: set[str], uploaded: datetime) -> None:
        """Mark the entries any run holds of these rows, quarantined before this version was
        uploaded: Stripe's connector takes it whole, so it took them (the quarantine file
        fixed by hand and uploaded under another name, or a later version of the row's own
        object). The same usage only (`sent_as_held`: the same second, as the rules read
        it; an identifier may be used again days later for other usage, which leaves the
        older row waiting; a timestamp that reads as no time, `UNREADABLE`, is no usage's:
        it marks nothing). One query by the quarantined rows' identifier index."""
        seconds: dict[str, set[int | None]] = {}
        for ref in refs:
            if ref.identifier in identifiers and ref.timestamp != UNREADABLE:
                seconds.setdefault(ref.identifier, set()).add(usage_second(ref.timestamp))
        label = f"{self.obj.key} (ETag {self.obj.etag}, uploaded {self._stamp(uploaded)})"
        # the rows this version is the first of its object to hold: it may be the version
        # they were refused from (recorded before, or being recorded now)
        firsts = first_etags_in(self.engine, self.obj.key, seconds)
        first = [i for i in seconds if firsts.get(i, self.obj.etag) == self.obj.etag]
        self.held += mark_taken_again(
            self.engine,
            None,
            sorted(identifiers),
            label,
            uploaded,
            self.settling.note,
            seconds=seconds,
            own_runs=self.own_runs,
            first_held=first,
        )

    def _uploaded(self, version: tuple[str, str]) -> datetime | None:
        if version not in self.versions:
            times = object_times(self.engine, *version)
            self.versions[version] = None if times is None else times.uploaded
        return self.versions[version]

    def alert(self) -> None:
        """A warning alert when rows billed before were counted; an info alert when only rows
        meterfix held in quarantine were taken again (re-runs leave them: nothing to do).
        First the alerts of the runs whose rows were marked taken again are told, once."""
        self.settling.settle(self.engine)
        total = self.rows + self.corrected
        if not total and not self.held:
            return
        earlier = sorted(self.counted)
        said = self._explanation(earlier, total)
        raise_alert(
            self.engine,
            key=f"poller.taken_again:{self.obj.key}:{self.obj.etag}",
            severity="warning" if total else "info",
            kind="poller.taken_again",
            subject=(
                f"{self.obj.key}: {_rows(total)} billed before, taken again"
                if total
                else f"{self.obj.key}: {_rows(self.held)} held in quarantine, taken again"
            ),
            message=f"{self.obj.key} (uploaded {self._stamp(self.uploaded)}): {' '.join(said)}",
            detail=self._detail(earlier),
            rows=total or self.held,
            links={
                "objects": [self.obj.key, *sorted({key for key, _ in earlier} - {self.obj.key})]
            },
        )

    def _explanation(self, earlier: list[tuple[str, str]], total: int) -> list[str]:
        """The alert's sentences: why each kind of row counted is billed again, and what to do."""
        named = ", ".join(f"{key} ({self._when(key, etag)})" for key, etag in earlier[:3])
        said = []
        if self.rows:
            said.append(
                f"{_rows(self.rows)} of it carry identifiers that {named} held, uploaded more "
                "than a day before: Stripe's S3 connector takes every version whole and "
                "dedupes an identifier for 24 hours only, so it bills them again."
            )
        if self.corrected:
            said.append(
                f"{_rows(self.corrected)} of it meterfix corrected or re-sent before (billed "
                "as `<identifier>-mfx<n>`): taken again, fixed or not, they are billed twice."
            )
        if self.held:
            said.append(
                f"{_rows(self.held)} of it meterfix holds in quarantine: Stripe takes them "
                "again from this version (billed as they are, or refused again and quarantined "
                "anew), so a quarantine re-run leaves them."
            )
        if total:
            said.append(
                "Upload only new rows, or let meterfix import (MFX_POLLER=on leaves them out)."
            )
        return said

    def _detail(self, earlier: list[tuple[str, str]]) -> dict[str, object]:
        """The alert's detail: the counts, sample identifiers and the earlier versions."""
        return {
            "key": self.obj.key,
            "etag": self.obj.etag,
            "rows": self.rows,
            "identifiers": self.samples,
            "earlier": [{"key": key, "etag": etag} for key, etag in earlier],
            "corrected": self.corrected,
            "corrected_identifiers": self.corrected_samples,
            "quarantined_taken_again": self.held,
        }

    def _when(self, key: str, etag: str) -> str:
        return self._stamp(self.versions.get((key, etag)))

    @staticmethod
    def _stamp(moment: datetime | None) -> str:
        return "at an unknown time" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"
