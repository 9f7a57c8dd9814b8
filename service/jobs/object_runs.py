"""The runs over the rows of one bucket object, whichever way Stripe named them.

Stripe's S3 connector may name one refused row twice: in an import set's failed-records file
(a format problem) and in a meter error report about other rows of the object (a data problem
our validation finds first). The report's run has the object's key for source; the import
set's run has the failed-records file (the import set's `source_object` names the key). Each
run leaves out the rows any other run over the object corrected or quarantined: both would
write `<id>-mfx<n>`, and two corrected objects imported more than a day apart bill the row
twice (Stripe dedupes identifiers for 24 hours only); its quarantine would be doubled too.

An import set that names no object is linked to none: its rows are matched with no other
run's (by identifier alone, a row of another object that reuses the identifier a day later,
as Stripe allows, would be left out and never billed).

A row a run over the object quarantined that a later import set's failed records name again
(or a later version that failed whole holds) is a new refusal (`HandledElsewhere`,
`refused`). Neither run sends a row another version of the object took
(`object_versions.TakenBefore`). Which runs came earlier is told by the time their rows were
quarantined, and for the runs of import sets and error reports by Stripe's own times
(`runs_refused_before`): a worker's backlog may run an earlier import set's run after the
later import set's event, and a late-delivered older import set is no later one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Engine

from remediation.ports import Bucket
from service.db import is_postgres
from service.db.locks import HeldLock, session_lock
from service.jobs.inputs import event_time
from service.jobs.store import reports
from service.jobs.store.lineage import handled_among, runs_correcting, runs_of_sources
from service.jobs.store.runs import import_set_of, report_of, run_keys
from service.jobs.store.taken_again import mark_refused_again, marked_among
from service.logs import log_event
from service.notify.runs import RunAlertsToSettle

# "mfx_rept": the seed of the lock the runs over one object take turns by
OBJECT_RUN_LOCK_KEY = 0x6D66785F72657074


@contextmanager
def one_run_an_object(
    engine: Engine,
    prefix: str,
    key: str | None,
    waiting_turn: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> Iterator[HeldLock]:
    """The runs over one object (its error reports', its import sets') take turns: each reads
    which rows another run over it handled, then writes its own. Two reports about the same
    rows taken by two workers at once both read none handled and both corrected every row: two
    corrected objects of the same `<id>-mfx1` rows, which Stripe's connector bills twice when
    it imports them a day apart. PostgreSQL: an advisory lock of the object's name without
    the bucket's `prefix` (an import set names it so, a report's run by its key: two names,
    two locks, no turns), waited for. SQLite: one lock for every such run (a file beside the
    database, not one an object). The wait is not the item's time (`waiting_turn`). Yields
    the lock: the run is done under it (`RunContext.holding`), so a run whose lock was lost
    while it worked (PostgreSQL let it go with its dropped connection, and another run over
    the object may have taken it) uploads and commits nothing (`LockLost`: retried)."""
    name = key or ""
    if prefix and name.startswith(prefix):
        name = name[len(prefix) :]
    with ExitStack() as held:
        with waiting_turn():
            lock = session_lock(
                engine, OBJECT_RUN_LOCK_KEY, name if is_postgres(engine) else "", wait=True
            )
            taken = held.enter_context(lock)
        yield taken


def object_sources(engine: Engine, bucket: Bucket, key: str | None) -> list[str]:
    """The sources of the runs over the rows of the object `key`: its names, and the
    failed-records files (and copies of files that failed whole) of the import sets that
    name it (`reports.object_sources`)."""
    return reports.object_sources(engine, bucket.prefix, key)


class LeftOut:
    """Rows a run leaves out: those whose identifier `excluded` names (`left`: how many),
    asked a chunk of a batch's identifiers at a time (`remediation.ports.LeavesOut`)."""

    left = 0

    def excluded(self, identifiers: set[str]) -> set[str]:
        raise NotImplementedError

    def said(self, event: str, what: str, **fields: object) -> str:
        """`; <left> <what>` for a task's outcome, logged as `event` (nothing when none)."""
        if not self.left:
            return ""
        log_event(event, level=logging.WARNING, rows=self.left, **fields)
        return f"; {self.left} {what}"

    def count_left(self, rows: int) -> None:
        self.left += rows


def runs_refused_before(engine: Engine, run_ids: list[int], moment: datetime) -> set[int]:
    """Those of these runs that took rows Stripe refused before `moment` (an import set's
    event), so from an earlier version of the object: the runs of an import set (its failed
    records, or its failed file) whose event came before, and of an error report whose window
    ended before (whole seconds: one of the same second is not taken for earlier)."""
    before = int(moment.timestamp())
    return {r for r, when in refusal_moments(engine, run_ids).items() if when < before}


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


class RefusedAgain(NamedTuple):
    """Stripe refused the rows again at `at`, from the object version `version` (a label)."""

    at: datetime
    version: str


class HandledElsewhere(LeftOut):
    """The rows without those another run over the same object corrected or quarantined
    (`left`: how many), looked up a batch at a time (no query at all when no other run took
    rows of the object: the common case).

    `refused`: the rows are Stripe's refusals of a version of the object (an import set's
    failed records). A row a run over the object quarantined before then, which Stripe now
    refused again, was taken again by the connector (it takes every version whole): a new
    refusal, not one handled. It is marked taken again (`again`: how many), as the poller does
    when it indexes the version (which, with MFX_POLLER=off or before it got to the version,
    it had not: the row was left out as handled, held with the old version's content, and the
    quarantine re-run then left it as billed since: never billed)."""

    def __init__(
        self,
        engine: Engine,
        bucket: Bucket,
        key: str | None,
        run_key: str,
        refused: RefusedAgain | None = None,
    ) -> None:
        self.engine, self.key, self.refused, self.again = engine, key, refused, 0
        self.settling = RunAlertsToSettle()  # the runs whose rows `excluded` marks
        sources = object_sources(engine, bucket, key)
        self.runs = runs_of_sources(engine, sources, run_key)
        # the re-runs that took their quarantined rows too (quarantined again there)
        self.chain = runs_correcting(engine, sources) if self.runs and refused else []
        self.earlier = set()
        if self.chain and refused is not None:
            self.earlier = runs_refused_before(engine, self.runs, refused.at)

    def excluded(self, identifiers: set[str]) -> set[str]:
        if not self.runs:  # no other run took rows of the object: nothing to look up
            return set()
        listed = sorted(identifiers)
        again: set[str] = set()
        if self.refused is not None and self.chain:
            at, version = self.refused
            note = self.settling.note  # their runs' alerts told once the run read the file
            mark_refused_again(self.engine, self.chain, listed, version, at, self.earlier, note)
            # counted by what is marked, not by what this try marked: a task retried after
            # a crash (its first try marked them) says the same
            again = marked_among(self.engine, self.chain, listed)
        excluded = handled_among(self.engine, self.runs, listed)
        self.again += len(again - excluded)
        return excluded

    def outcome(self) -> str:
        """What the task says of the rows (the run has read them all); first the alerts of
        the runs whose rows `excluded` marked are told, once (not once a chunk)."""
        self.settling.settle(self.engine)
        again = (
            f"; {self.again} quarantined before refused again (marked taken again): "
            "remediated from this version"
            if self.again
            else ""
        )
        what = f"left out: another run over {self.key} corrected or quarantined them"
        return again + self.said("remediation.rows_handled_elsewhere", what, key=self.key)


__all__ = [
    "HandledElsewhere",
    "LeftOut",
    "RefusedAgain",
    "object_sources",
    "refusal_moments",
    "runs_refused_before",
]
