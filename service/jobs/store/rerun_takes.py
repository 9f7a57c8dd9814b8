"""What became of the rows a run quarantined: the mark on the rows a re-run took, and, for
run alerts and the lineage API, how many wait, which re-runs took them and how many were taken
again elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from typing import NamedTuple

from sqlalchemy import Connection, and_, case, func, select, update

from service.jobs.store.quarantine import ID_BATCH, QUARANTINE, quarantine_conditions
from service.jobs.store.quarantine_filter import QuarantineFilter


def mark_rerun_in(connection: Connection, ids: Sequence[int], run_id: int) -> None:
    """The rows with these ids were taken by the re-run `run_id`, in the caller's transaction
    (the one that records the run done, or a later one, the re-run's lock held still)."""
    chunks = iter(ids)
    while chunk := list(islice(chunks, ID_BATCH)):
        connection.execute(
            update(QUARANTINE).where(QUARANTINE.c.id.in_(chunk)).values(rerun_id=run_id)
        )


class RunTakes(NamedTuple):
    """What became of the rows a run quarantined (those still kept): how many there are,
    how many wait (the quarantine page's `taken_again=no`: neither taken by a re-run nor
    marked taken again), the re-runs that took some (run id, rows; oldest run first) and how
    many were taken again elsewhere (marked `taken_again`, no re-run took them)."""

    quarantined: int
    waiting: int
    reruns: list[tuple[int, int]]
    elsewhere: int

    @property
    def taken(self) -> int:
        return self.quarantined - self.waiting


# The rows waiting for a fix: the quarantine page's `taken_again=no` (service.notify.content's
# WAITING), whose conditions without `run=` leave out the rows a re-run took.
WAITING = and_(*quarantine_conditions(QuarantineFilter(taken_again=False)))


def run_takes(connection: Connection, run_id: int) -> RunTakes:
    """`RunTakes` of the run `run_id`: one query by the run index, grouped by re-run (a run's
    rows are taken by a few re-runs at most)."""
    waiting = func.sum(case((WAITING, 1), else_=0)).label("waiting")
    query = (
        select(
            QUARANTINE.c.rerun_id,
            func.count().label("rows"),
            func.count(QUARANTINE.c.taken_again).label("marked"),
            waiting,
        )
        .where(QUARANTINE.c.run_id == run_id)
        .group_by(QUARANTINE.c.rerun_id)
    )
    total = held = elsewhere = 0
    reruns: list[tuple[int, int]] = []
    for row in connection.execute(query):
        total += int(row.rows)
        held += int(row.waiting or 0)
        if row.rerun_id is None:
            elsewhere += int(row.marked)
        else:
            reruns.append((int(row.rerun_id), int(row.rows)))
    return RunTakes(total, held, sorted(reruns), elsewhere)


def runs_of_rows(connection: Connection, ids: Sequence[int]) -> list[int]:
    """The runs that quarantined the rows with these ids."""
    found: set[int] = set()
    chunks = iter(ids)
    while chunk := list(islice(chunks, ID_BATCH)):
        query = select(QUARANTINE.c.run_id).where(QUARANTINE.c.id.in_(chunk)).distinct()
        found.update(int(row.run_id) for row in connection.execute(query))
    return sorted(found)
