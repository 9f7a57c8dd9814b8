"""The state of one error report's task (`Report`) and the bounds of the report's window.

Every part of the task reads or fills the report's state: the objects it found, the rows it
counted, why it fell short. Apart from the orchestration (`error_reports`) so the row
selection, the version checks and the outcome can share it without importing the task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from remediation.reported import ReportScope, Sampled
from remediation.validation import MeterIndex
from service.config import PollerMode
from service.jobs.run_context import RunContext
from service.poller.store import FirstVersion, object_times

# Objects whose rows a report may be about: first seen up to a day before the report's window
# (Stripe imports and validates later) and up to an hour after it (in index mode meterfix may
# list an object after Stripe's connector took it).
WINDOW_BEFORE = timedelta(days=1)
WINDOW_AFTER = timedelta(hours=1)
# An object found by that search holds no sampled row, and the poller sends an object's rows
# batch by batch: Stripe may have taken such rows at another time than the report's. The
# latest it took them: a day after the search's window (its connector or queue may come to an
# object it listed late), or a day after the poller's first send of the object (it sends
# nothing past 23 h). A timestamp of them counts as in the future only past that (so, whenever
# Stripe took the row, it refused it: milliseconds always are), never one it billed. Bounds
# from the report and the database only: a task retried later selects the same rows.
TAKEN_LATEST_MARGIN = timedelta(days=1)


@dataclass
class Report:
    event_id: str
    scope: ReportScope
    expected: int  # errors the report counted
    event_names: set[str]
    now: int  # the end of the report's window: every row it counts was taken by then
    start: int | None  # its start: every row it counts was taken since
    index: MeterIndex
    long_before: TakenLongBefore  # versions Stripe's connector took long before the window
    customers: set[str] = field(default_factory=set)
    sampled: dict[str, Sampled] = field(default_factory=dict)  # key -> what its samples say
    changed: list[str] = field(default_factory=list)  # objects overwritten since Stripe took them
    gone: list[str] = field(default_factory=list)  # objects deleted since Stripe took them
    # key -> why the version there now cannot be read (written again empty, no usage file)
    unreadable: dict[str, str] = field(default_factory=dict)
    # of `changed`: overwritten by a version the poller had not recorded yet (it may hold the
    # rows: the report is taken up again when the poller records it)
    unrecorded: list[str] = field(default_factory=list)
    # key -> its sampled rows that are not the rows Stripe refused (`ReportScope.changed`)
    altered: dict[str, dict[str, bool]] = field(default_factory=dict)
    # key -> those of them first held by a version uploaded long before the report (`SentSince`)
    earlier: dict[str, set[str]] = field(default_factory=dict)
    resent: int = 0  # changed rows sent as they are now
    left: int = 0  # rows left to Stripe's connector (taken again from a later version)
    billed: int = 0  # rows left out: taken from a version long before the report's window
    # a sampled identifier rows of several linked objects hold (`ReportScope.shared`) -> the
    # objects holding a row of it Stripe took (`reported.taken_under`), in key order
    took: dict[str, list[str]] = field(default_factory=dict)
    # such an identifier -> the first row selected under it, and its object (`Selection.first`),
    # or, noted before the runs, the first another run corrected or quarantined, or the first
    # Stripe refused for a problem the report does not count, no run handled yet
    first: dict[str, tuple[str, int]] = field(default_factory=dict)
    # of `first`: those whose first row another run handled (`Selection.handled_first`)
    handled_first: set[str] = field(default_factory=set)
    # of `first`: those whose first row its own run is yet to handle (`Selection.refused_first`)
    refused_first: set[str] = field(default_factory=set)
    # every object the report may run over (linked or found around its window): an object
    # sharing its folder and stem with another gets a folder of its own (`object_tag`)
    objects: set[str] = field(default_factory=set)


class TakenLongBefore:
    """Whether Stripe's connector took an object version (index mode: it takes one at once,
    when it is uploaded) more than `WINDOW_BEFORE` before the report's window: the report is
    not about that version's rows (no more than about an object first seen then,
    `other_objects`), but about a later version holding them again, past Stripe's dedupe; the
    connector took the rows from the first version then (billed, or refused and reported
    then). Never for rows the bundled poller sent (import mode: it sends a row once)."""

    def __init__(self, ctx: RunContext, window: int) -> None:
        """`window`: when the report's window starts (or ends, when it has no start)."""
        self.engine = ctx.engine
        self.connector = ctx.settings.mfx_poller != PollerMode.ON
        self.before = window - int(WINDOW_BEFORE.total_seconds())
        self.uploaded: dict[tuple[str, str], int | None] = {}  # version -> when

    def __call__(self, first: FirstVersion) -> bool:
        if not self.connector or first.sent:
            return False
        if first.version not in self.uploaded:
            times = object_times(self.engine, first.key, first.etag)
            self.uploaded[first.version] = seconds(times.uploaded) if times else None
        uploaded = self.uploaded[first.version]
        return uploaded is not None and uploaded < self.before


def seconds(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())
