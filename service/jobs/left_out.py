"""What an import-set task's run leaves out of its file (`LeftOut`): the rows a later version of
the object took, another version took before (or, for a file the bundled poller failed whole,
sent since), or another run over the object handled; and what the task's outcome says of them.
Apart from the tasks that run the files (`remediation.import_set_errors`, `import_set_failed`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from remediation.ports import LeavesOut
from service.jobs.file_runs import SourceRows
from service.jobs.inputs import JobDeps
from service.jobs.later_rows import TakenAgain
from service.jobs.object_runs import HandledElsewhere, RefusedAgain, object_sources
from service.jobs.object_versions import TakenBefore, version_label
from service.jobs.store.lineage import runs_correcting
from service.jobs.store.reports import POLLER_ORIGIN
from service.logs import log_event
from service.models import ImportSet


@dataclass(frozen=True)
class LeftOut:
    """The rows a run over an import set's file leaves out, and what it says of them."""

    rows: TakenAgain
    # rows another version of the object took (billed then), or, in a file the poller failed
    # whole, rows a version of some object sent since
    before: TakenBefore | SourceRows
    elsewhere: HandledElsewhere

    def none_left(self) -> bool:
        """Rows were left out: a run left with none is no failure (`run_file`'s `allow_none`)."""
        return self.count() > 0

    def count(self) -> int:
        """How many rows of the file were left out (once its run has read it)."""
        before = self.before
        counted = before.sent if isinstance(before, SourceRows) else before.left
        return self.rows.left + counted + self.elsewhere.left

    def leave_out(self) -> tuple[LeavesOut, ...]:
        return (self.rows, self.before, self.elsewhere)

    def outcome(self, run_key: str, source: str | None) -> str:
        """What the task's outcome says of the rows left out (rows sent since are logged)."""
        before = self.before
        said = (
            rows_sent_since(before.sent, run_key, source, "before")
            if isinstance(before, SourceRows)
            else before.outcome()
        )
        return self.rows.outcome() + self.elsewhere.outcome() + said


def left_out(
    deps: JobDeps,
    import_set: ImportSet,
    later: Path | None,
    path: Path,
    tmp: Path,
    run_key: str,
    whole_file: bool = False,
) -> LeftOut:
    """Who took or handled the rows of an import set's file before: a later version, another
    version of the object (or, in a file the poller failed whole, `whole_file`, the poller's
    sends), another run over the object (an error report's or another import set's)."""
    rows = TakenAgain(deps, import_set, later)
    key = import_set.source_object
    before: TakenBefore | SourceRows
    if not whole_file or import_set.origin != POLLER_ORIGIN:
        # rows another version of the object took (billed then)
        before = TakenBefore(deps, import_set, path, tmp / "taken", run_key)
    else:
        # a file the bundled poller failed whole: it never sends a row another version
        # of some object sent (the day's file rewritten with the rows so far) unless a
        # run over the object quarantined it since (Stripe refused that send); one
        # Stripe's connector failed: not a row it took from another version
        before = SourceRows(deps.run.engine, None)
        sources = object_sources(deps.run.engine, deps.run.bucket, key)
        before.refused_by = runs_correcting(deps.run.engine, sources)
    # rows another run over the object corrected or quarantined (one it quarantined is
    # refused again: Stripe refused the whole file, or the rows of its failed-records file)
    refused = RefusedAgain(rows.since, version_label(import_set, "refused again"))
    elsewhere = HandledElsewhere(deps.run.engine, deps.run.bucket, key, run_key, refused)
    return LeftOut(rows, before, elsewhere)


def rows_sent_since(count: int, run_key: str, key: str | None, when: str) -> str:
    """What an outcome says of `count` rows left out because a version of the file sent them
    (`when`: "before" or "since" the run's file), logged as a warning; "" for none."""
    if not count:
        return ""
    log_event(
        "remediation.rows_sent_since", level=logging.WARNING, run_key=run_key, rows=count, key=key
    )
    # a row of the same identifier in this very file counts too (a duplicate the poller
    # sent once): "from another version" was said of those as well; not a refused row
    # under the identifier of one its version sent (`file_runs.SourceRows`: quarantined)
    return f"; {count} left out: sent {when} from the file (this version or another)"
